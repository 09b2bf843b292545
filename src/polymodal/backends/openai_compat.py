"""OpenAI and every OpenAI-compatible chat endpoint (vLLM, LM Studio, OpenRouter, Together, Mistral...).

One wire adapter (the official ``openai`` SDK, its own retries off) times a table of endpoint profiles: where
the endpoint lives, which key it needs, how it enforces a JSON schema and what it accepts. Adding an endpoint
is adding a row to :data:`PROFILES`, not a branch in the code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from polymodal.backends import _http
from polymodal.backends._retry import RetryPolicy
from polymodal.backends._schema import is_object_schema, schema_instruction, to_openai_strict
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

#: Sent as the bearer token to keyless local servers (the SDK refuses an empty key).
NO_KEY = "no-key"

SchemaMode = Literal["json_schema", "json_object"]


@dataclass(frozen=True)
class EndpointProfile:
    """Where an OpenAI-compatible endpoint lives and what it supports.

    Attributes:
        name: the provider name in model ids.
        default_base_url: used when neither the id's ``@URL`` nor a setting gives one; None means required.
        base_url_setting: the Settings field holding this endpoint's base URL, if any.
        key_setting: the Settings field holding the API key, if any.
        key_env: the environment variable users set for that key (named in error hints).
        key_required: refuse to build the backend without a key.
        schema_mode: ``json_schema`` (``response_format`` carries the schema) or ``json_object`` (plain JSON
            mode, schema sent in the system prompt).
        strict_schema: convert the schema to OpenAI's strict subset and send ``strict: true``.
        json_object_schema_key: attach the schema inside the json_object ``response_format`` under this key
            (Together's documented extension), when set.
        token_param: the request field for the output-token cap.
        stream_usage: send ``stream_options.include_usage`` (not every server accepts it).
        fixed_temperature_prefixes: model-name prefixes that reject a temperature (reasoning models).
        image_format: how images are encoded for this endpoint (JPEG q90: a fifth of PNG's encode time,
            no visible loss on rendered pages at the model's resolution).
        capabilities: what the endpoint accepts.
    """

    name: str
    default_base_url: str | None
    base_url_setting: str | None = None
    key_setting: str | None = None
    key_env: str | None = None
    key_required: bool = False
    schema_mode: SchemaMode = "json_schema"
    strict_schema: bool = False
    json_object_schema_key: str | None = None
    token_param: str = "max_tokens"
    stream_usage: bool = True
    fixed_temperature_prefixes: tuple[str, ...] = ()
    image_format: str = "JPEG"
    capabilities: Capabilities = field(default_factory=Capabilities)


_REMOTE_IMAGES = 2048 * 2048
_LOCAL_IMAGES = 1280 * 1280

PROFILES: dict[str, EndpointProfile] = {
    profile.name: profile
    for profile in (
        EndpointProfile(
            "openai",
            "https://api.openai.com/v1",
            base_url_setting="openai_base_url",
            key_setting="openai_api_key",
            key_env="OPENAI_API_KEY",
            key_required=True,
            strict_schema=True,
            token_param="max_completion_tokens",
            fixed_temperature_prefixes=("o1", "o3", "o4", "gpt-5"),
            capabilities=Capabilities(
                max_images=500, max_image_pixels=_REMOTE_IMAGES, context_tokens=128_000
            ),
        ),
        EndpointProfile(
            "openai-compat",
            None,
            key_setting="openai_compat_api_key",
            key_env="POLYMODAL_OPENAI_COMPAT_API_KEY",
            capabilities=Capabilities(max_image_pixels=_LOCAL_IMAGES),
        ),
        EndpointProfile(
            "vllm",
            None,
            base_url_setting="vllm_base_url",
            key_setting="openai_compat_api_key",
            key_env="POLYMODAL_OPENAI_COMPAT_API_KEY",
            capabilities=Capabilities(max_image_pixels=_LOCAL_IMAGES),
        ),
        EndpointProfile(
            "lmstudio",
            None,
            base_url_setting="lmstudio_base_url",
            key_setting="openai_compat_api_key",
            key_env="POLYMODAL_OPENAI_COMPAT_API_KEY",
            capabilities=Capabilities(max_images=8, max_image_pixels=_LOCAL_IMAGES),
        ),
        EndpointProfile(
            "openrouter",
            "https://openrouter.ai/api/v1",
            key_setting="openrouter_api_key",
            key_env="OPENROUTER_API_KEY",
            key_required=True,
            capabilities=Capabilities(max_image_pixels=_REMOTE_IMAGES),
        ),
        EndpointProfile(
            "together",
            "https://api.together.xyz/v1",
            key_setting="together_api_key",
            key_env="TOGETHER_API_KEY",
            key_required=True,
            schema_mode="json_object",
            json_object_schema_key="schema",
            capabilities=Capabilities(
                max_images=8, max_image_pixels=_REMOTE_IMAGES, structured="json_object"
            ),
        ),
        EndpointProfile(
            "mistral",
            "https://api.mistral.ai/v1",
            key_setting="mistral_api_key",
            key_env="MISTRAL_API_KEY",
            key_required=True,
            stream_usage=False,
            capabilities=Capabilities(max_images=8, max_image_pixels=_REMOTE_IMAGES, context_tokens=128_000),
        ),
    )
}

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
}


def _finish(reason: str | None) -> FinishReason:
    return _FINISH.get(reason or "", "unknown")


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    return Usage(int(getattr(raw, "prompt_tokens", 0) or 0), int(getattr(raw, "completion_tokens", 0) or 0))


def _content(parts: Sequence[str | WireImage]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, str) for p in parts):
        return "\n\n".join(p for p in parts if isinstance(p, str))
    content: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, str):
            content.append({"type": "text", "text": part})
            continue
        if part.label:
            content.append({"type": "text", "text": f"[{part.label}]"})
        content.append({"type": "image_url", "image_url": {"url": part.encoded.data_url()}})
    return content


class OpenAICompatChatModel(BaseChatModel):
    """A chat model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(
        self,
        model: str,
        *,
        profile: EndpointProfile,
        base_url: str,
        api_key: str,
        timeout: float,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(model, retry=retry)
        self.profile = profile
        self.provider = profile.name
        self.capabilities = profile.capabilities
        self.base_url = base_url
        # An explicit http_client: the SDK's default one closes itself on garbage collection by scheduling
        # the close on whatever loop is running then, which fails for pools opened by a loop now closed.
        self._clients = _http.LoopBound(
            lambda: AsyncOpenAI(
                api_key=api_key,
                base_url=base_url,
                timeout=timeout,
                max_retries=0,
                http_client=openai.DefaultAsyncHttpxClient(verify=_http.ssl_context()),
            )
        )

    # -- request building -------------------------------------------------------------------------------

    def _messages(self, conversation: WireConversation, extra_system: str | None) -> list[dict[str, Any]]:
        system = "\n\n".join(t for t in (conversation.system, extra_system or "") if t)
        out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        for message in conversation.messages:
            out.append({"role": message.role, "content": _content(message.parts)})
        return out

    def _response_format(self, schema: OutputSchema) -> tuple[dict[str, Any], str | None]:
        """The ``response_format`` for a schema and any instruction to add to the system prompt."""
        if self.profile.schema_mode == "json_schema":
            strict = self.profile.strict_schema and is_object_schema(schema.json_schema)
            body = to_openai_strict(schema.json_schema) if strict else schema.json_schema
            spec: dict[str, Any] = {"name": _schema_name(schema.name), "schema": body, "strict": strict}
            if schema.description:
                spec["description"] = schema.description
            return {"type": "json_schema", "json_schema": spec}, None
        response_format: dict[str, Any] = {"type": "json_object"}
        if self.profile.json_object_schema_key:
            response_format[self.profile.json_object_schema_key] = schema.json_schema
        return response_format, schema_instruction(schema.name, schema.json_schema)

    async def _request(
        self, messages: Sequence[Message], schema: OutputSchema | None, options: GenerateOptions
    ) -> dict[str, Any]:
        conversation = await prepare(
            messages,
            self.capabilities,
            provider=self.provider,
            model=self.model,
            image_format=self.profile.image_format,
        )
        request: dict[str, Any] = {"model": self.model, self.profile.token_param: options.max_tokens}
        if not self.model.startswith(self.profile.fixed_temperature_prefixes):
            request["temperature"] = options.temperature
        if options.seed is not None:
            request["seed"] = options.seed
        instruction = None
        if schema is not None:
            request["response_format"], instruction = self._response_format(schema)
        request["messages"] = self._messages(conversation, instruction)
        return request

    # -- calls ------------------------------------------------------------------------------------------

    async def _generate(
        self, messages: Sequence[Message], schema: OutputSchema | None, options: GenerateOptions
    ) -> Completion:
        request = await self._request(messages, schema, options)
        try:
            response = await self._clients.get().chat.completions.create(**request)
        except Exception as exc:
            raise self._translate(exc) from exc
        if not isinstance(response, ChatCompletion) or not response.choices:
            raise _http.malformed(self.provider, self.model, "no choices in the chat completion")
        choice = response.choices[0]
        message = getattr(choice, "message", None)
        refusal = getattr(message, "refusal", None)
        if refusal:
            raise BackendError(
                f"the model refused: {refusal}",
                category=ErrorCategory.CONTENT_FILTER,
                provider=self.provider,
                model=self.model,
            )
        return Completion(
            text=getattr(message, "content", None) or "",
            finish_reason=_finish(choice.finish_reason),
            usage=_usage(response.usage),
            model=response.model or self.model,
        )

    async def _stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncIterator[Delta]:
        request = await self._request(messages, None, options)
        request["stream"] = True
        if self.profile.stream_usage:
            request["stream_options"] = {"include_usage": True}
        finish: FinishReason | None = None
        usage: Usage | None = None
        try:
            stream = await self._clients.get().chat.completions.create(**request)
            try:
                async for chunk in stream:
                    if not isinstance(chunk, ChatCompletionChunk):
                        raise _http.malformed(
                            self.provider, self.model, "stream chunk is not a completion chunk"
                        )
                    if chunk.usage is not None:
                        usage = _usage(chunk.usage)
                    for choice in chunk.choices or ():
                        text = choice.delta.content if choice.delta is not None else None
                        if text:
                            yield Delta(text=text)
                        if choice.finish_reason:
                            finish = _finish(choice.finish_reason)
            finally:
                await stream.close()  # also when the caller stops reading early
        except BackendError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc
        yield Delta(finish_reason=finish or "unknown", usage=usage)

    def _translate(self, exc: Exception) -> BackendError:
        """Map an ``openai`` SDK (or decoding) exception to a BackendError."""
        return translate_error(exc, provider=self.provider, model=self.model, base_url=self.base_url)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        client = self._clients.current()
        if client is not None:
            await client.close()


def translate_error(exc: Exception, *, provider: str, model: str, base_url: str) -> BackendError:
    """Map an ``openai`` SDK (or decoding) exception to a BackendError: the one mapping for every endpoint
    the SDK talks to (chat, embeddings, speech)."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        return _http.status_error(
            provider, model, exc.status_code, headers=exc.response.headers, body=exc.body
        )
    if isinstance(exc, openai.APITimeoutError):
        return BackendError(
            "request timed out", category=ErrorCategory.TIMEOUT, provider=provider, model=model
        )
    if isinstance(exc, openai.APIConnectionError):
        return BackendError(
            f"cannot reach {base_url}: {exc.__cause__ or exc}",
            category=ErrorCategory.CONNECTION,
            provider=provider,
            model=model,
        )
    if isinstance(exc, openai.APIResponseValidationError | ValueError | TypeError | AttributeError):
        return _http.malformed(provider, model, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, openai.APIError):
        # Errors the server sends inside a stream ("data: {"error": ...}") arrive as a bare APIError.
        return BackendError(exc.message, category=ErrorCategory.SERVER, provider=provider, model=model)
    return BackendError(
        f"{type(exc).__name__}: {exc}",
        category=ErrorCategory.UNAVAILABLE,
        provider=provider,
        model=model,
    )


def _schema_name(name: str) -> str:
    """OpenAI wants ``^[a-zA-Z0-9_-]{1,64}$`` as the schema name."""
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64]
    return cleaned or "output"


def create(spec: ModelSpec, settings: Settings) -> OpenAICompatChatModel:
    """Build the backend for ``openai:``, ``openai-compat:``, ``vllm:``, ``lmstudio:``, ``openrouter:``,
    ``together:`` or ``mistral:`` ids."""
    profile = PROFILES.get(spec.provider)
    if profile is None:
        raise ConfigError(f"no OpenAI-compatible profile named {spec.provider!r}", hint=", ".join(PROFILES))
    configured = getattr(settings, profile.base_url_setting) if profile.base_url_setting else None
    base_url = spec.base_url or configured or profile.default_base_url
    if not base_url:
        raise ConfigError(
            f"{spec.provider} needs an endpoint",
            hint=f"write the model id as {spec.provider}:{spec.model}@http://HOST:PORT/v1",
        )
    key = settings.secret(profile.key_setting) if profile.key_setting else None
    if profile.key_required and not key:
        raise ConfigError(
            f"{spec.provider} needs an API key",
            hint=f"set the {profile.key_env} environment variable (or pass it to Settings)",
        )
    return OpenAICompatChatModel(
        spec.model,
        profile=profile,
        base_url=base_url.rstrip("/"),
        api_key=key or NO_KEY,
        timeout=settings.request_timeout,
        retry=RetryPolicy.from_settings(settings.retry),
    )


__all__ = ["PROFILES", "EndpointProfile", "OpenAICompatChatModel", "create", "translate_error"]
