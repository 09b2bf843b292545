"""Grammar-constrained decoding: masks, EOS only on complete JSON, bounded whitespace, caching."""

from __future__ import annotations

import datetime
import json
import math
from typing import Literal

import pytest
import torch
from pydantic import BaseModel

from polymodal.backends.constrained import (
    ConstraintError,
    SchemaConstraint,
    WhitespaceOptions,
    close_objects,
)
from tests.backends.tiny_models import byte_level_tokenizer


class Item(BaseModel):
    description: str
    quantity: int


class Invoice(BaseModel):
    vendor: str
    date: datetime.date
    currency: Literal["USD", "EUR"]
    note: str | None = None
    items: list[Item]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return byte_level_tokenizer()


def _allowed(processor, prefix_ids: list[int], vocab: int) -> set[int]:  # type: ignore[no-untyped-def]
    """Feed ``prefix_ids`` one by one (as generate would) and return the tokens allowed next."""
    prompt = [0]
    scores = torch.zeros(1, vocab)
    processor(torch.tensor([prompt]), scores)
    for token in prefix_ids:
        prompt.append(token)
        scores = torch.zeros(1, vocab)
        processor(torch.tensor([prompt]), scores)
    return {i for i in range(vocab) if not math.isinf(float(scores[0, i]))}


def _greedy_random(constraint: SchemaConstraint, vocab: int, steps: int, seed: int) -> list[int]:
    """Sample from random logits under the mask: a stand-in for a model that knows nothing."""
    generator = torch.Generator().manual_seed(seed)
    processor = constraint.logits_processor()
    ids = [0]
    for _ in range(steps):
        scores = torch.randn(1, vocab, generator=generator)
        processor(torch.tensor([ids]), scores)
        token = int(torch.argmax(scores))
        ids.append(token)
        if token in constraint.eos_token_ids:
            break
    processor.raise_if_failed()
    return ids[1:]


def test_random_logits_under_the_mask_give_schema_valid_json(tokenizer) -> None:  # type: ignore[no-untyped-def]
    constraint = SchemaConstraint.from_json_schema(Invoice.model_json_schema(), tokenizer)
    finished = 0
    for seed in range(4):
        tokens = _greedy_random(constraint, len(tokenizer), steps=600, seed=seed)
        if tokens and tokens[-1] in constraint.eos_token_ids:
            finished += 1
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            Invoice.model_validate_json(text)
            assert constraint.validates(tokens)
    assert finished >= 1


def test_eos_only_allowed_once_json_is_complete(tokenizer) -> None:  # type: ignore[no-untyped-def]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    constraint = SchemaConstraint.from_json_schema(schema, tokenizer)
    eos = tokenizer.eos_token_id
    vocab = len(tokenizer)
    incomplete = tokenizer.encode('{"a":1', add_special_tokens=False)
    assert eos not in _allowed(constraint.logits_processor(), incomplete, vocab)
    complete = tokenizer.encode('{"a":12}', add_special_tokens=False)
    assert _allowed(constraint.logits_processor(), complete, vocab) == {eos}


def test_whitespace_is_off_by_default_and_bounded_when_enabled(tokenizer) -> None:  # type: ignore[no-untyped-def]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    space = tokenizer.encode(" ", add_special_tokens=False)
    brace = tokenizer.encode("{", add_special_tokens=False)
    vocab = len(tokenizer)
    compact = SchemaConstraint.from_json_schema(schema, tokenizer)
    assert not set(space) & _allowed(compact.logits_processor(), brace, vocab)
    bounded = SchemaConstraint.from_json_schema(
        schema, tokenizer, whitespace=WhitespaceOptions(True, r"[ ]{0,2}")
    )
    assert set(space) <= _allowed(bounded.logits_processor(), brace, vocab)
    assert not set(space) & _allowed(bounded.logits_processor(), brace + space + space, vocab)


def test_undeclared_keys_are_refused_unless_not_strict(tokenizer) -> None:  # type: ignore[no-untyped-def]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    extra = tokenizer.encode('{"zzz":1}', add_special_tokens=False)
    assert not SchemaConstraint.from_json_schema(schema, tokenizer).validates(extra)
    assert SchemaConstraint.from_json_schema(schema, tokenizer, strict=False).validates(extra)


def test_close_objects_does_not_mutate_and_reaches_defs() -> None:
    schema = Invoice.model_json_schema()
    closed = close_objects(schema)
    assert "additionalProperties" not in schema
    assert closed["additionalProperties"] is False
    assert closed["$defs"]["Item"]["additionalProperties"] is False


def test_compiled_grammar_is_cached_per_tokenizer_and_schema(tokenizer) -> None:  # type: ignore[no-untyped-def]
    schema = Invoice.model_json_schema()
    first = SchemaConstraint.from_json_schema(schema, tokenizer)
    second = SchemaConstraint.from_json_schema(json.loads(json.dumps(schema)), tokenizer)
    assert first._template is second._template
    other = SchemaConstraint.from_json_schema({"type": "integer"}, tokenizer)
    assert other._template is not first._template


def test_padded_vocab_rows_are_masked(tokenizer) -> None:  # type: ignore[no-untyped-def]
    constraint = SchemaConstraint.from_json_schema({"type": "boolean"}, tokenizer)
    scores = torch.zeros(1, len(tokenizer) + 64)
    constraint.logits_processor()(torch.tensor([[0]]), scores)
    assert torch.isinf(scores[0, len(tokenizer) :]).all()
    assert (~torch.isinf(scores[0])).sum() >= 2  # "t" / "f" (or longer) starts


def test_invalid_schema_raises_constraint_error(tokenizer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConstraintError):
        SchemaConstraint.from_json_schema(
            {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}, tokenizer
        )


def test_batches_are_refused(tokenizer) -> None:  # type: ignore[no-untyped-def]
    processor = SchemaConstraint.from_json_schema({"type": "boolean"}, tokenizer).logits_processor()
    with pytest.raises(ConstraintError):
        processor(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, len(tokenizer)))
