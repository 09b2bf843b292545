"""Shared HTTP pieces for remote backends: status -> :class:`ErrorCategory`, Retry-After parsing, httpx
exception translation, and small stream readers (SSE, NDJSON).

Adapters keep exactly one ``_translate(exc) -> BackendError`` each; they call the helpers here so that every
provider classifies a 429, a 503 or a timeout the same way. Nothing here retries: that is ``_retry.py``'s job.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar

import certifi
import httpx

from polymodal.errors import BackendError, ErrorCategory

#: Error codes/types that mean "a spend limit or billing problem": retrying cannot help until a human acts.
QUOTA_CODES = frozenset(
    {
        "insufficient_quota",  # OpenAI: out of credits / monthly budget
        "billing_hard_limit_reached",
        "billing_not_active",
        "enforced_spend_limit_reached",  # Anthropic
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
    }
)

#: Phrases servers use when the prompt does not fit the model's context window.
_CONTEXT_PHRASES = (
    "context length",
    "context_length",
    "context window",
    "maximum context",
    "too many tokens",
    "prompt is too long",
    "input is too long",
    "exceeds the maximum number of tokens",
)

_STATUS_CATEGORY: dict[int, ErrorCategory] = {
    400: ErrorCategory.INVALID_REQUEST,
    401: ErrorCategory.AUTH,
    402: ErrorCategory.QUOTA,
    403: ErrorCategory.PERMISSION,
    404: ErrorCategory.NOT_FOUND,
    408: ErrorCategory.TIMEOUT,
    409: ErrorCategory.SERVER,
    413: ErrorCategory.CONTEXT_LENGTH,
    422: ErrorCategory.INVALID_REQUEST,
    429: ErrorCategory.RATE_LIMIT,
    500: ErrorCategory.SERVER,
    502: ErrorCategory.SERVER,
    503: ErrorCategory.OVERLOADED,
    504: ErrorCategory.SERVER,
    529: ErrorCategory.OVERLOADED,
}

#: Longest error text kept in a BackendError message.
_MAX_MESSAGE = 500


def error_codes(body: object) -> set[str]:
    """Machine-readable codes found in a provider error body (``error.code``, ``error.type``,
    ``error.status``, ``error.details.error_code``, Google ``details[].reason``), lower-cased."""
    codes: set[str] = set()
    if not isinstance(body, Mapping):
        return codes
    # SDKs hand over either the whole body or (openai) its inner "error" object.
    inner = body.get("error")
    for error in (body, inner) if isinstance(inner, Mapping) else (body,):
        for key in ("code", "type", "status"):
            value = error.get(key)
            if isinstance(value, str):
                codes.add(value.lower())
        details = error.get("details")
        detail_items = details if isinstance(details, list) else [details]
        for item in detail_items:
            if isinstance(item, Mapping):
                for key in ("error_code", "reason"):
                    value = item.get(key)
                    if isinstance(value, str):
                        codes.add(value.lower())
    return codes


def error_message(body: object, fallback: str = "") -> str:
    """The human-readable message of an error body (``error.message``, ``error`` or ``message``)."""
    text: object = None
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            text = error.get("message")
        elif isinstance(error, str):
            text = error
        if text is None:
            text = body.get("message") or body.get("detail")
    elif isinstance(body, str | bytes):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message = str(text).strip() if text else fallback
    return message[:_MAX_MESSAGE]


def category_for_status(status: int, body: object = None, message: str = "") -> ErrorCategory:
    """Classify an HTTP error status, refined by the body's codes and message.

    A 429 is a RATE_LIMIT (retry later) unless its code names a spend limit, which is QUOTA (permanent);
    any status whose message says the prompt exceeds the context window is CONTEXT_LENGTH.
    """
    codes = error_codes(body)
    text = (message or error_message(body)).lower()
    if codes & QUOTA_CODES:
        return ErrorCategory.QUOTA
    if status in (400, 413, 422) and any(phrase in text for phrase in _CONTEXT_PHRASES):
        return ErrorCategory.CONTEXT_LENGTH
    if status in _STATUS_CATEGORY:
        return _STATUS_CATEGORY[status]
    if status >= 500:
        return ErrorCategory.SERVER
    return ErrorCategory.INVALID_REQUEST


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait according to ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP-date).

    Returns None when absent or unparseable; never negative. ``now`` (epoch seconds) is for tests.
    """
    if not headers:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def status_error(
    provider: str,
    model: str,
    status: int,
    *,
    headers: Mapping[str, str] | None = None,
    body: object = None,
) -> BackendError:
    """A BackendError for an HTTP error response (category, message and Retry-After filled in)."""
    message = error_message(body, fallback=f"HTTP {status}")
    return BackendError(
        message,
        category=category_for_status(status, body, message),
        provider=provider,
        model=model,
        status=status,
        retry_after=parse_retry_after(headers),
    )


