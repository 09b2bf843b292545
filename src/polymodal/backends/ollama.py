"""Ollama's native ``/api/chat`` over httpx.

The native API (rather than Ollama's ``/v1`` OpenAI shim) takes a full JSON schema in ``format`` and turns it
into a decoding grammar, so the answer is constrained, not merely requested. Images travel as base64 strings
in each message's ``images`` list; streaming is newline-delimited JSON; ``options.num_predict`` caps output.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from polymodal.backends import _http
from polymodal.backends._retry import RetryPolicy
from polymodal.backends._schema import inline_refs
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

#: Local vision models (Qwen2.5-VL, Gemma 3, Llama 3.2 Vision) work best with a few moderate images.
CAPABILITIES = Capabilities(max_images=8, max_image_pixels=1280 * 1280, structured="json_schema")

_DONE: dict[str, FinishReason] = {"stop": "stop", "length": "length"}


def _message(role: str, parts: Sequence[str | WireImage]) -> dict[str, Any]:
    texts: list[str] = []
    images: list[str] = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        else:
            if part.label:
                texts.append(f"[{part.label}: image {len(images) + 1}]")
            images.append(part.encoded.b64())
    message: dict[str, Any] = {"role": role, "content": "\n\n".join(t for t in texts if t)}
    if images:
        message["images"] = images
    return message


def _messages(conversation: WireConversation) -> list[dict[str, Any]]:
    out = [{"role": "system", "content": conversation.system}] if conversation.system else []
    out += [_message(m.role, m.parts) for m in conversation.messages]
    return out


def _format(schema: OutputSchema) -> dict[str, Any]:
    """Inline ``$ref``s (Ollama's schema-to-grammar conversion is most reliable on flat schemas)."""
    try:
        return inline_refs(schema.json_schema)
    except ConfigError:
        return dict(schema.json_schema)  # recursive: let Ollama try the references itself


class OllamaChatModel(BaseChatModel):
    """A model served by Ollama."""

    provider = "ollama"
    capabilities = CAPABILITIES

    def __init__(
        self, model: str, *, host: str, timeout: float = 120.0, retry: RetryPolicy | None = None
    ) -> None:
        super().__init__(model, retry=retry)
        self.host = host
        self._clients = _http.LoopBound(lambda: _http.async_client(timeout, host))

    async def _body(
        self, messages: Sequence[Message], schema: OutputSchema | None, options: GenerateOptions, stream: bool
    ) -> dict[str, Any]:
        conversation = await prepare(
            messages, self.capabilities, provider=self.provider, model=self.model, image_format="PNG"
        )
        model_options: dict[str, Any] = {
            "num_predict": options.max_tokens,
            "temperature": options.temperature,
        }
        if options.seed is not None:
            model_options["seed"] = options.seed
        body: dict[str, Any] = {
            "model": self.model,
            "messages": _messages(conversation),
            "stream": stream,
            "options": model_options,
        }
        if schema is not None:
            body["format"] = _format(schema)
        return body

    def _read(self, payload: object) -> tuple[str, FinishReason | None, Usage | None]:
        if not isinstance(payload, Mapping):
            raise _http.malformed(self.provider, self.model, "response is not a JSON object")
        if payload.get("error"):
            # Ollama reports failures inside a 200 stream as {"error": "..."}.
            raise BackendError(
                str(payload["error"]), category=ErrorCategory.SERVER, provider=self.provider, model=self.model
            )
        message = payload.get("message")
        if message is not None and not isinstance(message, Mapping):
            raise _http.malformed(self.provider, self.model, "message is not an object")
        text = str((message or {}).get("content") or "")
        if not payload.get("done"):
            return text, None, None
        finish = _DONE.get(str(payload.get("done_reason") or "stop"), "unknown")
        usage = Usage(int(payload.get("prompt_eval_count") or 0), int(payload.get("eval_count") or 0))
        return text, finish, usage

    async def _generate(
        self, messages: Sequence[Message], schema: OutputSchema | None, options: GenerateOptions
    ) -> Completion:
        body = await self._body(messages, schema, options, stream=False)
        try:
            response = await self._clients.get().post("/api/chat", json=body)
            await self._check(response)
            payload = _http.decode_json(response.content, self.provider, self.model)
        except Exception as exc:
            raise self._translate(exc) from exc
        text, finish, usage = self._read(payload)
        if finish is None:
            raise _http.malformed(self.provider, self.model, "non-streamed answer is not marked done")
        return Completion(text=text, finish_reason=finish, usage=usage or Usage(), model=self.model)

    async def _stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncIterator[Delta]:
        body = await self._body(messages, None, options, stream=True)
        finish: FinishReason | None = None
        usage: Usage | None = None
        try:
            client = self._clients.get()
            response = await client.send(client.build_request("POST", "/api/chat", json=body), stream=True)
            try:
                await self._check(response)
                async for line in _http.iter_ndjson(response, self.provider, self.model):
                    text, finish, usage = self._read(line)
                    if text:
                        yield Delta(text=text)
                    if finish is not None:
                        break
            finally:
                await response.aclose()
        except Exception as exc:
            raise self._translate(exc) from exc
        if finish is None:
            raise _http.malformed(self.provider, self.model, "stream ended before a done message")
        yield Delta(finish_reason=finish, usage=usage)

    async def _check(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        raw = await response.aread()
        error = _http.status_error(
            self.provider,
            self.model,
            response.status_code,
            headers=response.headers,
            body=_http.parse_json_body(raw),
        )
        if error.category is ErrorCategory.NOT_FOUND:
            raise BackendError(
                f"{error.message} (run `ollama pull {self.model}` on {self.host})",
                category=error.category,
                provider=self.provider,
                model=self.model,
                status=error.status,
            )
        raise error

    def _translate(self, exc: Exception) -> BackendError:
        """Map httpx and decoding exceptions to a BackendError (status errors are built by ``_check``)."""
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, httpx.ConnectError):
            return BackendError(
                f"cannot reach Ollama at {self.host} (is `ollama serve` running?): {exc}",
                category=ErrorCategory.CONNECTION,
                provider=self.provider,
                model=self.model,
            )
        if isinstance(exc, httpx.TransportError):
            return _http.transport_error(self.provider, self.model, exc)
        if isinstance(exc, ValueError | TypeError | AttributeError):
            return _http.malformed(self.provider, self.model, f"{type(exc).__name__}: {exc}")
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
            await client.aclose()


def create(spec: ModelSpec, settings: Settings) -> OllamaChatModel:
    """Build the backend for an ``ollama:MODEL[:TAG]`` id (host from ``@URL`` or ``OLLAMA_HOST``)."""
    host = (spec.base_url or settings.ollama_host).rstrip("/")
    if not host.startswith(("http://", "https://")):
        host = f"http://{host}"  # OLLAMA_HOST is often written as host:port
    return OllamaChatModel(
        spec.model,
        host=host,
        timeout=settings.request_timeout,
        retry=RetryPolicy.from_settings(settings.retry),
    )


__all__ = ["CAPABILITIES", "OllamaChatModel", "create"]
