"""Per-field page evidence: where on which page each extracted value was seen.

Two sources, merged: what the model says (an ``evidence`` list in its answer, for vision models), and what we
can find ourselves by locating each extracted value in the pages' text (the PDF text layer, or OCR lines with
boxes when an OCR function is given).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from polymodal.media.document import Page

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class TextLine:
    """A line of page text with its box in pixels of the page image (None when unknown)."""

    text: str
    bbox: BBox | None = None


#: Returns the lines of a page: OCR output, or the text layer split into lines.
LineSource = Callable[[Page], Sequence[TextLine]]


@dataclass(frozen=True)
class FieldEvidence:
    """Where one extracted field's value was found."""

    field: str
    page: int | None
    text: str | None = None
    bbox: BBox | None = None
    origin: Literal["model", "text"] = "text"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


#: The envelope property a vision model fills with its evidence.
EVIDENCE_JSON_SCHEMA: dict[str, Any] = {
    "type": "array",
    "description": "For each field you filled: the page number (1-based) it was read from and, if you can, "
    "its "
    "bounding box [x0, y0, x1, y1] in 0-1000 coordinates of that page.",
    "items": {
        "type": "object",
        "properties": {
            "field": {"type": "string", "description": "dotted path, e.g. line_items.0.amount"},
            "page": {"type": "integer"},
            "bbox": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "null"}]},
        },
        "required": ["field", "page", "bbox"],
        "additionalProperties": False,
    },
}


def leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted paths and values of the scalar leaves of a JSON-like value."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from leaves(value, f"{prefix}.{i}" if prefix else str(i))
    elif data is not None and not isinstance(data, bool):
        yield prefix, data


def _needles(value: Any) -> list[str]:
    if isinstance(value, int | float):
        number = float(value)
        forms = {f"{number:,.2f}", f"{number:.2f}", f"{number:.2f}".replace(".", ",")}
        if number == int(number):
            forms.add(str(int(number)))
        return sorted(forms, key=len, reverse=True)
    text = str(value).strip()
    return [text] if len(text) >= 3 else []


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def text_layer_lines(page: Page) -> list[TextLine]:
    """The page's own text layer as lines without boxes."""
    return [TextLine(line) for line in (page.text or "").splitlines() if line.strip()]


def locate(
    data: Any, pages: Sequence[Page], line_source: LineSource = text_layer_lines
) -> list[FieldEvidence]:
    """Find each leaf value of ``data`` in the pages' lines; the first page and line that contain it win."""
    page_lines = [
        (page.number, [(line, _normalise(line.text)) for line in line_source(page)]) for page in pages
    ]
    found: list[FieldEvidence] = []
    for path, value in leaves(data):
        needles = [_normalise(n) for n in _needles(value)]
        hit = next(
            (
                FieldEvidence(path, number, line.text, line.bbox, "text")
                for needle in needles
                for number, lines in page_lines
                for line, norm in lines
                if needle and needle in norm
            ),
            None,
        )
        if hit is not None:
            found.append(hit)
    return found


def from_model(raw: Any, page_count: int) -> list[FieldEvidence]:
    """Evidence a model reported, keeping only well-formed entries that name a real page."""
    result: list[FieldEvidence] = []
    if not isinstance(raw, list):
        return result
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("field"), str):
            continue
        page = item.get("page")
        if not isinstance(page, int) or not 1 <= page <= page_count:
            continue
        box = item.get("bbox")
        bbox: BBox | None = None
        if isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box):
            bbox = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        result.append(FieldEvidence(item["field"], page, None, bbox, "model"))
    return result


def merge(model_evidence: list[FieldEvidence], located: list[FieldEvidence]) -> list[FieldEvidence]:
    """Model evidence first; located text fills fields the model did not cover."""
    covered = {e.field for e in model_evidence}
    return model_evidence + [e for e in located if e.field not in covered]


__all__ = [
    "EVIDENCE_JSON_SCHEMA",
    "FieldEvidence",
    "LineSource",
    "TextLine",
    "from_model",
    "leaves",
    "locate",
    "merge",
    "text_layer_lines",
]
