"""Answers with page citations: retrieve pages, show them to any ChatModel, keep only valid citations.

The model gets each retrieved page as an image labelled ``report.pdf p.12`` (with the page's text as a hint
for text-only models) and must answer in the :class:`GroundedAnswer` schema. Citations are checked against the
pages actually provided: citations of other pages are dropped (from the list and from the answer text). When
the model says the pages do not support an answer (``answerable: false``), the answer is
:data:`CANNOT_ANSWER`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from polymodal.backends.base import ChatModel, GenerateOptions
from polymodal.backends.embedding import MultiVectorEmbedder
from polymodal.backends.messages import ImagePart, Message, Part, TextPart
from polymodal.errors import InputError
from polymodal.index import PayloadFilter
from polymodal.media.document import Document
from polymodal.media.image import Image
from polymodal.pipelines._retrieval_models import DEFAULT_INDEX_DIR
from polymodal.pipelines.retrieval import RetrievalIndex, SearchHit

CANNOT_ANSWER = "I cannot answer this from the indexed pages."
#: Pixel budget of a page image sent to the chat model.
ASK_PAGE_PIXELS = 1_400_000
_CITATION = re.compile(r"\[([^\[\]]+?) p\.\s*(\d+)\]")

INSTRUCTIONS = (
    "You answer questions using ONLY the document pages provided. Each page is labelled like "
    "'report.pdf p.12'. Cite every page you used in the answer text as [report.pdf p.12], using exactly "
    "the labels given, and list those labels in `citations`. If the pages do not contain the answer, set "
    "`answerable` to false, say that you cannot answer, and cite nothing. Never use outside knowledge. "
    'Reply with JSON only: {"answer": str, "citations": [str], "answerable": bool}.'
)


class GroundedAnswer(BaseModel):
    """What the chat model must return."""

    answer: str = Field(description="The answer, citing pages inline as [report.pdf p.12].")
    citations: list[str] = Field(default_factory=list, description="Labels of the pages used.")
    answerable: bool = Field(description="False when the provided pages do not support an answer.")


@dataclass(frozen=True)
class Citation:
    """A cited page that was among the retrieved pages."""

    document: str
    page: int

    @property
    def label(self) -> str:
        """``report.pdf p.12``."""
        return f"{self.document} p.{self.page}"


@dataclass(frozen=True)
class Answer:
    """The answer, its validated citations, whether it was answerable, and the pages that were shown."""

    answer: str
    citations: list[Citation]
    answerable: bool
    pages: list[SearchHit]
    dropped_citations: list[str] = field(default_factory=list)


def _parse_label(label: str) -> tuple[str, int] | None:
    match = _CITATION.fullmatch(label.strip() if label.strip().startswith("[") else f"[{label.strip()}]")
    return (match.group(1).strip(), int(match.group(2))) if match else None


def validate_answer(raw: GroundedAnswer, pages: Sequence[SearchHit]) -> Answer:
    """Keep citations (listed or inline) that name a provided page; remove the others from the text."""
    provided = {(hit.document, hit.page) for hit in pages}
    if not raw.answerable:
        return Answer(CANNOT_ANSWER, [], False, list(pages), dropped_citations=list(raw.citations))
    cited: dict[tuple[str, int], None] = {}
    dropped: list[str] = []
    for label in [*raw.citations, *(m.group(0) for m in _CITATION.finditer(raw.answer))]:
        parsed = _parse_label(label)
        if parsed in provided:
            cited[parsed] = None
        elif label not in dropped:
            dropped.append(label)

    def keep_valid(match: re.Match[str]) -> str:
        return match.group(0) if (match.group(1).strip(), int(match.group(2))) in provided else ""

    text = re.sub(r"[ \t]+([.,;:])", r"\1", _CITATION.sub(keep_valid, raw.answer)).strip()
    citations = [Citation(document, page) for document, page in cited]
    return Answer(text, citations, True, list(pages), dropped_citations=dropped)


def _page_images(hits: Sequence[SearchHit]) -> dict[str, Image]:
    """Re-render the retrieved pages from their files; fall back to the cached thumbnail."""
    images: dict[str, Image] = {}
    by_path: dict[str, dict[int, str]] = {}
    for hit in hits:
        by_path.setdefault(hit.path, {})[hit.page] = hit.point_id
    for path, wanted in by_path.items():
        try:
            last = max(wanted)
            for page in Document.open(path, name=Path(path).name).iter_pages(max_pixels=ASK_PAGE_PIXELS):
                if page.number in wanted:
                    images[wanted[page.number]] = page.image
                if page.number >= last:
                    break
        except (InputError, OSError):
            pass  # file moved or unreadable now: the thumbnail stands in
    for hit in hits:
        if hit.point_id not in images and hit.thumbnail:
            images[hit.point_id] = Image.open(hit.thumbnail)
    return images


def build_messages(question: str, hits: Sequence[SearchHit], index: RetrievalIndex) -> list[Message]:
    """The system instruction and one user turn with every page (image + text hint + label)."""
    images = _page_images(hits)
    parts: list[Part] = [TextPart(f"Question: {question}\n\nPages:")]
    for hit in hits:
        image = images.get(hit.point_id)
        hint = index.page_text(hit.point_id)
        if image is not None:
            parts.append(ImagePart(image, text_hint=hint, label=hit.label))
        else:
            parts.append(TextPart(f"[{hit.label}]\n{hint or ''}"))
    return [Message.system(INSTRUCTIONS), Message("user", tuple(parts))]


async def ask_async(
    question: str,
    chat_model: ChatModel,
    index_dir: str | Path = DEFAULT_INDEX_DIR,
    embedder: MultiVectorEmbedder | str | None = None,
    *,
    k: int = 3,
    filter: PayloadFilter | None = None,
    max_tokens: int = 1024,
) -> Answer:
    """Retrieve the ``k`` best pages for ``question`` and answer from them with validated citations."""
    with RetrievalIndex(index_dir, embedder, create=False) as index:
        hits = index.search(question, k, filter=filter)
        if not hits:
            return Answer(CANNOT_ANSWER, [], False, [])
        messages = build_messages(question, hits, index)
    options = GenerateOptions(max_tokens=max_tokens, temperature=0.0)
    completion = await chat_model.generate(messages, schema=GroundedAnswer, options=options)
    try:
        raw = GroundedAnswer.model_validate_json(_json_block(completion.text))
    except ValidationError as exc:
        reask = [
            *messages,
            Message.assistant(completion.text),
            Message.user(f"Invalid reply: {exc}. {INSTRUCTIONS}"),
        ]
        completion = await chat_model.generate(reask, schema=GroundedAnswer, options=options)
        try:
            raw = GroundedAnswer.model_validate_json(_json_block(completion.text))
        except ValidationError:
            return Answer(CANNOT_ANSWER, [], False, hits)
    return validate_answer(raw, hits)


def ask(
    question: str,
    chat_model: ChatModel,
    index_dir: str | Path = DEFAULT_INDEX_DIR,
    embedder: MultiVectorEmbedder | str | None = None,
    *,
    k: int = 3,
    filter: PayloadFilter | None = None,
) -> Answer:
    """Blocking :func:`ask_async`."""
    return asyncio.run(ask_async(question, chat_model, index_dir, embedder, k=k, filter=filter))


def _json_block(text: str) -> str:
    """The JSON object in a reply (tolerates code fences and prose around it)."""
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if start != -1 and end > start else text


__all__ = [
    "CANNOT_ANSWER",
    "Answer",
    "Citation",
    "GroundedAnswer",
    "ask",
    "ask_async",
    "build_messages",
    "validate_answer",
]
