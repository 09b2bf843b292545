from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from polymodal.backends.base import GenerateOptions
from polymodal.backends.messages import Message
from polymodal.backends.openai_compat import PROFILES, OpenAICompatChatModel
from polymodal.backends.registry import load_chat_model
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
from tests.fakes import OpenAIFake, json_reply


@pytest.fixture
def openai_api() -> Iterator[OpenAIFake]:
    """The fake posing as api.openai.com (``openai:`` ids: strict schemas, max_completion_tokens)."""
    with OpenAIFake(provider="openai") as fake:
        yield fake


async def test_openai_sends_strict_schema_image_and_token_cap(openai_api: OpenAIFake) -> None:
    openai_api.reply_json(INVOICE)
    model = model_for(openai_api)
    assert isinstance(model, OpenAICompatChatModel) and model.provider == "openai"

    completion = await model.generate(invoice_messages(), Invoice, GenerateOptions(max_tokens=300, seed=7))

    assert Invoice.model_validate_json(completion.text) == Invoice(**INVOICE)
    assert completion.finish_reason == "stop"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (11, 7)
    (request,) = openai_api.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test-key"
    body = request.json
    assert body["model"] == "test-model"
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body
    assert body["seed"] == 7 and body["temperature"] == 0
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Invoice" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["number", "total", "currency"]
    assert schema["additionalProperties"] is False
    assert "default" not in schema["properties"]["currency"]
    assert {"type": "null"} in schema["properties"]["currency"]["anyOf"]
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You extract invoices."}
    kinds = [part["type"] for part in user["content"]]
    assert kinds == ["text", "text", "image_url"]
    assert user["content"][1]["text"] == "[page 1]"
    url = user["content"][2]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert decoded_size(url.split(",", 1)[1]) == (64, 48)


async def test_reasoning_models_get_no_temperature(openai_api: OpenAIFake) -> None:
    openai_api.reply_text("ok")
    model = OpenAICompatChatModel(
        "gpt-5-mini", profile=PROFILES["openai"], base_url=openai_api.base_url, api_key="k", timeout=5
    )
    await model.generate([Message.user("hi")])
    await model.aclose()
    assert "temperature" not in openai_api.requests[0].json


async def test_compat_endpoint_sends_schema_as_given_and_jpeg(openai_fake: OpenAIFake) -> None:
    openai_fake.reply_json(INVOICE)
    await model_for(openai_fake).generate(invoice_messages(), Invoice, GenerateOptions(max_tokens=50))
    body = openai_fake.requests[0].json
    assert body["max_tokens"] == 50
    spec = body["response_format"]["json_schema"]
    assert spec["strict"] is False
    assert spec["schema"] == Invoice.model_json_schema()
    assert body["messages"][1]["content"][2]["image_url"]["url"].startswith("data:image/jpeg;base64,")


async def test_json_object_profile_puts_schema_in_prompt() -> None:
    with OpenAIFake(provider="together") as fake:
        fake.reply_json(INVOICE)
        await model_for(fake).generate(invoice_messages(), Invoice)
        body = fake.requests[0].json
    assert body["response_format"]["type"] == "json_object"
    assert body["response_format"]["schema"] == Invoice.model_json_schema()
    system = body["messages"][0]["content"]
    assert system.startswith("You extract invoices.")
    assert "JSON" in system and '"number"' in system


async def test_stream_requests_usage(openai_fake: OpenAIFake) -> None:
    await contract.assert_streams(openai_fake)
    body = openai_fake.requests[0].json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_profile_without_stream_usage_option() -> None:
    with OpenAIFake(provider="mistral") as fake:
        fake.reply_text("bonjour")
        deltas = [d async for d in model_for(fake).stream([Message.user("hi")])]
        assert "stream_options" not in fake.requests[0].json
    assert "".join(d.text for d in deltas) == "bonjour"
    assert deltas[-1].usage is None and deltas[-1].finish_reason == "stop"


async def test_rate_limit_honours_retry_after(
    openai_fake: OpenAIFake, caplog: pytest.LogCaptureFixture
) -> None:
    await contract.assert_rate_limit_honoured(openai_fake, caplog)


