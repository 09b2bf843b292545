import json
from decimal import Decimal

import pytest

from polymodal.backends.base import Capabilities, Completion, GenerateOptions, Usage
from polymodal.backends.testing import FakeChatModel
from polymodal.catalog.prices import Price
from polymodal.errors import ExtractionRejected, InputError
from polymodal.pipelines.extract import ExtractOptions, aextract, parse_json
from polymodal.samples import synthetic
from polymodal.schemas import Invoice, Receipt

GRAMMAR = Capabilities(images=False, structured="grammar")


@pytest.fixture
def invoice_pdf(tmp_path):
    doc = synthetic.invoice(11)
    path = tmp_path / "invoice.pdf"
    path.write_bytes(doc.pdf)
    return path, doc.label


@pytest.fixture
def receipt_png(tmp_path):
    doc = synthetic.receipt(5)
    path = tmp_path / "receipt.png"
    path.write_bytes(doc.png)
    return path, doc.label


async def test_valid_first_time_is_accepted_with_text_evidence(invoice_pdf):
    path, label = invoice_pdf
    fake = FakeChatModel([label], capabilities=GRAMMAR)
    result = await aextract(path, Invoice, fake)
    assert result.status == "accepted" and result.attempts == 1
    assert result.data is not None and result.data["invoice_number"] == label["invoice_number"]
    assert result.pages == 1 and len(result.content_hash) == 64
    sent = fake.calls[0]
    assert sent.schema is not None and sent.schema.name == "Invoice"  # no envelope for grammar-bound models
    assert sent.messages[1].images[0].text_hint and "INVOICE" in sent.messages[1].images[0].text_hint
    by_field = {e.field: e for e in result.evidence}
    assert by_field["invoice_number"].page == 1
    assert (
        by_field["invoice_number"].text is not None
        and label["invoice_number"] in by_field["invoice_number"].text
    )


async def test_invalid_then_valid_reask_carries_the_errors(receipt_png):
    path, label = receipt_png
    bad = dict(label, currency="dollars")
    fake = FakeChatModel([bad, label], capabilities=GRAMMAR)
    result = await aextract(path, Receipt, fake)
    assert result.accepted and result.attempts == 2
    reask = fake.calls[1].messages
    assert reask[-2].role == "assistant" and json.loads(reask[-2].text)["currency"] == "dollars"
    assert reask[-1].role == "user" and "currency" in reask[-1].text and "ISO 4217" in reask[-1].text


async def test_always_invalid_is_rejected_with_reasons(receipt_png):
    path, label = receipt_png
    fake = FakeChatModel(default=dict(label, total=-1), capabilities=GRAMMAR)
    result = await aextract(path, Receipt, fake, options=ExtractOptions(max_reasks=2))
    assert result.status == "rejected" and result.attempts == 3 and len(fake.calls) == 3
    assert result.value is None and result.data is None
    assert any("attempt 3" in e and "total" in e for e in result.errors)
    with pytest.raises(ExtractionRejected, match="rejected after 3 attempt"):
        result.raise_for_status()


async def test_not_json_and_fenced_json(receipt_png):
    path, label = receipt_png
    fake = FakeChatModel(
        ["sure! here it is", "```json\n" + json.dumps(label) + "\n```"], capabilities=GRAMMAR
    )
    result = await aextract(path, Receipt, fake)
    assert result.accepted and result.attempts == 2
    assert "not valid JSON" in fake.calls[1].messages[-1].text


async def test_truncated_output_reasks_with_more_tokens(receipt_png):
    path, label = receipt_png
    cut = Completion(text=json.dumps(label)[:40], finish_reason="length")
    fake = FakeChatModel([lambda call: cut, label], capabilities=GRAMMAR)
    options = ExtractOptions(generate=GenerateOptions(max_tokens=100))
    result = await aextract(path, Receipt, fake, options=options)
    assert result.accepted
    assert [c.options.max_tokens for c in fake.calls] == [100, 200]
    assert "cut off at the token limit (100 tokens)" in fake.calls[1].messages[-1].text


async def test_truncation_names_the_length_a_capped_backend_produced(receipt_png):
    """A local backend capping its answers below the asked budget: the error says what was produced."""
    path, label = receipt_png
    cut = Completion(text=json.dumps(label)[:40], finish_reason="length", usage=Usage(300, 512))
    fake = FakeChatModel([lambda call: cut] * 3, capabilities=GRAMMAR)
    result = await aextract(path, Receipt, fake)
    assert result.status == "rejected" and result.attempts == 3
    assert all("(512 tokens)" in e for e in result.errors)


async def test_vision_models_get_an_evidence_envelope(receipt_png):
    path, label = receipt_png
    answer = {
        "data": label,
        "evidence": [
            {"field": "total", "page": 1, "bbox": [10, 700, 400, 760]},
            {"field": "merchant", "page": 9, "bbox": None},
        ],
    }
    fake = FakeChatModel([answer])
    result = await aextract(path, Receipt, fake)
    assert result.accepted
    schema = fake.calls[0].schema
    assert schema is not None and set(schema.json_schema["properties"]) == {"data", "evidence"}
    assert "$defs" in schema.json_schema  # nested models' definitions hoisted to the envelope
    total = next(e for e in result.evidence if e.field == "total")
    assert total.origin == "model" and total.bbox == (10.0, 700.0, 400.0, 760.0)
    # page 9 does not exist: that claim is dropped (merchant has no text layer to fall back on for a PNG)
    assert all(e.page == 1 for e in result.evidence)


async def test_cost_from_price(receipt_png):
    path, label = receipt_png
    fake = FakeChatModel([Completion(text=json.dumps(label), usage=Usage(1000, 200))], capabilities=GRAMMAR)
    price = Price(Decimal("2"), Decimal("10"))
    result = await aextract(path, Receipt, fake, options=ExtractOptions(price=price))
    assert result.cost_usd == Decimal("0.004")
    assert result.usage.input_tokens == 1000


async def test_too_many_pages_for_the_model(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    for _ in range(3):
        pdf.add_page()
    path = tmp_path / "three.pdf"
    path.write_bytes(bytes(pdf.output()))
    fake = FakeChatModel(capabilities=Capabilities(max_images=2))
    with pytest.raises(InputError, match="max_images=2"):
        await aextract(path, Receipt, fake)
    assert fake.calls == []


async def test_unreadable_input_is_an_input_error(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.png"):
        await aextract(path, Receipt, FakeChatModel())


def test_parse_json_fence():
    assert parse_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json('{"a": 1}') == {"a": 1}
