"""Schema-constrained decoding for transformers models, built on llguidance.

A JSON schema is compiled (once per tokenizer and schema) into a grammar; during generation a
:class:`GrammarLogitsProcessor` masks every token the grammar does not allow next, so the output is JSON that
satisfies the schema by construction. End-of-sequence is allowed only once the JSON is complete, and JSON
whitespace between tokens is switched off by default (compact JSON), so a small model cannot loop on blanks.

llguidance won a measured comparison against xgrammar on the same tokenizers and schemas
(``benchmarks/constrained_bench.py``; figures and reasons in ``docs/benchmarks/local.md``)::

    constraint = SchemaConstraint.from_json_schema(Invoice.model_json_schema(), tokenizer)
    processor = constraint.logits_processor()
    out = model.generate(**inputs, logits_processor=LogitsProcessorList([processor]), max_new_tokens=512)
    processor.raise_if_failed()
"""

from __future__ import annotations

import copy
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llguidance
import llguidance.hf
import numpy as np
import torch
from transformers import LogitsProcessor

from polymodal.backends._schema import walk_objects

#: How many compiled schemas are kept per tokenizer.
GRAMMAR_CACHE_SIZE = 64


class ConstraintError(ValueError):
    """The schema cannot be compiled into a grammar, or decoding left the grammar (a bug, never expected).

    Backends translate it into :class:`~polymodal.errors.BackendError` in their one error-mapping place.
    """


@dataclass(frozen=True)
class WhitespaceOptions:
    """How much JSON whitespace the grammar permits between tokens.

    The default, ``flexible=False``, allows none (compact JSON): a small model then cannot spend its token
    budget on blanks and newlines. ``pattern`` (a regex such as ``r"[ \\n]{0,2}"``) bounds it instead.
    """

    flexible: bool = False
    pattern: str | None = None

    def compile_options(self) -> dict[str, Any]:
        """The llguidance JSON compiler options these settings stand for."""
        options: dict[str, Any] = {"whitespace_flexible": self.flexible}
        if self.pattern is not None:
            options["whitespace_pattern"] = self.pattern
        return options


