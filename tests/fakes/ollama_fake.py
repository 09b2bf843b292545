"""Fake Ollama native ``POST /api/chat`` (JSON, and NDJSON streaming when ``stream`` is true or absent)."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes._server import Answer, Failure, FakeProvider, RecordedRequest, Rendered, pieces

_CREATED = "2026-01-01T00:00:00.000000Z"


class OllamaFake(FakeProvider):
    """An Ollama server's chat endpoint."""

    provider = "ollama"
    model = "test-vlm:7b"
    spend_limit_code = "quota_exceeded"

    @property
    def model_id(self) -> str:
        """``ollama:test-vlm:7b`` (the host comes from settings)."""
        return f"ollama:{self.model}"

    def endpoint_settings(self) -> dict[str, Any]:
        """``OLLAMA_HOST`` pointing here."""
        return {"ollama_host": self.url}

    def is_stream(self, request: RecordedRequest) -> bool:
        """Ollama streams unless ``stream`` is explicitly false."""
        return not (isinstance(request.body, dict) and request.body.get("stream") is False)

    def render_answer(self, answer: Answer, request: RecordedRequest, stream: bool) -> Rendered:
        """A done chat response, or NDJSON lines ending with a ``done: true`` line carrying the counts."""
        body = request.body if isinstance(request.body, dict) else {}
        model = body.get("model", self.model)
        final = {
            "model": model,
            "created_at": _CREATED,
            "message": {"role": "assistant", "content": "" if stream else answer.text},
            "done": True,
            "done_reason": answer.finish,
            "total_duration": 1000,
            "prompt_eval_count": answer.input_tokens,
            "eval_count": answer.output_tokens,
        }
        if not stream:
            return Rendered(200, body=json.dumps(final).encode())
        lines = [
            {
                "model": model,
                "created_at": _CREATED,
                "message": {"role": "assistant", "content": p},
                "done": False,
            }
            for p in pieces(answer.text)
        ]
        lines.append(final)
        return Rendered(
            200,
            chunks=[(json.dumps(line) + "\n").encode() for line in lines],
            content_type="application/x-ndjson",
        )

    def error_body(self, failure: Failure) -> Any:
        """Ollama's ``{"error": "message"}``."""
        message = f"{failure.code}: {failure.message}" if failure.code else failure.message
        return {"error": message}

    def render_malformed(self, stream: bool) -> Rendered:
        """Invalid JSON in the body or on an NDJSON line."""
        if stream:
            return Rendered(200, chunks=[b'{"message": {"content": \n'], content_type="application/x-ndjson")
        return Rendered(200, body=b'{"message": {"content": ')
