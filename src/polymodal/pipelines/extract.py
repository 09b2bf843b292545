"""OCR-free extraction: page images -> a chat model constrained to a schema -> validated Pydantic data.

``extract(source, Schema, model=...)`` renders the pages, sends them with the schema, parses and validates the
answer; on failure it re-asks with the validation errors appended (``max_reasks`` times, default 2), then
rejects with the reasons. Every call ends in one :class:`ExtractionResult`, accepted or rejected.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from polymodal.backends.base import ChatModel, Completion, GenerateOptions, OutputSchema, Usage
from polymodal.backends.messages import ImagePart, Message, Part, TextPart
from polymodal.backends.registry import load_chat_model
from polymodal.catalog.prices import Price, price_for
from polymodal.config import Settings, get_settings
from polymodal.errors import ExtractionRejected, InputError
from polymodal.media.document import Document, Page
from polymodal.media.limits import Limits
from polymodal.pipelines import _evidence
from polymodal.pipelines._evidence import FieldEvidence, LineSource

M = TypeVar("M", bound=BaseModel)
Status = Literal["accepted", "rejected"]
Source = str | Path | bytes

#: Bumped whenever prompts, built-in validation or a bundled backend's decoding change, so cached results of
#: an older version are not reused (2: offline grammar grounded in the page; receipts check items vs total).
PROMPT_VERSION = "2"
MAX_TOKENS_CEILING = 32_768

SYSTEM_PROMPT = (
    "You extract structured data from documents. Answer with JSON only, matching the given schema. "
    "Copy values exactly as printed; use null for anything not present and never invent values. "
    "Dates as YYYY-MM-DD, amounts as plain numbers without currency symbols, currencies as ISO 4217 codes."
)
EVIDENCE_PROMPT = (
    " Put the extracted object under `data`, and under `evidence` say for each field which page you read it "
    "from and, if you can, its bounding box in 0-1000 page coordinates."
)


@dataclass
class ExtractionResult(Generic[M]):
    """The outcome for one input: accepted with validated data, or rejected with the reasons."""

    source: str
    status: Status
    value: M | None = None
    errors: list[str] = field(default_factory=list)
    attempts: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = None
    latency_s: float = 0.0
    pages: int = 0
    model: str = ""
    content_hash: str = ""
    evidence: list[FieldEvidence] = field(default_factory=list)
    retryable: bool = False

    @property
    def data(self) -> dict[str, Any] | None:
        """The validated data as JSON-ready values (None when rejected)."""
        return None if self.value is None else self.value.model_dump(mode="json")

    @property
    def accepted(self) -> bool:
        """True when the data validated."""
        return self.status == "accepted"

    def raise_for_status(self) -> M:
        """Return the validated value, or raise :class:`ExtractionRejected` with the reasons."""
        if self.value is None:
            raise ExtractionRejected(
                self.source, attempts=self.attempts, errors=self.errors, usage=self.usage
            )
        return self.value

    def to_json(self) -> dict[str, Any]:
        """The record written to results.jsonl / rejects.jsonl and printed by ``--json``."""
        return {
            "source": self.source,
            "status": self.status,
            "data": self.data,
            "errors": self.errors,
            "attempts": self.attempts,
            "usage": {"input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens},
            "cost_usd": None if self.cost_usd is None else float(self.cost_usd),
            "latency_s": round(self.latency_s, 4),
            "pages": self.pages,
            "model": self.model,
            "content_hash": self.content_hash,
            "evidence": [e.to_json() for e in self.evidence],
            "retryable": self.retryable,
        }


def source_name(source: Source) -> str:
    """How a source is named in records and errors."""
    return "<bytes>" if isinstance(source, bytes) else str(source)


def resolve_model(model: str | ChatModel | None, settings: Settings) -> ChatModel:
    """A ChatModel from an id, an instance, or the configured default."""
    if model is None:
        return load_chat_model(settings.default_model, settings)
    if isinstance(model, str):
        return load_chat_model(model, settings)
    return model


async def close_if_owned(chat: ChatModel, given: str | ChatModel | None) -> None:
    """Close a backend this pipeline created from an id (a caller's own instance stays open)."""
    if not isinstance(given, str) and given is not None:
        return
    close = getattr(chat, "aclose", None)
    if close is not None:
        await close()


def model_id(model: ChatModel) -> str:
    """``provider:model`` of a backend."""
    return f"{model.provider}:{model.model}"


def wants_model_evidence(model: ChatModel, evidence: bool | None) -> bool:
    """Ask the model for evidence explicitly, or by default when it reads images and is not grammar-bound."""
    if evidence is not None:
        return evidence
    caps = model.capabilities
    return caps.images and caps.structured != "grammar"


def response_schema(schema: type[BaseModel], with_evidence: bool) -> OutputSchema:
    """The schema sent to the model: the user's, or an envelope ``{data, evidence}`` around it."""
    base = OutputSchema.from_model(schema)
    if not with_evidence:
        return base
    inner = dict(base.json_schema)
    defs = inner.pop("$defs", {})
    envelope: dict[str, Any] = {
        "title": f"{base.name}Extraction",
        "type": "object",
        "properties": {"data": inner, "evidence": _evidence.EVIDENCE_JSON_SCHEMA},
        "required": ["data", "evidence"],
        "additionalProperties": False,
    }
    if defs:
        envelope["$defs"] = defs
    return OutputSchema(name=f"{base.name}Extraction", json_schema=envelope, description=base.description)


def first_messages(
    pages: Sequence[Page], schema: type[BaseModel], with_evidence: bool, instructions: str | None
) -> list[Message]:
    """The opening conversation: instructions, then each page as a labelled image with its text layer."""
    system = SYSTEM_PROMPT + (EVIDENCE_PROMPT if with_evidence else "")
    if instructions:
        system += "\n" + instructions
    doc = (schema.__doc__ or "").strip()
    intro = (
        f"Extract one {schema.__name__}"
        + (f" ({doc})" if doc else "")
        + f" from this {len(pages)}-page document."
    )
    parts: list[Part] = [TextPart(intro)]
    parts += [ImagePart(page.image, text_hint=page.text, label=f"page {page.number}") for page in pages]
    return [Message.system(system), Message("user", tuple(parts))]


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_json(text: str) -> Any:
    """Parse a model's JSON answer, tolerating a Markdown code fence around it."""
    match = _FENCE.match(text)
    return json.loads(match.group(1) if match else text)


def format_validation_errors(error: ValidationError, prefix: str = "") -> list[str]:
    """Pydantic errors as short ``path: message`` lines a model (and a person) can act on."""
    lines = []
    for item in error.errors(include_url=False):
        loc = ".".join(str(p) for p in item["loc"]) or "(root)"
        got = json.dumps(item.get("input"), default=str)
        got = got if len(got) <= 80 else got[:77] + "..."
        lines.append(f"{prefix}{loc}: {item['msg']} (got {got})")
    return lines


@dataclass
class _Attempt:
    value: BaseModel | None
    errors: list[str]
    raw_evidence: Any = None


def check_answer(
    completion: Completion, schema: type[BaseModel], with_evidence: bool, max_tokens: int
) -> _Attempt:
    """Parse and validate one answer; say precisely what is wrong when it fails."""
    if completion.truncated:
        # the backend may cap lower than asked (small local models): name the length actually produced
        produced = completion.usage.output_tokens or max_tokens
        return _Attempt(
            None, [f"the answer was cut off at the token limit ({produced} tokens); answer more concisely"]
        )
    try:
        obj = parse_json(completion.text)
    except json.JSONDecodeError as exc:
        return _Attempt(None, [f"the answer is not valid JSON: {exc.msg} at position {exc.pos}"])
    raw_evidence = None
    if with_evidence:
        if not isinstance(obj, dict) or "data" not in obj:
            return _Attempt(None, ["the answer must be an object with `data` and `evidence`"])
        obj, raw_evidence = obj["data"], obj.get("evidence")
    try:
        return _Attempt(schema.model_validate(obj), [], raw_evidence)
    except ValidationError as exc:
        return _Attempt(None, format_validation_errors(exc, "data." if with_evidence else ""))


def reask_message(errors: list[str]) -> Message:
    """The follow-up turn that carries the validation errors back to the model."""
    bullet_list = "\n".join(f"- {e}" for e in errors)
    return Message.user(
        "Your previous answer failed validation:\n"
        f"{bullet_list}\n"
        "Look at the document again and answer with the whole corrected JSON object."
    )


@dataclass(frozen=True)
class ExtractOptions:
    """How :func:`aextract` behaves; the defaults suit most invoices and receipts."""

    max_reasks: int = 2
    evidence: bool | None = None
    instructions: str | None = None
    generate: GenerateOptions = field(default_factory=lambda: GenerateOptions(max_tokens=4096))
    price: Price | None = None
    line_source: LineSource | None = None


async def extract_pages(
    pages: Sequence[Page],
    schema: type[M],
    chat: ChatModel,
    *,
    source: str,
    content_hash: str = "",
    options: ExtractOptions | None = None,
) -> ExtractionResult[M]:
    """Run the ask -> validate -> re-ask loop over already rendered pages."""
    opts = options or ExtractOptions()
    started = time.perf_counter()
    with_evidence = wants_model_evidence(chat, opts.evidence)
    out_schema = response_schema(schema, with_evidence)
    messages = first_messages(pages, schema, with_evidence, opts.instructions)
    gen = opts.generate
    usage = Usage()
    errors: list[str] = []
    attempt = _Attempt(None, [])
    attempts = 0
    for attempts in range(1, opts.max_reasks + 2):
        completion = await chat.generate(messages, out_schema, gen)
        usage = usage + completion.usage
        attempt = check_answer(completion, schema, with_evidence, gen.max_tokens)
        if attempt.value is not None:
            break
        errors += [f"attempt {attempts}: {e}" for e in attempt.errors]
        if completion.truncated:
            gen = replace(gen, max_tokens=min(gen.max_tokens * 2, MAX_TOKENS_CEILING))
        messages = [*messages, Message.assistant(completion.text), reask_message(attempt.errors)]
    price = opts.price or price_for(chat.provider, chat.model)
    result: ExtractionResult[M] = ExtractionResult(
        source=source,
        status="accepted" if attempt.value is not None else "rejected",
        value=attempt.value,  # type: ignore[arg-type]
        errors=[] if attempt.value is not None else errors,
        attempts=attempts,
        usage=usage,
        cost_usd=None if price is None else price.cost(usage.input_tokens, usage.output_tokens),
        latency_s=time.perf_counter() - started,
        pages=len(pages),
        model=model_id(chat),
        content_hash=content_hash,
    )
    if attempt.value is not None:
        located = _evidence.locate(result.data, pages, opts.line_source or _evidence.text_layer_lines)
        result.evidence = _evidence.merge(_evidence.from_model(attempt.raw_evidence, len(pages)), located)
    return result


def render_pages(
    source: Source, limits: Limits, max_pixels: int | None, max_images: int | None
) -> tuple[Document, list[Page]]:
    """Open and render a document for a model's pixel budget and image count (raises InputError)."""
    document = Document.open(source, limits=limits)
    pages = document.pages(max_pixels=max_pixels)
    if max_images is not None and len(pages) > max_images:
        raise InputError(
            document.name,
            f"has {len(pages)} pages but the model accepts at most {max_images} images per request",
            limit=f"max_images={max_images}",
        )
    return document, pages


async def aextract(
    source: Source,
    schema: type[M],
    model: str | ChatModel | None = None,
    *,
    settings: Settings | None = None,
    limits: Limits | None = None,
    options: ExtractOptions | None = None,
) -> ExtractionResult[M]:
    """Extract one document (PDF, image, multi-page TIFF) into ``schema``.

    Raises :class:`~polymodal.errors.InputError` for unreadable input and
    :class:`~polymodal.errors.BackendError` when the model cannot be reached; a model answer that never
    validates is returned as a rejected result (``result.raise_for_status()`` turns it into an exception).
    """
    settings = settings or get_settings()
    chat = resolve_model(model, settings)
    try:
        caps = chat.capabilities
        document, pages = await asyncio.to_thread(
            render_pages, source, limits or settings.limits(), caps.max_image_pixels, caps.max_images
        )
        return await extract_pages(
            pages,
            schema,
            chat,
            source=source_name(source),
            content_hash=document.content_hash,
            options=options,
        )
    finally:
        await close_if_owned(chat, model)


def extract(
    source: Source,
    schema: type[M],
    model: str | ChatModel | None = None,
    *,
    settings: Settings | None = None,
    limits: Limits | None = None,
    options: ExtractOptions | None = None,
) -> ExtractionResult[M]:
    """Blocking :func:`aextract`.

    ``extract("invoice.pdf", Invoice, model="openai:gpt-5").raise_for_status()`` returns the validated model.
    """
    return asyncio.run(aextract(source, schema, model, settings=settings, limits=limits, options=options))


__all__ = [
    "PROMPT_VERSION",
    "ExtractOptions",
    "ExtractionResult",
    "aextract",
    "check_answer",
    "extract",
    "extract_pages",
    "format_validation_errors",
    "parse_json",
    "render_pages",
    "resolve_model",
    "response_schema",
]
