"""Fake OpenAI ``POST /v1/chat/completions`` (JSON and SSE streaming with a final usage chunk)."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.fakes._server import Answer, Failure, FakeProvider, RecordedRequest, Rendered, pieces, sse

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIFake(FakeProvider):
    """An OpenAI-compatible chat completions server.

    ``provider`` picks the model id form: ``openai-compat`` (default, endpoint in the id), ``openai``,
    ``vllm`` or ``lmstudio`` (endpoint from settings), or ``openrouter``/``together``/``mistral`` (endpoint
    in the id).
    """

    def __init__(self, *, provider: str = "openai-compat", latency_s: float = 0.0) -> None:
        super().__init__(latency_s=latency_s)
        self.provider = provider

    @property
    def base_url(self) -> str:
        """The ``/v1`` base URL clients use."""
        return f"{self.url}/v1"

    @property
    def model_id(self) -> str:
        """The polymodal model id pointing at this server."""
        if self.provider in ("openai", "vllm", "lmstudio"):
            return f"{self.provider}:{self.model}"
        return f"{self.provider}:{self.model}@{self.base_url}"

    def endpoint_settings(self) -> dict[str, Any]:
        """Point every settings-configured OpenAI-compatible endpoint here."""
        return {
            "openai_base_url": self.base_url,
            "vllm_base_url": self.base_url,
            "lmstudio_base_url": self.base_url,
        }

    def is_stream(self, request: RecordedRequest) -> bool:
        """Streaming is the ``stream: true`` body field."""
        return isinstance(request.body, dict) and bool(request.body.get("stream"))

    def render_answer(self, answer: Answer, request: RecordedRequest, stream: bool) -> Rendered:
        """A chat.completion object, or chat.completion.chunk events ending with usage and [DONE]."""
        body = request.body if isinstance(request.body, dict) else {}
        model = str(body.get("model", self.model))
        usage = {
            "prompt_tokens": answer.input_tokens,
            "completion_tokens": answer.output_tokens,
            "total_tokens": answer.input_tokens + answer.output_tokens,
        }
        created = int(time.time())
        if not stream:
            completion = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer.text, "refusal": None},
                        "finish_reason": answer.finish,
                        "logprobs": None,
                    }
                ],
                "usage": usage,
            }
            return Rendered(200, body=json.dumps(completion).encode())

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        events = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk({"content": piece}, None) for piece in pieces(answer.text)]
        events.append(chunk({}, answer.finish))
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            events.append({**chunk({}, None), "choices": [], "usage": usage})
        return Rendered(200, chunks=sse(events, done=True), content_type="text/event-stream")

    def error_body(self, failure: Failure) -> Any:
        """OpenAI's ``{"error": {message, type, param, code}}``."""
        kind = "insufficient_quota" if failure.code == "insufficient_quota" else None
        return {
            "error": {
                "message": failure.message,
                "type": kind or _ERROR_TYPES.get(failure.status, "server_error"),
                "param": None,
                "code": failure.code,
            }
        }
