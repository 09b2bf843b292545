from decimal import Decimal

import pytest
from pydantic import ValidationError

from polymodal.errors import ConfigError
from polymodal.samples import synthetic
from polymodal.schemas import Invoice, Receipt, iban_is_valid, resolve_schema


def _invoice(**changes):
    data = synthetic.invoice(3).label
    data.update(changes)
    return data


def test_synthetic_labels_validate():
    for seed in range(10):
        Invoice.model_validate(synthetic.invoice(seed).label)
        Receipt.model_validate(synthetic.receipt(seed).label)


def test_line_items_must_sum_to_subtotal():
    data = _invoice()
    data["line_items"][0]["amount"] += 10
    data["line_items"][0]["unit_price"] = None
    with pytest.raises(ValidationError, match="line items sum to"):
        Invoice.model_validate(data)


def test_subtotal_plus_tax_must_equal_total():
    with pytest.raises(ValidationError, match=r"subtotal .* \+ tax .* != total"):
        Invoice.model_validate(_invoice(total=1.0))


def test_quantity_times_price_checked():
    data = _invoice()
    data["line_items"][0]["quantity"] = 999
    with pytest.raises(ValidationError, match="quantity x unit_price"):
        Invoice.model_validate(data)


@pytest.mark.parametrize("code", ["XYZ", "$", "dollars", "US"])
def test_currency_must_be_iso_4217(code):
    with pytest.raises(ValidationError, match="ISO 4217"):
        Invoice.model_validate(_invoice(currency=code))


@pytest.mark.parametrize(("given", "expected"), [("eur", "EUR"), ("€", "EUR"), ("£", "GBP")])
def test_currency_normalised(given, expected):
    assert Invoice.model_validate(_invoice(currency=given)).currency == expected


@pytest.mark.parametrize("text", ["03/04/2026", "31-31-2026", "yesterday"])
def test_unparseable_or_ambiguous_dates_rejected(text):
    with pytest.raises(ValidationError, match="date"):
        Invoice.model_validate(_invoice(issue_date=text, due_date=None))


def test_written_dates_parsed():
    inv = Invoice.model_validate(_invoice(issue_date="5 March 2025", due_date="April 4, 2025"))
    assert inv.issue_date.isoformat() == "2025-03-05"
    assert inv.due_date is not None and inv.due_date.isoformat() == "2025-04-04"


def test_due_before_issue_rejected():
    with pytest.raises(ValidationError, match="before issue_date"):
        Invoice.model_validate(_invoice(issue_date="2025-05-01", due_date="2025-04-01"))


def test_iban_checksum():
    assert iban_is_valid("GB29 NWBK 6016 1331 9268 19")
    assert not iban_is_valid("GB29NWBK60161331926818")
    with pytest.raises(ValidationError, match="IBAN checksum"):
        Invoice.model_validate(_invoice(iban="DE89370400440532013001"))
    assert (
        Invoice.model_validate(_invoice(iban="de89 3704 0044 0532 0130 00")).iban == "DE89370400440532013000"
    )


@pytest.mark.parametrize(
    ("text", "value"), [("1,234.50", "1234.50"), ("1.234,50", "1234.50"), ("€12,00", "12.00")]
)
def test_money_strings_parsed(text, value):
    r = Receipt.model_validate({"merchant": "m", "date": "2025-01-01", "currency": "EUR", "total": text})
    assert r.total == Decimal(value)


def test_money_serialises_as_json_numbers():
    r = Receipt.model_validate({"merchant": "m", "date": "2025-01-01", "currency": "EUR", "total": "12.5"})
    assert r.model_dump(mode="json")["total"] == 12.5


def test_receipt_totals_checked():
    data = synthetic.receipt(1).label
    data["tax"] = data["tax"] + 1
    with pytest.raises(ValidationError, match="subtotal"):
        Receipt.model_validate(data)


def test_resolve_schema(tmp_path):
    assert resolve_schema("invoice") is Invoice
    assert resolve_schema("polymodal.schemas:Receipt") is Receipt
    path = tmp_path / "my_schema.py"
    path.write_text("from pydantic import BaseModel\nclass Ticket(BaseModel):\n    code: str\n")
    assert resolve_schema(f"{path}:Ticket").__name__ == "Ticket"
    with pytest.raises(ConfigError, match="unknown schema"):
        resolve_schema("bogus")
    with pytest.raises(ConfigError, match="BaseModel"):
        resolve_schema("polymodal.schemas:iban_is_valid")


def test_receipt_without_subtotal_checks_items_plus_tax_against_total() -> None:
    base = {"merchant": "m", "date": "2025-01-01", "currency": "USD"}
    items = [{"description": "a", "amount": "4.08"}, {"description": "b", "amount": "6.32"}]
    Receipt.model_validate({**base, "items": items, "tax": "0.83", "total": "11.23"})
    Receipt.model_validate({**base, "items": items, "total": "10.40"})
    with pytest.raises(ValueError, match=r"items sum to 10\.40 \+ tax 8 but total = 11\.23"):
        Receipt.model_validate({**base, "items": items, "tax": "8", "total": "11.23"})
    with pytest.raises(ValueError, match=r"items sum to 20\.80 but total = 10\.40"):
        Receipt.model_validate({**base, "items": items * 2, "total": "10.40"})
