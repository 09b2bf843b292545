"""Fake Anthropic ``POST /v1/messages`` (text or forced tool use; named SSE stream events)."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes._server import Answer, Failure, FakeProvider, RecordedRequest, Rendered, pieces, sse

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _tool_input(answer: Answer) -> Any:
    if answer.data is not None:
        return answer.data
    try:
        return json.loads(answer.text)
    except ValueError:
        return {}  # a truncated tool call: the API returns what it could parse


class AnthropicFake(FakeProvider):
    """An Anthropic Messages API server."""

    provider = "anthropic"
    model = "claude-test"
    spend_limit_code = "enforced_spend_limit_reached"

    @property
    def model_id(self) -> str:
        """``anthropic:claude-test`` (the endpoint comes from settings)."""
        return f"anthropic:{self.model}"

    def endpoint_settings(self) -> dict[str, Any]:
        """The SDK appends ``/v1/messages`` to this base URL."""
        return {"anthropic_base_url": self.url}

    def is_stream(self, request: RecordedRequest) -> bool:
        """Streaming is the ``stream: true`` body field."""
        return isinstance(request.body, dict) and bool(request.body.get("stream"))

    def render_answer(self, answer: Answer, request: RecordedRequest, stream: bool) -> Rendered:
        """A message with a text or tool_use block, or its stream of events."""
        body = request.body if isinstance(request.body, dict) else {}
        choice = body.get("tool_choice") or {}
        tool_name = choice.get("name") if choice.get("type") == "tool" else None
        stop_reason = "tool_use" if tool_name else "end_turn"
        if answer.finish == "length":
            stop_reason = "max_tokens"
        if tool_name:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": "toolu_fake",
                "name": tool_name,
                "input": _tool_input(answer),
            }
        else:
            block = {"type": "text", "text": answer.text}
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", self.model),
            "content": [block],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens},
        }
        if not stream:
            return Rendered(200, body=json.dumps(message).encode())
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**message["usage"], "output_tokens": 1},
        }
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": start},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "ping"},
        ]
        events += [
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
            for piece in pieces(answer.text)
        ]
        events += [
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": answer.output_tokens},
            },
            {"type": "message_stop"},
        ]
        return Rendered(200, chunks=sse(events, named=True), content_type="text/event-stream")

    def error_body(self, failure: Failure) -> Any:
        """``{"type": "error", "error": {type, message, details.error_code}}``."""
        error: dict[str, Any] = {
            "type": _ERROR_TYPES.get(failure.status, "api_error"),
            "message": failure.message,
        }
        if failure.code:
            error["details"] = {"error_code": failure.code}
        return {"type": "error", "error": error}

    def render_malformed(self, stream: bool) -> Rendered:
        """Invalid JSON in the body or in a ``message_start`` event."""
        if stream:
            return Rendered(
                200,
                chunks=[b'event: message_start\ndata: {"type": "message_start", \n\n'],
                content_type="text/event-stream",
            )
        return Rendered(200, body=b'{"id": "msg_fake", "content": [')
