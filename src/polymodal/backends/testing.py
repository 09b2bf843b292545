"""Fakes shipped with the library, for users' own tests (and ours): no network, fully scripted.

Example::

    from polymodal.backends.testing import FakeChatModel
    fake = FakeChatModel(['{"total": "oops"}', '{"total": 12.5}'])
    result = await aextract("receipt.png", Receipt, model=fake)  # 1st answer fails validation, 2nd passes
    assert len(fake.calls) == 2
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from polymodal.backends.base import (
    BaseChatModel,
    Capabilities,
    Completion,
    Delta,
    GenerateOptions,
    OutputSchema,
    Usage,
)
from polymodal.backends.messages import Message
from polymodal.errors import BackendError, ErrorCategory

if TYPE_CHECKING:
    from polymodal.backends.registry import ModelSpec
    from polymodal.config import Settings

#: A scripted reply: text, a JSON-able object, an exception to raise, or a function of the call.
Reply = str | dict[str, Any] | list[Any] | BaseException | Callable[["FakeCall"], "str | Completion"]


@dataclass(frozen=True)
class FakeCall:
    """What one call to the fake received."""

    messages: tuple[Message, ...]
    schema: OutputSchema | None
    options: GenerateOptions


class FakeChatModel(BaseChatModel):
    """A chat model that answers from a script and records every call.

    ``latency`` (seconds) is awaited before each answer and ``token_delay`` between streamed words, so
    pipelines' concurrency and streaming can be tested; ``default`` answers once the script runs out.
    """

    provider = "fake"

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        default: Reply | None = None,
        latency: float = 0.0,
        token_delay: float = 0.0,
        capabilities: Capabilities | None = None,
        model: str = "scripted",
    ) -> None:
        super().__init__(model)
        self.replies: deque[Reply] = deque(replies)
        self.default = default
        self.latency = latency
        self.token_delay = token_delay
        self.capabilities = capabilities or Capabilities(structured="json_schema")
        self.calls: list[FakeCall] = []

    def queue(self, *replies: Reply) -> None:
        """Append replies to the script."""
        self.replies.extend(replies)

    def _next(self, call: FakeCall) -> Completion:
        self.calls.append(call)
        if self.replies:
            reply = self.replies.popleft()
        elif self.default is not None:
            reply = self.default
        else:
            raise BackendError(
                "the fake's script is exhausted", category=ErrorCategory.INVALID_REQUEST, provider="fake"
            )
        if isinstance(reply, BaseException):
            raise reply
        answer = reply(call) if callable(reply) else reply
        if isinstance(answer, Completion):
            return answer
        text = answer if isinstance(answer, str) else json.dumps(answer)
        usage = Usage(sum(len(m.text.split()) + 85 * len(m.images) for m in call.messages), len(text.split()))
        return Completion(text=text, finish_reason="stop", usage=usage, model=self.model)

    async def _generate(
        self, messages: Sequence[Message], schema: OutputSchema | None, options: GenerateOptions
    ) -> Completion:
        if self.latency:
            await asyncio.sleep(self.latency)
        return self._next(FakeCall(tuple(messages), schema, options))

    async def _stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncIterator[Delta]:
        if self.latency:
            await asyncio.sleep(self.latency)
        completion = self._next(FakeCall(tuple(messages), None, options))
        words = completion.text.split(" ")
        for i, word in enumerate(words):
            if i and self.token_delay:
                await asyncio.sleep(self.token_delay)
            yield Delta(text=word if i == 0 else " " + word)
        yield Delta(finish_reason=completion.finish_reason, usage=completion.usage)


def create(spec: ModelSpec, settings: Settings) -> FakeChatModel:
    """Registry factory for ``fake:NAME``: a fake with an empty script (tests queue replies on it)."""
    return FakeChatModel(model=spec.model)


__all__ = ["FakeCall", "FakeChatModel", "Reply", "create"]
