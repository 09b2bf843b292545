"""The extraction loop end to end through each remote provider's real adapter and a local wire server."""

import json

import pytest

from polymodal.backends.registry import load_chat_model
from polymodal.errors import BackendError, ErrorCategory
from polymodal.pipelines.extract import aextract
from polymodal.pipelines.extract_batch import aextract_many
from polymodal.samples import synthetic
from polymodal.schemas import Receipt
from tests.fakes import json_reply

LABEL = synthetic.receipt(4).label


def envelope(data):
    return {"data": data, "evidence": [{"field": "total", "page": 1, "bbox": [100, 800, 900, 860]}]}


@pytest.fixture
def receipt(tmp_path):
    path = tmp_path / "receipt.png"
    path.write_bytes(synthetic.receipt(4).png)
    return path


async def test_valid_first_time(fake_provider, receipt):
    fake_provider.reply_json(envelope(LABEL))
    result = await aextract(receipt, Receipt, load_chat_model(fake_provider.model_id, fake_provider.settings))
    assert result.accepted and result.attempts == 1 and len(fake_provider.requests) == 1
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert any(e.origin == "model" and e.field == "total" for e in result.evidence)
    sent = json.dumps(fake_provider.requests[0].json)
    assert "Receipt" in sent and "merchant" in sent  # the schema travelled with the request


async def test_invalid_then_valid_reask_carries_errors(fake_provider, receipt):
    fake_provider.reply_json(envelope(dict(LABEL, currency="dollars")))
    fake_provider.reply_json(envelope(LABEL))
    result = await aextract(receipt, Receipt, load_chat_model(fake_provider.model_id, fake_provider.settings))
    assert result.accepted and result.attempts == 2 and len(fake_provider.requests) == 2
    reask = json.dumps(fake_provider.requests[1].json)
    assert "failed validation" in reask and "data.currency" in reask and "ISO 4217" in reask


async def test_always_invalid_is_rejected(fake_provider, receipt):
    fake_provider.always(json_reply(envelope(dict(LABEL, total=-5))))
    result = await aextract(receipt, Receipt, load_chat_model(fake_provider.model_id, fake_provider.settings))
    assert result.status == "rejected" and result.attempts == 3 and len(fake_provider.requests) == 3
    assert all("total" in e for e in result.errors)


async def test_auth_error_is_not_retried_and_rejects_the_batch(fake_provider, receipt, tmp_path):
    fake_provider.fail(401)
    with pytest.raises(BackendError) as caught:
        await aextract(receipt, Receipt, load_chat_model(fake_provider.model_id, fake_provider.settings))
    assert caught.value.category is ErrorCategory.AUTH and len(fake_provider.requests) == 1
    fake_provider.fail(401)
    model = load_chat_model(fake_provider.model_id, fake_provider.settings)
    summary = await aextract_many(
        [receipt, receipt], Receipt, model, out_dir=tmp_path / "o", progress=False, concurrency=1
    )
    assert summary.rejected == 2 and all(r["retryable"] for r in summary.records)
    assert len(fake_provider.requests) == 2  # the second document was not sent after the auth failure


async def test_cut_by_max_tokens_then_complete(fake_provider, receipt):
    fake_provider.truncated(json.dumps(envelope(LABEL))[:30])
    fake_provider.reply_json(envelope(LABEL))
    result = await aextract(receipt, Receipt, load_chat_model(fake_provider.model_id, fake_provider.settings))
    assert result.accepted and result.attempts == 2