async def test_retry_after_ms_preferred(openai_fake: OpenAIFake, caplog: pytest.LogCaptureFixture) -> None:
    openai_fake.fail(429, headers={"retry-after-ms": "250", "Retry-After": "9"}).reply_text("ok")
    with caplog.at_level("WARNING", logger="polymodal.retry"):
        assert (await model_for(openai_fake).generate([Message.user("x")])).text == "ok"
    assert "retrying in 0.25s" in caplog.text


async def test_server_error_retried(openai_fake: OpenAIFake) -> None:
    await contract.assert_server_error_retried(openai_fake)


async def test_overloaded_retried(openai_fake: OpenAIFake) -> None:
    await contract.assert_overloaded_retried(openai_fake)


async def test_auth_not_retried(openai_fake: OpenAIFake) -> None:
    await contract.assert_auth_not_retried(openai_fake)


async def test_insufficient_quota_not_retried(openai_fake: OpenAIFake) -> None:
    await contract.assert_spend_limit_not_retried(openai_fake)


async def test_timeout_bounded(openai_fake: OpenAIFake, caplog: pytest.LogCaptureFixture) -> None:
    await contract.assert_timeout_bounded(openai_fake, caplog)


async def test_malformed_body(openai_fake: OpenAIFake) -> None:
    await contract.assert_malformed_detected(openai_fake)


async def test_malformed_stream(openai_fake: OpenAIFake) -> None:
    await contract.assert_malformed_stream_detected(openai_fake)


async def test_truncated_output(openai_fake: OpenAIFake) -> None:
    await contract.assert_truncation_reported(openai_fake)


async def test_stream_retried_before_first_delta(openai_fake: OpenAIFake) -> None:
    await contract.assert_stream_error_before_first_delta_retried(openai_fake)


async def test_context_length_is_permanent(openai_fake: OpenAIFake) -> None:
    openai_fake.fail(
        400, message="This model's maximum context length is 8192 tokens.", code="context_length_exceeded"
    )
    with pytest.raises(BackendError) as caught:
        await model_for(openai_fake).generate([Message.user("x")])
    assert caught.value.category is ErrorCategory.CONTEXT_LENGTH
    assert len(openai_fake.requests) == 1


async def test_refusal_is_content_filter(openai_fake: OpenAIFake) -> None:
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": "I can't"},
                "finish_reason": "stop",
            }
        ],
    }
    openai_fake.fail(200, body=body)
    with pytest.raises(BackendError) as caught:
        await model_for(openai_fake).generate([Message.user("x")])
    assert caught.value.category is ErrorCategory.CONTENT_FILTER


async def test_too_many_images_refused_before_sending(openai_fake: OpenAIFake) -> None:
    model = model_for(openai_fake)
    model.capabilities = PROFILES["lmstudio"].capabilities  # max 8 images
    images = [contract.red_image(8, 8) for _ in range(9)]
    with pytest.raises(BackendError) as caught:
        await model.generate([Message.user("x", *images)])
    assert caught.value.category is ErrorCategory.INVALID_REQUEST and caught.value.is_permanent
    assert openai_fake.requests == []


def test_generate_sync_twice_uses_fresh_loops(openai_fake: OpenAIFake) -> None:
    openai_fake.reply_text("one").reply_text("two")
    model = load_chat_model(openai_fake.model_id, openai_fake.settings)  # each call runs in its own loop
    assert model.generate_sync([Message.user("a")]).text == "one"
    assert model.generate_sync([Message.user("b")]).text == "two"


async def test_sixteen_concurrent_requests_overlap() -> None:
    with OpenAIFake(latency_s=0.3) as fake:
        fake.always(json_reply(INVOICE))
        model = model_for(fake)
        started = time.monotonic()
        results = await asyncio.gather(*(model.generate([Message.user("x")], Invoice) for _ in range(16)))
        elapsed = time.monotonic() - started
    assert all(Invoice.model_validate_json(r.text).total == 12.5 for r in results)
    assert len(fake.requests) == 16
    assert fake.max_in_flight >= 8, f"at most {fake.max_in_flight} requests overlapped"
    assert elapsed < 16 * 0.3, f"16 requests of 0.3 s took {elapsed:.2f} s: no faster than one by one"
