"""Backend protocols and the value types they exchange.

A chat backend implements two coroutines, :meth:`BaseChatModel._generate` and :meth:`BaseChatModel._stream`,
raising only :class:`~polymodal.errors.BackendError` (translated in its own module). The base class wraps them
in the single retry layer and gives sync wrappers. What a backend can do is data (:class:`Capabilities`), not
if/else at call sites.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from polymodal.backends._retry import RetryPolicy, call_with_retries, stream_with_retries
from polymodal.backends.messages import Message

FinishReason = Literal["stop", "length", "content_filter", "tool_use", "unknown"]
StructuredMode = Literal["json_schema", "json_object", "tool", "grammar", "prompt"]


@dataclass(frozen=True)
class Usage:
    """Tokens a call consumed."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Completion:
    """A finished model answer."""

    text: str
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    model: str = ""

    @property
    def truncated(self) -> bool:
        """True when the output was cut by the token limit."""
        return self.finish_reason == "length"


@dataclass(frozen=True)
class Delta:
    """One streamed piece of an answer; the last one carries ``finish_reason`` and usage when known."""

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class GenerateOptions:
    """Per-call generation settings."""

    max_tokens: int = 4096
    temperature: float = 0.0
    seed: int | None = None


@dataclass(frozen=True)
class OutputSchema:
    """A JSON schema the answer must satisfy, with the name providers want for it."""

    name: str
    json_schema: dict[str, Any]
    description: str = ""

    @classmethod
    def from_model(cls, model: type[BaseModel]) -> OutputSchema:
        """Build from a Pydantic model class."""
        doc = (model.__doc__ or "").strip()
        return cls(name=model.__name__, json_schema=model.model_json_schema(), description=doc)

    @classmethod
    def coerce(cls, schema: OutputSchema | type[BaseModel] | dict[str, Any]) -> OutputSchema:
        """Accept a model class, a raw JSON schema dict or an OutputSchema."""
        if isinstance(schema, OutputSchema):
            return schema
        if isinstance(schema, dict):
            return cls(name=str(schema.get("title", "Output")), json_schema=schema)
        return cls.from_model(schema)

    def dumps(self) -> str:
        """The schema as compact JSON text (for prompts)."""
        return json.dumps(self.json_schema, separators=(",", ":"))


@dataclass(frozen=True)
class Capabilities:
    """What a model endpoint accepts and how it enforces structured output."""

    images: bool = True
    max_images: int | None = None
    max_image_pixels: int | None = None
    structured: StructuredMode = "json_schema"
    streaming: bool = True
    video: bool = False
    audio: bool = False
    context_tokens: int | None = None


@runtime_checkable
class ChatModel(Protocol):
    """Anything that answers chat messages, optionally constrained to a JSON schema."""

    provider: str
    model: str
    capabilities: Capabilities

    async def generate(
        self,
        messages: Sequence[Message],
        schema: OutputSchema | type[BaseModel] | dict[str, Any] | None = None,
        options: GenerateOptions | None = None,
    ) -> Completion:
        """Answer the conversation; with ``schema`` the answer is JSON meant to satisfy it."""
        ...

    def stream(
        self, messages: Sequence[Message], options: GenerateOptions | None = None
    ) -> AsyncIterator[Delta]:
        """Answer the conversation piece by piece."""
        ...


class BaseChatModel(ABC):
    """Base class for adapters: one retry layer around ``_generate``/``_stream`` plus sync wrappers."""

    provider: str = ""
    capabilities: Capabilities = Capabilities()

    def __init__(self, model: str, *, retry: RetryPolicy | None = None) -> None:
        self.model = model
        self.retry = retry or RetryPolicy()

    @property
    def id(self) -> str:
        """The ``provider:model`` id of this backend."""
        return f"{self.provider}:{self.model}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"

    @abstractmethod
    async def _generate(
        self, messages: Sequence[Message], schema: OutputSchema | None, options: GenerateOptions
    ) -> Completion:
        """One attempt at a completion. Raise only BackendError."""

    @abstractmethod
    def _stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncIterator[Delta]:
        """One attempt at a streamed completion. Raise only BackendError."""

    async def generate(
        self,
        messages: Sequence[Message],
        schema: OutputSchema | type[BaseModel] | dict[str, Any] | None = None,
        options: GenerateOptions | None = None,
    ) -> Completion:
        """Answer the conversation, retrying transient failures per :class:`RetryPolicy`."""
        out_schema = OutputSchema.coerce(schema) if schema is not None else None
        opts = options or GenerateOptions()
        return await call_with_retries(lambda: self._generate(messages, out_schema, opts), self.retry)

    def stream(
        self, messages: Sequence[Message], options: GenerateOptions | None = None
    ) -> AsyncIterator[Delta]:
        """Stream the answer; a failure before the first piece is retried, later ones are raised."""
        opts = options or GenerateOptions()
        return stream_with_retries(lambda: self._stream(messages, opts), self.retry)

    def generate_sync(
        self,
        messages: Sequence[Message],
        schema: OutputSchema | type[BaseModel] | dict[str, Any] | None = None,
        options: GenerateOptions | None = None,
    ) -> Completion:
        """Blocking :meth:`generate` for scripts and notebooks without an event loop."""
        return asyncio.run(self.generate(messages, schema, options))

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections or models; adapters override when they hold any."""


__all__ = [
    "BaseChatModel",
    "Capabilities",
    "ChatModel",
    "Completion",
    "Delta",
    "FinishReason",
    "GenerateOptions",
    "OutputSchema",
    "StructuredMode",
    "Usage",
]
