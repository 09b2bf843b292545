"""Anthropic Messages API through the official ``anthropic`` SDK (its own retries off).

A JSON schema is enforced with a forced tool call: the schema becomes the one tool's ``input_schema``,
``tool_choice`` names it, and the completion text is the tool input serialized as JSON. System messages go to
the ``system`` parameter; images travel as base64 ``image`` blocks. The SDK no longer exposes a sampling
temperature for current models, so ``GenerateOptions.temperature`` is not sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anthropic
from anthropic import AsyncAnthropic

from polymodal.backends import _http
from polymodal.backends._retry import RetryPolicy
from polymodal.backends._schema import deref_root, is_object_schema
from polymodal.backends._wire import WireConversation, WireImage, prepare
from polymodal.backends.base import (
    BaseChatModel,
    Capabilities,
    Completion,
    Delta,
    FinishReason,
    GenerateOptions,
    OutputSchema,
    Usage,
)
from polymodal.backends.messages import Message
from polymodal.backends.registry import ModelSpec
from polymodal.config import Settings
from polymodal.errors import BackendError, ConfigError, ErrorCategory

DEFAULT_BASE_URL = "https://api.anthropic.com"

#: Claude accepts up to 100 images per request; images above ~1.15 megapixels are downscaled server-side,
#: so sending more only costs upload time.
CAPABILITIES = Capabilities(
    max_images=100, max_image_pixels=1568 * 1568, structured="tool", context_tokens=200_000
)

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_use",
    "pause_turn": "unknown",
    "refusal": "content_filter",
}

#: When a schema is wrapped (non-object root), the tool input carries the answer under this key.
_WRAP_KEY = "value"


def _stop(reason: str | None, *, forced_tool: bool) -> FinishReason:
    mapped = _STOP.get(reason or "", "unknown")
    # With a forced tool call, the tool call *is* the answer: a finished one is a normal stop.
    return "stop" if forced_tool and mapped == "tool_use" else mapped


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    cached = int(getattr(raw, "cache_creation_input_tokens", 0) or 0) + int(
        getattr(raw, "cache_read_input_tokens", 0) or 0
    )
    return Usage(
        int(getattr(raw, "input_tokens", 0) or 0) + cached, int(getattr(raw, "output_tokens", 0) or 0)
    )


def _blocks(parts: Sequence[str | WireImage]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, str):
            if part:
                blocks.append({"type": "text", "text": part})
            continue
        if part.label:
            blocks.append({"type": "text", "text": f"[{part.label}]"})
        source = {"type": "base64", "media_type": part.encoded.mime_type, "data": part.encoded.b64()}
        blocks.append({"type": "image", "source": source})
    return blocks


def _messages(conversation: WireConversation) -> list[dict[str, Any]]:
    """Anthropic wants alternating turns: consecutive same-role messages are merged into one."""
    out: list[dict[str, Any]] = []
    for message in conversation.messages:
        blocks = _blocks(message.parts)
        if out and out[-1]["role"] == message.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": message.role, "content": blocks})
    return out


def _tool(schema: OutputSchema) -> tuple[dict[str, Any], bool]:
    """The tool whose input is the answer; wraps a non-object schema (tool inputs must be objects)."""
    wrapped = not is_object_schema(schema.json_schema)
    input_schema = (
        {"type": "object", "properties": {_WRAP_KEY: schema.json_schema}, "required": [_WRAP_KEY]}
        if wrapped
        else deref_root(schema.json_schema)
    )
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in schema.name)[:64] or "output"
    description = schema.description or f"Record the answer as a {schema.name} object."
    return {"name": name, "description": description, "input_schema": input_schema}, wrapped


class AnthropicChatModel(BaseChatModel):
    """A Claude model behind the Anthropic Messages API."""

    provider = "anthropic"
    capabilities = CAPABILITIES

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(model, retry=retry)
        self.base_url = base_url
        # An explicit http_client: see openai_compat (the default one closes itself from the wrong loop).
        self._clients = _http.LoopBound(
            lambda: AsyncAnthropic(
                api_key=api_key,
                base_url=base_url,
                timeout=timeout,
                max_retries=0,
                http_client=anthropic.DefaultAsyncHttpxClient(verify=_http.ssl_context()),
            )
        )

    async def _request(self, messages: Sequence[Message], options: GenerateOptions) -> dict[str, Any]:
        conversation = await prepare(
            messages, self.capabilities, provider=self.provider, model=self.model, image_format="JPEG"
        )
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": options.max_tokens,
            "messages": _messages(conversation),
        }
        if conversation.system:
            request["system"] = conversation.system
        return request

    async def _generate(
        self, messages: Sequence[Message], schema: OutputSchema | None, options: GenerateOptions
    ) -> Completion:
        request = await self._request(messages, options)
        wrapped = False
        if schema is not None:
            tool, wrapped = _tool(schema)
            request["tools"] = [tool]
            request["tool_choice"] = {"type": "tool", "name": tool["name"]}
        try:
            response = await self._clients.get().messages.create(**request)
        except Exception as exc:
            raise self._translate(exc) from exc
        content = getattr(response, "content", None)
        if not isinstance(content, list):
            raise _http.malformed(self.provider, self.model, "the message has no content list")
        if schema is not None:
            text = self._tool_text(content, wrapped)
        else:
            text = "".join(getattr(b, "text", "") or "" for b in content if getattr(b, "type", "") == "text")
        return Completion(
            text=text,
            finish_reason=_stop(getattr(response, "stop_reason", None), forced_tool=schema is not None),
            usage=_usage(getattr(response, "usage", None)),
            model=getattr(response, "model", None) or self.model,
        )

    def _tool_text(self, content: list[Any], wrapped: bool) -> str:
        for block in content:
            if getattr(block, "type", "") == "tool_use":
                value = getattr(block, "input", None)
                if wrapped and isinstance(value, dict):
                    value = value.get(_WRAP_KEY)
                return json.dumps(value, ensure_ascii=False)
        # No tool call (e.g. cut off before it started): hand back any text so validation can report it.
        return "".join(getattr(b, "text", "") or "" for b in content if getattr(b, "type", "") == "text")

    async def _stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncIterator[Delta]:
        request = await self._request(messages, options)
        request["stream"] = True
        input_tokens = output_tokens = 0
        finish: FinishReason = "unknown"
        try:
            stream = await self._clients.get().messages.create(**request)
            try:
                async for event in stream:
                    kind = getattr(event, "type", "")
                    if kind == "message_start":
                        usage = _usage(getattr(event.message, "usage", None))
                        input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
                    elif kind == "content_block_delta":
                        text = getattr(event.delta, "text", None)
                        if text:
                            yield Delta(text=text)
                    elif kind == "message_delta":
                        finish = _stop(getattr(event.delta, "stop_reason", None), forced_tool=False)
                        output_tokens = int(getattr(event.usage, "output_tokens", 0) or output_tokens)
            finally:
                await stream.close()  # also when the caller stops reading early
        except BackendError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc
        yield Delta(finish_reason=finish, usage=Usage(input_tokens, output_tokens))

    def _translate(self, exc: Exception) -> BackendError:
        """Map an ``anthropic`` SDK (or decoding) exception to a BackendError."""
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, anthropic.APIStatusError):
            return _http.status_error(
                self.provider, self.model, exc.status_code, headers=exc.response.headers, body=exc.body
            )
        if isinstance(exc, anthropic.APITimeoutError):
            return BackendError(
                "request timed out", category=ErrorCategory.TIMEOUT, provider=self.provider, model=self.model
            )
        if isinstance(exc, anthropic.APIConnectionError):
            return BackendError(
                f"cannot reach {self.base_url}: {exc.__cause__ or exc}",
                category=ErrorCategory.CONNECTION,
                provider=self.provider,
                model=self.model,
            )
        if isinstance(exc, anthropic.APIResponseValidationError | ValueError | TypeError | AttributeError):
            return _http.malformed(self.provider, self.model, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, anthropic.APIError):
            # An ``event: error`` inside a stream (e.g. overloaded mid-answer) arrives without a status.
            body = exc.body
            category = (
                ErrorCategory.OVERLOADED if "overloaded" in _http.error_codes(body) else ErrorCategory.SERVER
            )
            return BackendError(
                _http.error_message(body, exc.message),
                category=category,
                provider=self.provider,
                model=self.model,
            )
        return BackendError(
            f"{type(exc).__name__}: {exc}",
            category=ErrorCategory.UNAVAILABLE,
            provider=self.provider,
            model=self.model,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        client = self._clients.current()
        if client is not None:
            await client.close()


def create(spec: ModelSpec, settings: Settings) -> AnthropicChatModel:
    """Build the backend for an ``anthropic:MODEL`` id."""
    key = settings.secret("anthropic_api_key")
    if not key:
        raise ConfigError(
            "anthropic needs an API key",
            hint="set the ANTHROPIC_API_KEY environment variable (or pass it to Settings)",
        )
    base_url = (spec.base_url or settings.anthropic_base_url or DEFAULT_BASE_URL).rstrip("/")
    return AnthropicChatModel(
        spec.model,
        api_key=key,
        base_url=base_url,
        timeout=settings.request_timeout,
        retry=RetryPolicy.from_settings(settings.retry),
    )


__all__ = ["CAPABILITIES", "AnthropicChatModel", "create"]
