"""The one error tree of polymodal.

Every exception the library raises on purpose is a :class:`PolymodalError`. Foreign exceptions (SDKs, httpx,
decoders) are translated into this tree in exactly one place per backend or loader, so callers only ever need
``except PolymodalError``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class PolymodalError(Exception):
    """Base class of every error polymodal raises on purpose."""


class ConfigError(PolymodalError):
    """A setting is missing or wrong; the user can fix it. ``hint`` says how."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message if hint is None else f"{message} (hint: {hint})")
        self.hint = hint


class InputError(PolymodalError):
    """Bad, unreadable or oversized input media. Names the source and, where one applies, the limit."""

    def __init__(self, source: str, reason: str, *, limit: str | None = None) -> None:
        text = f"{source}: {reason}"
        if limit:
            text += f" (limit: {limit})"
        super().__init__(text)
        self.source = source
        self.reason = reason
        self.limit = limit


class ErrorCategory(StrEnum):
    """Why a backend call failed; decides whether a retry can help."""

    AUTH = "auth"
    PERMISSION = "permission"
    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    CONTEXT_LENGTH = "context_length"
    RATE_LIMIT = "rate_limit"
    QUOTA = "quota"
    OVERLOADED = "overloaded"
    SERVER = "server"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    CONTENT_FILTER = "content_filter"
    MALFORMED_RESPONSE = "malformed_response"
    UNAVAILABLE = "unavailable"


#: Categories where the same request can succeed later.
TRANSIENT_CATEGORIES = frozenset(
    {
        ErrorCategory.RATE_LIMIT,
        ErrorCategory.OVERLOADED,
        ErrorCategory.SERVER,
        ErrorCategory.TIMEOUT,
        ErrorCategory.CONNECTION,
        ErrorCategory.MALFORMED_RESPONSE,
    }
)


class BackendError(PolymodalError):
    """A model call failed. ``category`` decides retrying; ``is_permanent`` errors are never retried."""

    def __init__(
        self,
        message: str,
        *,
        category: ErrorCategory,
        provider: str,
        model: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        where = f"{provider}:{model}" if model else provider
        status_text = f" [HTTP {status}]" if status is not None else ""
        super().__init__(f"{where}: {category.value}{status_text}: {message}")
        self.message = message
        self.category = category
        self.provider = provider
        self.model = model
        self.status = status
        self.retry_after = retry_after

    @property
    def is_permanent(self) -> bool:
        """True when repeating the same request cannot help (auth, invalid request, a spend limit...)."""
        return self.category not in TRANSIENT_CATEGORIES


class ExtractionRejected(PolymodalError):
    """The model's output still failed validation after every re-ask."""

    def __init__(self, source: str, *, attempts: int, errors: list[str], usage: Any = None) -> None:
        super().__init__(f"{source}: rejected after {attempts} attempt(s): " + "; ".join(errors[:5]))
        self.source = source
        self.attempts = attempts
        self.errors = errors
        self.usage = usage


class IndexError_(PolymodalError):
    """An index operation failed (wrong embedder, wrong dimension, corrupt or locked index...)."""


class StoreError(IndexError_):
    """Persistent storage (manifest, cache, index files) could not be read or written."""


__all__ = [
    "TRANSIENT_CATEGORIES",
    "BackendError",
    "ConfigError",
    "ErrorCategory",
    "ExtractionRejected",
    "IndexError_",
    "InputError",
    "PolymodalError",
    "StoreError",
]
