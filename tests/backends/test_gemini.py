from __future__ import annotations

import json

import pytest

from polymodal.backends.base import GenerateOptions
from polymodal.backends.gemini import GeminiChatModel
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
from tests.fakes import GeminiFake


async def test_schema_image_and_token_cap_sent(gemini_fake: GeminiFake) -> None:
    gemini_fake.reply_json(INVOICE)
    model = model_for(gemini_fake)
    assert isinstance(model, GeminiChatModel)

    completion = await model.generate(invoice_messages(), Invoice, GenerateOptions(max_tokens=128, seed=3))

    assert json.loads(completion.text) == INVOICE
    assert completion.finish_reason == "stop"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (11, 7)
    (request,) = gemini_fake.requests
    assert request.path == "/v1beta/models/gemini-test:generateContent"
    assert request.headers["x-goog-api-key"] == "test-key"
    body = request.json
    config = body["generationConfig"]
    assert config["maxOutputTokens"] == 128 and config["seed"] == 3 and config["temperature"] == 0
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == Invoice.model_json_schema()
    assert body["systemInstruction"] == {"parts": [{"text": "You extract invoices."}]}
    (user,) = body["contents"]
    assert user["role"] == "user"
    text, label, image = user["parts"]
    assert text == {"text": "Read this invoice."} and label == {"text": "[page 1]"}
    assert image["inlineData"]["mimeType"] == "image/jpeg"
    assert decoded_size(image["inlineData"]["data"]) == (64, 48)


async def test_assistant_turns_become_model_role(gemini_fake: GeminiFake) -> None:
    gemini_fake.reply_text("ok")
    await model_for(gemini_fake).generate([Message.user("a"), Message.assistant("b"), Message.user("c")])
    assert [c["role"] for c in gemini_fake.requests[0].json["contents"]] == ["user", "model", "user"]


async def test_stream_uses_sse_method(gemini_fake: GeminiFake) -> None:
    await contract.assert_streams(gemini_fake)
    request = gemini_fake.requests[0]
    assert request.path == "/v1beta/models/gemini-test:streamGenerateContent"
    assert request.query == {"alt": "sse"}


async def test_rate_limit_honours_retry_info(
    gemini_fake: GeminiFake, caplog: pytest.LogCaptureFixture
) -> None:
    # The fake moves the wait into the body's google.rpc.RetryInfo, as the real API does.
    await contract.assert_rate_limit_honoured(gemini_fake, caplog)


async def test_server_error_retried(gemini_fake: GeminiFake) -> None:
    await contract.assert_server_error_retried(gemini_fake)


async def test_unavailable_retried(gemini_fake: GeminiFake) -> None:
    await contract.assert_overloaded_retried(gemini_fake)


async def test_auth_not_retried(gemini_fake: GeminiFake) -> None:
    await contract.assert_auth_not_retried(gemini_fake)


async def test_invalid_key_400_is_auth(gemini_fake: GeminiFake) -> None:
    gemini_fake.fail(400, code="API_KEY_INVALID", message="API key not valid.")
    with pytest.raises(BackendError) as caught:
        await model_for(gemini_fake).generate([Message.user("x")])
    assert caught.value.category is ErrorCategory.AUTH
    assert len(gemini_fake.requests) == 1


async def test_daily_quota_not_retried(gemini_fake: GeminiFake) -> None:
    await contract.assert_spend_limit_not_retried(gemini_fake)


async def test_timeout_bounded(gemini_fake: GeminiFake, caplog: pytest.LogCaptureFixture) -> None:
    await contract.assert_timeout_bounded(gemini_fake, caplog)


async def test_malformed_body(gemini_fake: GeminiFake) -> None:
    await contract.assert_malformed_detected(gemini_fake)


async def test_malformed_stream(gemini_fake: GeminiFake) -> None:
    await contract.assert_malformed_stream_detected(gemini_fake)


async def test_truncated_output(gemini_fake: GeminiFake) -> None:
    await contract.assert_truncation_reported(gemini_fake)


async def test_stream_retried_before_first_delta(gemini_fake: GeminiFake) -> None:
    await contract.assert_stream_error_before_first_delta_retried(gemini_fake)


async def test_blocked_prompt_is_content_filter(gemini_fake: GeminiFake) -> None:
    gemini_fake.fail(200, body={"promptFeedback": {"blockReason": "SAFETY"}})
    with pytest.raises(BackendError) as caught:
        await model_for(gemini_fake).generate([Message.user("x")])
    assert caught.value.category is ErrorCategory.CONTENT_FILTER
