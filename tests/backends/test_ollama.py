from __future__ import annotations

import json

import pytest

from polymodal.backends.base import GenerateOptions
from polymodal.backends.messages import Message
from polymodal.backends.ollama import OllamaChatModel
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
from tests.fakes import OllamaFake


class Line(Invoice):
    """An invoice with a nested reference (to check $ref inlining)."""

    parent: Invoice | None = None


async def test_format_images_and_num_predict_sent(ollama_fake: OllamaFake) -> None:
    ollama_fake.reply_json(INVOICE)
    model = model_for(ollama_fake)
    assert isinstance(model, OllamaChatModel) and model.model == "test-vlm:7b"

    completion = await model.generate(invoice_messages(), Invoice, GenerateOptions(max_tokens=64, seed=1))

    assert json.loads(completion.text) == INVOICE
    assert completion.finish_reason == "stop"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (11, 7)
    (request,) = ollama_fake.requests
    assert request.path == "/api/chat"
    body = request.json
    assert body["model"] == "test-vlm:7b" and body["stream"] is False
    assert body["options"] == {"num_predict": 64, "temperature": 0.0, "seed": 1}
    assert body["format"] == Invoice.model_json_schema()
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You extract invoices."}
    assert user["content"] == "Read this invoice.\n\n[page 1: image 1]"
    (image,) = user["images"]
    assert decoded_size(image) == (64, 48)


async def test_refs_are_inlined_in_format(ollama_fake: OllamaFake) -> None:
    ollama_fake.reply_json(INVOICE)
    await model_for(ollama_fake).generate([Message.user("x")], Line)
    fmt = ollama_fake.requests[0].json["format"]
    assert "$defs" not in fmt and '"$ref"' not in json.dumps(fmt)
    nested = fmt["properties"]["parent"]["anyOf"][0]
    assert nested["properties"]["number"] == {"title": "Number", "type": "string"}


async def test_stream_ndjson(ollama_fake: OllamaFake) -> None:
    await contract.assert_streams(ollama_fake)
    assert ollama_fake.requests[0].json["stream"] is True


async def test_error_line_inside_stream(ollama_fake: OllamaFake) -> None:
    ollama_fake.fail(200, body={"error": "model runner crashed"})
    ollama_fake.fail(200, body={"error": "model runner crashed"})
    ollama_fake.fail(200, body={"error": "model runner crashed"})
    with pytest.raises(BackendError) as caught:
        _ = [d async for d in model_for(ollama_fake).stream([Message.user("x")])]
    assert caught.value.category is ErrorCategory.SERVER
    assert "model runner crashed" in str(caught.value)


async def test_rate_limit_honours_retry_after(
    ollama_fake: OllamaFake, caplog: pytest.LogCaptureFixture
) -> None:
    await contract.assert_rate_limit_honoured(ollama_fake, caplog)


async def test_server_error_retried(ollama_fake: OllamaFake) -> None:
    await contract.assert_server_error_retried(ollama_fake)


async def test_auth_not_retried(ollama_fake: OllamaFake) -> None:
    await contract.assert_auth_not_retried(ollama_fake)


async def test_missing_model_names_the_pull_command(ollama_fake: OllamaFake) -> None:
    ollama_fake.fail(404, message='model "test-vlm:7b" not found, try pulling it first')
    with pytest.raises(BackendError) as caught:
        await model_for(ollama_fake).generate([Message.user("x")])
    assert caught.value.category is ErrorCategory.NOT_FOUND
    assert "ollama pull test-vlm:7b" in str(caught.value)
    assert len(ollama_fake.requests) == 1


async def test_timeout_bounded(ollama_fake: OllamaFake, caplog: pytest.LogCaptureFixture) -> None:
    await contract.assert_timeout_bounded(ollama_fake, caplog)


async def test_malformed_body(ollama_fake: OllamaFake) -> None:
    await contract.assert_malformed_detected(ollama_fake)


async def test_malformed_stream(ollama_fake: OllamaFake) -> None:
    await contract.assert_malformed_stream_detected(ollama_fake)


async def test_truncated_output(ollama_fake: OllamaFake) -> None:
    await contract.assert_truncation_reported(ollama_fake)


async def test_stream_retried_before_first_delta(ollama_fake: OllamaFake) -> None:
    await contract.assert_stream_error_before_first_delta_retried(ollama_fake)


async def test_unreachable_host_is_connection_error() -> None:
    model = OllamaChatModel("m", host="http://127.0.0.1:9", timeout=2)
    model.retry = model.retry.__class__(max_attempts=1)
    with pytest.raises(BackendError) as caught:
        await model.generate([Message.user("x")])
    assert caught.value.category is ErrorCategory.CONNECTION
    assert "ollama serve" in str(caught.value)