def parse_json_body(raw: bytes | str) -> object:
    """Decode an error body as JSON when it is JSON, else return the text."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        return json.loads(text)
    except ValueError:
        return text


def malformed(provider: str, model: str, detail: str) -> BackendError:
    """A MALFORMED_RESPONSE error (a server answered with something that is not its documented format)."""
    return BackendError(
        f"malformed response: {detail}"[:_MAX_MESSAGE],
        category=ErrorCategory.MALFORMED_RESPONSE,
        provider=provider,
        model=model,
    )


def transport_error(provider: str, model: str, exc: httpx.TransportError) -> BackendError:
    """Translate an httpx transport failure: timeouts -> TIMEOUT, everything else -> CONNECTION."""
    category = ErrorCategory.TIMEOUT if isinstance(exc, httpx.TimeoutException) else ErrorCategory.CONNECTION
    detail = str(exc) or type(exc).__name__
    return BackendError(detail[:_MAX_MESSAGE], category=category, provider=provider, model=model)


async def raise_for_status(response: httpx.Response, provider: str, model: str) -> None:
    """Raise the translated BackendError when ``response`` is an HTTP error (reads the body first)."""
    if response.status_code < 400:
        return
    raw = await response.aread()
    raise status_error(
        provider, model, response.status_code, headers=response.headers, body=parse_json_body(raw)
    )


def decode_json(raw: bytes | str, provider: str, model: str) -> Any:
    """Parse a response body as JSON; a decoding failure is MALFORMED_RESPONSE."""
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise malformed(provider, model, f"invalid JSON ({exc})") from exc


async def iter_sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data:`` payloads of a server-sent-events response, one per event (multi-line data joined)."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    if lines:
        yield "\n".join(lines)


async def iter_ndjson(response: httpx.Response, provider: str, model: str) -> AsyncIterator[Any]:
    """Each non-empty line of a newline-delimited JSON response, decoded (bad lines: MALFORMED_RESPONSE)."""
    async for line in response.aiter_lines():
        if line.strip():
            yield decode_json(line, provider, model)


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """One TLS context (certifi's CA bundle) shared by every client: loading the bundle costs ~50-250 ms,
    which would otherwise be paid by each new model."""
    return ssl.create_default_context(cafile=certifi.where())


def async_client(
    timeout: float, base_url: str = "", headers: Mapping[str, str] | None = None
) -> httpx.AsyncClient:
    """An httpx client for one backend: the request timeout applies to connect, read, write and pool."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout),
        headers=dict(headers or {}),
        verify=ssl_context(),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
    )


C = TypeVar("C")


class LoopBound(Generic[C]):
    """One client per event loop, built on first use in each loop.

    HTTP connection pools belong to the loop that opened them; ``generate_sync`` runs each call in a fresh
    loop, so a client kept from an earlier loop would fail with "Event loop is closed".
    """

    def __init__(self, factory: Callable[[], C]) -> None:
        self._factory = factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: C | None = None

    def get(self) -> C:
        """The client for the running loop."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = self._factory(), loop
        return self._client

    def current(self) -> C | None:
        """The client built last, if any (for closing)."""
        return self._client


__all__ = [
    "QUOTA_CODES",
    "LoopBound",
    "async_client",
    "category_for_status",
    "decode_json",
    "error_codes",
    "error_message",
    "iter_ndjson",
    "iter_sse_data",
    "malformed",
    "parse_json_body",
    "parse_retry_after",
    "raise_for_status",
    "ssl_context",
    "status_error",
    "transport_error",
]
