"""Fake Gemini API ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes._server import Answer, Failure, FakeProvider, RecordedRequest, Rendered, pieces, sse

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}
DAILY_QUOTA = "daily_quota"


class GeminiFake(FakeProvider):
    """A Gemini Developer API server (v1beta REST).

    Like the real API, rate-limit errors carry their wait in the body (``google.rpc.RetryInfo``): a scripted
    ``Retry-After`` header on a 429 is moved there. ``spend_limit()`` answers a per-day quota violation.
    """

    provider = "gemini"
    model = "gemini-test"
    spend_limit_code = DAILY_QUOTA

    @property
    def model_id(self) -> str:
        """``gemini:gemini-test`` (the endpoint comes from settings)."""
        return f"gemini:{self.model}"

    def endpoint_settings(self) -> dict[str, Any]:
        """The API root; the adapter appends ``/v1beta/models/...``."""
        return {"gemini_base_url": self.url}

    def is_stream(self, request: RecordedRequest) -> bool:
        """Streaming is the ``:streamGenerateContent`` method."""
        return request.path.endswith(":streamGenerateContent")

    def render_answer(self, answer: Answer, request: RecordedRequest, stream: bool) -> Rendered:
        """A GenerateContentResponse, or a stream of them (the last with finishReason and usage)."""
        usage = {
            "promptTokenCount": answer.input_tokens,
            "candidatesTokenCount": answer.output_tokens,
            "totalTokenCount": answer.input_tokens + answer.output_tokens,
        }

        def response(text: str, finish: str | None, with_usage: bool) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
            if finish:
                candidate["finishReason"] = finish
            out: dict[str, Any] = {"candidates": [candidate], "modelVersion": self.model}
            if with_usage:
                out["usageMetadata"] = usage
            return out

        finish = _FINISH.get(answer.finish, "STOP")
        if not stream:
            return Rendered(200, body=json.dumps(response(answer.text, finish, True)).encode())
        parts = pieces(answer.text)
        events = [response(p, None, False) for p in parts[:-1]]
        events.append(response(parts[-1], finish, True))
        return Rendered(200, chunks=sse(events), content_type="text/event-stream")

    def error_body(self, failure: Failure) -> Any:
        """``{"error": {code, message, status, details}}`` with google.rpc detail messages."""
        details: list[dict[str, Any]] = []
        if failure.code == DAILY_QUOTA:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}],
                }
            )
        elif failure.code:
            details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": failure.code})
        retry_after = {k.lower(): v for k, v in failure.headers.items()}.get("retry-after")
        if failure.status == 429 and retry_after is not None:
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"}
            )
        error: dict[str, Any] = {
            "code": failure.status,
            "message": failure.message,
            "status": _STATUS.get(failure.status, "UNKNOWN"),
        }
        if details:
            error["details"] = details
        return {"error": error}

    def _render_failure(self, failure: Failure) -> Rendered:
        rendered = super()._render_failure(failure)
        if failure.status == 429:
            rendered.headers = {k: v for k, v in rendered.headers.items() if k.lower() != "retry-after"}
        return rendered

    def render_malformed(self, stream: bool) -> Rendered:
        """Invalid JSON in the body or in an SSE event."""
        if stream:
            return Rendered(200, chunks=[b'data: {"candidates": [\n\n'], content_type="text/event-stream")
        return Rendered(200, body=b'{"candidates": [{"content": ')
