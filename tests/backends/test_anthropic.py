from __future__ import annotations

import json

import pytest

from polymodal.backends.anthropic import AnthropicChatModel
from polymodal.backends.base import GenerateOptions
from polymodal.backends.messages import Message
from polymodal.errors import BackendError, ErrorCategory
from tests.backends import provider_contract as contract
from tests.backends.provider_contract import (
    INVOICE,
    Invoice,
    close_models,  # noqa: F401 - autouse fixture closing the models each test makes
    decoded_size,
    invoice_messages,
    model_for,
)
from tests.fakes import AnthropicFake


async def test_schema_forced_through_a_tool_call(anthropic_fake: AnthropicFake) -> None:
    anthropic_fake.reply_json(INVOICE)
    model = model_for(anthropic_fake)
    assert isinstance(model, AnthropicChatModel)

    completion = await model.generate(invoice_messages(), Invoice, GenerateOptions(max_tokens=256))

    assert json.loads(completion.text) == INVOICE
    assert completion.finish_reason == "stop"  # a finished forced tool call is the answer
    (request,) = anthropic_fake.requests
    assert request.path == "/v1/messages"
    # This SDK generation sends the key as a bearer token; older ones used x-api-key.
    assert "test-key" in (request.headers.get("x-api-key", ""), request.headers.get("authorization", "")[7:])
    assert "anthropic-version" in request.headers
    body = request.json
    assert body["model"] == "claude-test" and body["max_tokens"] == 256
    assert body["system"] == "You extract invoices."
    (tool,) = body["tools"]
    assert tool["name"] == "Invoice" and tool["input_schema"] == Invoice.model_json_schema()
    assert tool["description"] == "An invoice."
    assert body["tool_choice"] == {"type": "tool", "name": "Invoice"}
    (user,) = body["messages"]
    assert user["role"] == "user"
    text, label, image = user["content"]
    assert text == {"type": "text", "text": "Read this invoice."}
    assert label["text"] == "[page 1]"
    assert image["type"] == "image" and image["source"]["type"] == "base64"
    assert image["source"]["media_type"] == "image/jpeg"
    assert decoded_size(image["source"]["data"]) == (64, 48)


async def test_non_object_schema_is_wrapped_and_unwrapped(anthropic_fake: AnthropicFake) -> None:
    anthropic_fake.reply_json({"value": ["a", "b"]})
    schema = {"title": "Tags", "type": "array", "items": {"type": "string"}}
    completion = await model_for(anthropic_fake).generate([Message.user("tags?")], schema)
    assert json.loads(completion.text) == ["a", "b"]
    tool = anthropic_fake.requests[0].json["tools"][0]
    assert tool["input_schema"]["properties"]["value"] == schema


async def test_consecutive_user_turns_are_merged(anthropic_fake: AnthropicFake) -> None:
    anthropic_fake.reply_text("ok")
    await model_for(anthropic_fake).generate([Message.user("a"), Message.user("b"), Message.assistant("c")])
    messages = anthropic_fake.requests[0].json["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert [b["text"] for b in messages[0]["content"]] == ["a", "b"]


async def test_stream(anthropic_fake: AnthropicFake) -> None:
    await contract.assert_streams(anthropic_fake)
    assert anthropic_fake.requests[0].json["stream"] is True


async def test_rate_limit_honours_retry_after(
    anthropic_fake: AnthropicFake, caplog: pytest.LogCaptureFixture
) -> None:
    await contract.assert_rate_limit_honoured(anthropic_fake, caplog)


async def test_server_error_retried(anthropic_fake: AnthropicFake) -> None:
    await contract.assert_server_error_retried(anthropic_fake)


async def test_overloaded_529_retried(anthropic_fake: AnthropicFake) -> None:
    anthropic_fake.fail(529, message="Overloaded").reply_text("fine")
    assert (await model_for(anthropic_fake).generate([Message.user("x")])).text == "fine"
    assert len(anthropic_fake.requests) == 2


async def test_auth_not_retried(anthropic_fake: AnthropicFake) -> None:
    await contract.assert_auth_not_retried(anthropic_fake)


async def test_spend_limit_not_retried(anthropic_fake: AnthropicFake) -> None:
    await contract.assert_spend_limit_not_retried(anthropic_fake)


async def test_timeout_bounded(anthropic_fake: AnthropicFake, caplog: pytest.LogCaptureFixture) -> None:
    await contract.assert_timeout_bounded(anthropic_fake, caplog)


async def test_malformed_body(anthropic_fake: AnthropicFake) -> None:
    await contract.assert_malformed_detected(anthropic_fake)


async def test_malformed_stream(anthropic_fake: AnthropicFake) -> None:
    await contract.assert_malformed_stream_detected(anthropic_fake)


async def test_truncated_output(anthropic_fake: AnthropicFake) -> None:
    await contract.assert_truncation_reported(anthropic_fake)


async def test_truncated_tool_call_reports_length(anthropic_fake: AnthropicFake) -> None:
    anthropic_fake.truncated('{"number": "A-')
    completion = await model_for(anthropic_fake).generate([Message.user("x")], Invoice)
    assert completion.finish_reason == "length"


async def test_stream_retried_before_first_delta(anthropic_fake: AnthropicFake) -> None:
    await contract.assert_stream_error_before_first_delta_retried(anthropic_fake)


async def test_prompt_too_long_is_context_length(anthropic_fake: AnthropicFake) -> None:
    anthropic_fake.fail(400, message="prompt is too long: 210000 tokens > 200000 maximum")
    with pytest.raises(BackendError) as caught:
        await model_for(anthropic_fake).generate([Message.user("x")])
    assert caught.value.category is ErrorCategory.CONTEXT_LENGTH
    assert len(anthropic_fake.requests) == 1