def close_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` where every object without ``additionalProperties`` forbids unknown keys.

    Pydantic schemas leave ``additionalProperties`` unset (meaning: anything goes), which would let a model
    invent keys; extraction wants exactly the declared fields.
    """
    result = copy.deepcopy(schema)
    for node in walk_objects(result):
        is_object = node.get("type") == "object" or "properties" in node
        if is_object and "additionalProperties" not in node and "patternProperties" not in node:
            node["additionalProperties"] = False
    return result


class _TokenizerGrammars:
    """llguidance's view of one tokenizer plus its compiled grammars (LRU)."""

    def __init__(self, ll_tokenizer: llguidance.LLTokenizer) -> None:
        self.ll_tokenizer = ll_tokenizer
        self.grammars: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()


_cache_lock = threading.Lock()
_tokenizers: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], _TokenizerGrammars]] = (
    weakref.WeakKeyDictionary()
)


def _tokenizer_grammars(tokenizer: Any, eos_token_ids: tuple[int, ...]) -> _TokenizerGrammars:
    """The cached llguidance tokenizer for ``tokenizer`` (building it takes about a second)."""
    with _cache_lock:
        per_eos = _tokenizers.setdefault(tokenizer, {})
        entry = per_eos.get(eos_token_ids)
        if entry is None:
            try:
                ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, eos_token=list(eos_token_ids))
            except ValueError as exc:  # a slow (Python) tokenizer
                raise ConstraintError(f"constrained decoding needs a fast tokenizer: {exc}") from exc
            entry = per_eos[eos_token_ids] = _TokenizerGrammars(ll_tokenizer)
        return entry


def _eos_ids(tokenizer: Any, eos_token_ids: Sequence[int] | int | None) -> tuple[int, ...]:
    if eos_token_ids is None:
        eos_token_ids = tokenizer.eos_token_id
    if eos_token_ids is None:
        raise ConstraintError("the tokenizer has no end-of-sequence token; pass eos_token_ids")
    ids = [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids)
    return tuple(sorted(set(ids)))


class SchemaConstraint:
    """A JSON schema compiled for one tokenizer; hands out a fresh logits processor per generation."""

    def __init__(self, template: llguidance.LLMatcher, vocab_size: int, eos_token_ids: tuple[int, ...]):
        self._template = template
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids

    @classmethod
    def from_json_schema(
        cls,
        schema: dict[str, Any],
        tokenizer: Any,
        *,
        eos_token_ids: Sequence[int] | int | None = None,
        whitespace: WhitespaceOptions | None = None,
        strict: bool = True,
    ) -> SchemaConstraint:
        """Compile ``schema`` for ``tokenizer`` (a fast Hugging Face tokenizer), reusing earlier compilations.

        ``eos_token_ids`` are the tokens that end generation (default: the tokenizer's EOS; pass the model's
        ``generation_config.eos_token_id`` when it lists several). ``strict`` closes objects to undeclared
        keys (:func:`close_objects`). Raises :class:`ConstraintError` for a schema llguidance cannot compile.
        """
        eos = _eos_ids(tokenizer, eos_token_ids)
        ws = whitespace or WhitespaceOptions()
        prepared = close_objects(schema) if strict else schema
        key = json.dumps([prepared, ws.compile_options()], sort_keys=True)
        entry = _tokenizer_grammars(tokenizer, eos)
        with _cache_lock:
            template = entry.grammars.get(key)
            if template is not None:
                entry.grammars.move_to_end(key)
        if template is None:
            template = _compile(prepared, entry.ll_tokenizer, ws)
            with _cache_lock:
                entry.grammars[key] = template
                while len(entry.grammars) > GRAMMAR_CACHE_SIZE:
                    entry.grammars.popitem(last=False)
        return cls(template, entry.ll_tokenizer.vocab_size, eos)

    def logits_processor(self) -> GrammarLogitsProcessor:
        """A processor for one generation (it tracks that generation's progress through the grammar)."""
        return GrammarLogitsProcessor(self._template.deep_copy(), self.vocab_size, self.eos_token_ids)

    def validates(self, token_ids: Sequence[int]) -> bool:
        """True when ``token_ids`` form a complete answer the grammar accepts (for tests and benchmarks)."""
        matcher = self._template.deep_copy()
        body = [t for t in token_ids if t not in self.eos_token_ids]
        return matcher.consume_tokens(body) and matcher.is_accepting()


def _compile(schema: dict[str, Any], ll_tokenizer: llguidance.LLTokenizer, ws: WhitespaceOptions) -> Any:
    try:
        options: Any = ws.compile_options()
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=options)
    except ValueError as exc:
        raise ConstraintError(f"not a JSON schema: {exc}") from exc
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, ll_tokenizer)
    if is_error:
        raise ConstraintError(f"schema cannot be enforced: {messages[0] if messages else 'unknown error'}")
    matcher = llguidance.LLMatcher(ll_tokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise ConstraintError(f"schema cannot be enforced: {matcher.get_error()}")
    return matcher


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks the logits of every token the grammar forbids next (batch size 1).

    The first call sees the prompt; each later call first feeds the previously sampled token to the grammar.
    Once the JSON is complete only end-of-sequence stays allowed. Should the grammar ever reject a token (it
    cannot, short of a bug), the processor records the error, forces end-of-sequence, and
    :meth:`raise_if_failed` reports it after generation.
    """

    def __init__(
        self, matcher: llguidance.LLMatcher, vocab_size: int, eos_token_ids: tuple[int, ...]
    ) -> None:
        self._matcher = matcher
        self._vocab_size = vocab_size
        self._eos_token_ids = list(eos_token_ids)
        self._words = np.full((vocab_size + 31) // 32, -1, dtype=np.int32)
        self._prompt_length: int | None = None
        self.error: str | None = None

    @property
    def is_complete(self) -> bool:
        """True when the tokens so far form JSON the schema accepts."""
        return bool(self._matcher.is_accepting())

    def raise_if_failed(self) -> None:
        """Raise :class:`ConstraintError` when decoding left the grammar."""
        if self.error is not None:
            raise ConstraintError(self.error)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Feed the last sampled token to the grammar and mask ``scores`` in place."""
        if input_ids.shape[0] != 1:
            raise ConstraintError("constrained decoding supports one sequence at a time")
        if self._prompt_length is None:
            self._prompt_length = int(input_ids.shape[1])
        elif self.error is None and not self._matcher.consume_token(int(input_ids[0, -1])):
            self.error = f"the grammar rejected a sampled token: {self._matcher.get_error()}"
        if self.error is None:
            self._matcher.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
            allowed = np.unpackbits(self._words.view(np.uint8), bitorder="little")[: self._vocab_size]
        else:
            allowed = np.zeros(self._vocab_size, dtype=np.uint8)
            allowed[self._eos_token_ids] = 1
        forbidden = torch.from_numpy(allowed == 0).to(scores.device)
        width = min(self._vocab_size, scores.shape[-1])
        scores[:, :width].masked_fill_(forbidden[:width], float("-inf"))
        if scores.shape[-1] > self._vocab_size:  # padded embedding rows are never real tokens
            scores[:, self._vocab_size :] = float("-inf")
        return scores


__all__ = [
    "GRAMMAR_CACHE_SIZE",
    "ConstraintError",
    "GrammarLogitsProcessor",
    "SchemaConstraint",
    "WhitespaceOptions",
    "close_objects",
]
