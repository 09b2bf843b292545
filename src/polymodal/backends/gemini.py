"""Gemini through its documented REST API (``v1beta generateContent`` / ``streamGenerateContent?alt=sse``).

Why httpx and not the ``google-genai`` SDK: the SDK reads the environment on its own
(``GOOGLE_GENAI_USE_VERTEXAI`` silently switches it to Vertex AI, ``GOOGLE_GENAI_HTTP_CLIENT`` swaps its
transport between httpx, httpx2 and aiohttp, each with its own exception types), and it retries connection
errors by itself with 1-10 s sleeps unless retry options are configured. Settings must come only from
:mod:`polymodal.config` and there must be one retry layer, so this adapter speaks the small, stable REST
surface directly: one request shape, one error shape (``google.rpc.Status``), one transport.

A schema is enforced with ``responseMimeType: application/json`` + ``responseJsonSchema`` (standard JSON
Schema, ``$ref``/``$defs`` included). Images travel as ``inlineData`` parts.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from polymodal.backends import _http
from polymodal.backends._retry import RetryPolicy
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

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"

#: Gemini takes up to 3,600 images per request; it tiles large images itself, 3072 px sides keep detail.
CAPABILITIES = Capabilities(
    max_images=3600, max_image_pixels=3072 * 3072, structured="json_schema", context_tokens=1_048_576
)

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_AUTH_REASONS = frozenset({"api_key_invalid", "api_key_expired", "unauthenticated"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _parts(parts: Sequence[str | WireImage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, str):
            if part:
                out.append({"text": part})
            continue
        if part.label:
            out.append({"text": f"[{part.label}]"})
        out.append({"inlineData": {"mimeType": part.encoded.mime_type, "data": part.encoded.b64()}})
    return out


def _contents(conversation: WireConversation) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    for message in conversation.messages:
        role = "model" if message.role == "assistant" else "user"
        parts = _parts(message.parts)
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    output = int(raw.get("candidatesTokenCount", 0) or 0) + int(raw.get("thoughtsTokenCount", 0) or 0)
    return Usage(int(raw.get("promptTokenCount", 0) or 0), output)


def _rpc_details(body: object) -> list[Mapping[str, Any]]:
    error = body.get("error") if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    return [d for d in details if isinstance(d, Mapping)] if isinstance(details, list) else []


def _retry_delay(body: object) -> float | None:
    """``google.rpc.RetryInfo.retryDelay`` (e.g. ``"43s"``) in seconds."""
    for detail in _rpc_details(body):
        if str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _daily_quota(body: object) -> bool:
    """True when a ``QuotaFailure`` names a per-day quota (retrying within minutes cannot help)."""
    for detail in _rpc_details(body):
        for violation in detail.get("violations", ()) or ():
            if isinstance(violation, Mapping) and "PerDay" in str(violation.get("quotaId", "")):
                return True
    return False


class GeminiChatModel(BaseChatModel):
    """A Gemini model behind the Gemini Developer API."""

    provider = "gemini"
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
        super().__init__(model.removeprefix("models/"), retry=retry)
        self.base_url = base_url
        headers = {"x-goog-api-key": api_key, "content-type": "application/json"}
        self._clients = _http.LoopBound(lambda: _http.async_client(timeout, base_url, headers))

    def _path(self, method: str) -> str:
        return f"/{API_VERSION}/models/{self.model}:{method}"

    async def _body(
        self, messages: Sequence[Message], schema: OutputSchema | None, options: GenerateOptions
    ) -> dict[str, Any]:
        conversation = await prepare(
            messages, self.capabilities, provider=self.provider, model=self.model, image_format="JPEG"
        )
        config: dict[str, Any] = {"maxOutputTokens": options.max_tokens, "temperature": options.temperature}
        if options.seed is not None:
            config["seed"] = options.seed
        if schema is not None:
            config["responseMimeType"] = "application/json"
            config["responseJsonSchema"] = schema.json_schema
        body: dict[str, Any] = {"contents": _contents(conversation), "generationConfig": config}
        if conversation.system:
            body["systemInstruction"] = {"parts": [{"text": conversation.system}]}
        return body

    def _read(self, payload: object) -> tuple[str, FinishReason | None, Usage | None]:
        """Text, finish reason and usage of one GenerateContentResponse."""
        if not isinstance(payload, Mapping):
            raise _http.malformed(self.provider, self.model, "response is not a JSON object")
        candidates = payload.get("candidates")
        usage = _usage(payload.get("usageMetadata"))
        if not candidates:
            feedback = payload.get("promptFeedback")
            if isinstance(feedback, Mapping) and feedback.get("blockReason"):
                raise BackendError(
                    f"prompt blocked: {feedback['blockReason']}",
                    category=ErrorCategory.CONTENT_FILTER,
                    provider=self.provider,
                    model=self.model,
                )
            return "", None, usage
        candidate = candidates[0] if isinstance(candidates, list) else None
        if not isinstance(candidate, Mapping):
            raise _http.malformed(self.provider, self.model, "candidate is not an object")
        content = candidate.get("content") or {}
        parts = content.get("parts") or [] if isinstance(content, Mapping) else []
        # Thought summaries (``thought: true``) are not part of the answer.
        text = "".join(
            str(p.get("text", "")) for p in parts if isinstance(p, Mapping) and not p.get("thought")
        )
        reason = candidate.get("finishReason")
        finish = _FINISH.get(str(reason), "unknown") if reason else None
        return text, finish, usage

    async def _generate(
        self, messages: Sequence[Message], schema: OutputSchema | None, options: GenerateOptions
    ) -> Completion:
        body = await self._body(messages, schema, options)
        try:
            response = await self._clients.get().post(self._path("generateContent"), json=body)
            await self._check(response)
            payload = _http.decode_json(response.content, self.provider, self.model)
        except Exception as exc:
            raise self._translate(exc) from exc
        text, finish, usage = self._read(payload)
        version = payload.get("modelVersion") if isinstance(payload, dict) else None
        return Completion(
            text=text,
            finish_reason=finish or "unknown",
            usage=usage or Usage(),
            model=str(version or self.model),
        )

    async def _stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncIterator[Delta]:
        body = await self._body(messages, None, options)
        finish: FinishReason | None = None
        usage: Usage | None = None
        try:
            client = self._clients.get()
            request = client.build_request(
                "POST", self._path("streamGenerateContent"), params={"alt": "sse"}, json=body
            )
            response = await client.send(request, stream=True)
            try:
                await self._check(response)
                async for data in _http.iter_sse_data(response):
                    text, reason, seen = self._read(_http.decode_json(data, self.provider, self.model))
                    if text:
                        yield Delta(text=text)
                    finish = reason or finish
                    usage = seen or usage
            finally:
                await response.aclose()
        except Exception as exc:
            raise self._translate(exc) from exc
        yield Delta(finish_reason=finish or "unknown", usage=usage)

    async def _check(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            raw = await response.aread()
            raise self._status_error(response.status_code, response.headers, _http.parse_json_body(raw))

    def _status_error(self, status: int, headers: Mapping[str, str], body: object) -> BackendError:
        error = _http.status_error(self.provider, self.model, status, headers=headers, body=body)
        category = error.category
        if _http.error_codes(body) & _AUTH_REASONS:
            category = ErrorCategory.AUTH  # Gemini answers a bad key with 400 INVALID_ARGUMENT
        elif status == 429 and _daily_quota(body):
            category = ErrorCategory.QUOTA
        retry_after = error.retry_after if error.retry_after is not None else _retry_delay(body)
        return BackendError(
            error.message,
            category=category,
            provider=self.provider,
            model=self.model,
            status=status,
            retry_after=retry_after,
        )

    def _translate(self, exc: Exception) -> BackendError:
        """Map httpx and decoding exceptions to a BackendError (status errors are built by ``_check``)."""
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, httpx.TransportError):
            return _http.transport_error(self.provider, self.model, exc)
        if isinstance(exc, ValueError | TypeError | AttributeError | KeyError):
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


def create(spec: ModelSpec, settings: Settings) -> GeminiChatModel:
    """Build the backend for a ``gemini:MODEL`` id."""
    key = settings.secret("gemini_api_key")
    if not key:
        raise ConfigError(
            "gemini needs an API key",
            hint="set the GEMINI_API_KEY environment variable (or pass it to Settings)",
        )
    base_url = (spec.base_url or settings.gemini_base_url or DEFAULT_BASE_URL).rstrip("/")
    return GeminiChatModel(
        spec.model,
        api_key=key,
        base_url=base_url,
        timeout=settings.request_timeout,
        retry=RetryPolicy.from_settings(settings.retry),
    )


__all__ = ["API_VERSION", "CAPABILITIES", "GeminiChatModel", "create"]
