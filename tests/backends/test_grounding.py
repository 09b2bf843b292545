"""Document-grounded schemas: values offered are those the page prints; the grammar still compiles."""

from __future__ import annotations

import json
import math

import torch

from polymodal.backends.constrained import SchemaConstraint
from polymodal.backends.grounding import (
    count_number_lines,
    document_dates,
    document_numbers,
    document_strings,
    ground_schema,
    parse_number,
)
from polymodal.pipelines.extract import response_schema
from polymodal.schemas import Invoice, Receipt
from tests.backends.tiny_models import byte_level_tokenizer

RECEIPT_TEXT = """GREEN GROCER
Date: 2025-04-07
Water 1.5L  $  4.08
Apples 1kg  $  1,019.91
Apples 1kg  $  17.04
Subtotal  $  1,041.03
Tax 8%  $  83.28
TOTAL  $  1,124.31
Thank you!"""


def test_numbers_are_read_in_both_decimal_conventions() -> None:
    assert parse_number("1,234.50") == 1234.5
    assert parse_number("1.234,50") == 1234.5
    assert parse_number("-3") == -3
    assert parse_number("4.608") == 4608  # three digits after the mark: a thousands separator
    numbers = document_numbers(RECEIPT_TEXT)
    for value in (4.08, 1019.91, 17.04, 1041.03, 83.28, 1124.31, 8):
        assert value in numbers
    assert len(numbers) == len(set(numbers))


def test_percentages_are_offered_only_to_rate_fields() -> None:
    assert 8 in document_numbers(RECEIPT_TEXT)
    assert 8 not in document_numbers(RECEIPT_TEXT, percentages=False)
    schema = {
        "type": "object",
        "properties": {
            "tax": {"type": "number", "description": "Tax amount"},
            "tax_rate": {"type": "number", "title": "Tax rate"},
        },
    }
    grounded = ground_schema(schema, RECEIPT_TEXT)["properties"]
    assert 8 not in grounded["tax"]["enum"] and 83.28 in grounded["tax"]["enum"]
    assert 8 in grounded["tax_rate"]["enum"]


def test_dates_are_normalised_to_iso() -> None:
    text = "Issued March 5, 2025 - due 5 April 2025 (05/03/2025), printed 2025-13-40"
    assert document_dates(text) == ["2025-03-05", "2025-04-05"]  # the impossible date is dropped


def test_strings_are_lines_columns_and_label_values() -> None:
    strings = document_strings(RECEIPT_TEXT)
    assert "GREEN GROCER" in strings
    assert "Apples 1kg" in strings and strings.count("Apples 1kg") == 1
    assert "2025-04-07" in strings  # the value after "Date:"
    assert "$" not in strings
    assert count_number_lines(RECEIPT_TEXT) == 7


def test_receipt_schema_is_grounded_and_the_rest_kept() -> None:
    schema = Receipt.model_json_schema()
    grounded = ground_schema(schema, RECEIPT_TEXT)
    props = grounded["properties"]
    assert props["merchant"]["enum"][0] == "GREEN GROCER"
    assert props["date"]["enum"] == ["2025-04-07"]
    assert props["currency"] == schema["properties"]["currency"]  # a pattern is already a constraint
    assert 1124.31 in props["total"]["enum"]
    assert {"type": "null"} in props["tax"]["anyOf"]  # optional numbers stay optional
    assert props["items"]["maxItems"] == 7
    item = grounded["$defs"]["ReceiptItem"]["properties"]
    assert "Apples 1kg" in item["description"]["enum"] and 17.04 in item["amount"]["enum"]
    # line items are table rows: their text comes from lines holding a number, not the shop's name
    assert "GREEN GROCER" not in item["description"]["enum"]
    assert "Thank you!" not in item["description"]["enum"]
    assert schema["properties"]["total"] == {
        "description": "Amount paid.",
        "title": "Total",
        "type": "number",
    }


def test_nothing_to_ground_leaves_the_schema_and_evidence_envelopes_alone() -> None:
    schema = Receipt.model_json_schema()
    blank = ground_schema(schema, "")
    assert blank["properties"]["total"] == schema["properties"]["total"]
    envelope = response_schema(Invoice, with_evidence=True).json_schema
    assert ground_schema(envelope, RECEIPT_TEXT) == envelope


def test_grounded_grammar_compiles_and_only_admits_printed_values() -> None:
    tokenizer = byte_level_tokenizer()
    grounded = ground_schema(Receipt.model_json_schema(), RECEIPT_TEXT)
    constraint = SchemaConstraint.from_json_schema(grounded, tokenizer)
    good = {"merchant": "GREEN GROCER", "date": "2025-04-07", "currency": "USD", "total": 1124.31}
    bad = {**good, "total": 1124.32}
    assert constraint.validates(tokenizer.encode(json.dumps(good, separators=(",", ":"))))
    assert not constraint.validates(tokenizer.encode(json.dumps(bad, separators=(",", ":"))))
    # random logits under the mask still end in a document value
    processor = constraint.logits_processor()
    generator = torch.Generator().manual_seed(0)
    ids = [0]
    for _ in range(400):
        scores = torch.randn(1, len(tokenizer), generator=generator)
        processor(torch.tensor([ids]), scores)
        assert not math.isinf(float(scores.max()))
        token = int(torch.argmax(scores))
        ids.append(token)
        if token in constraint.eos_token_ids:
            break
    text = tokenizer.decode(ids[1:], skip_special_tokens=True)
    if ids[-1] in constraint.eos_token_ids:
        answer = json.loads(text)
        assert answer["total"] in document_numbers(RECEIPT_TEXT)
        assert len(answer.get("items", [])) <= 7
