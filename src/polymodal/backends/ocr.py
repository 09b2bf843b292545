"""Text recognition on page images with RapidOCR (PP-OCRv4 ONNX models shipped inside the package).

:func:`ocr_lines` is the entry point the extraction pipeline uses for evidence: it returns every recognised
line with its confidence and pixel box, cached per image content, from one process-wide engine::

    from polymodal.backends.ocr import ocr_lines, layout_text
    lines = ocr_lines(image)            # list[OcrLine], boxes in the image's own pixels
    print(layout_text(lines))           # the text in reading order, one visual row per line
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from polymodal.errors import BackendError, ErrorCategory
from polymodal.media.image import Image

PROVIDER = "rapidocr"
#: How many images' OCR results are kept in memory.
RESULT_CACHE_SIZE = 128


@dataclass(frozen=True)
class OcrLine:
    """One recognised line: its text, the recogniser's confidence (0-1) and its box in pixels."""

    text: str
    confidence: float
    box: tuple[float, float, float, float]

    @property
    def x0(self) -> float:
        """Left edge."""
        return self.box[0]

    @property
    def y0(self) -> float:
        """Top edge."""
        return self.box[1]

    @property
    def x1(self) -> float:
        """Right edge."""
        return self.box[2]

    @property
    def y1(self) -> float:
        """Bottom edge."""
        return self.box[3]

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return self.box[3] - self.box[1]


class OCR:
    """A RapidOCR engine; create it through :func:`get_ocr` to share one per process."""

    def __init__(self, *, threads: int | None = None) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise BackendError(
                "rapidocr-onnxruntime is not installed (pip install 'polymodal[offline]')",
                category=ErrorCategory.UNAVAILABLE,
                provider=PROVIDER,
            ) from exc
        options: dict[str, Any] = {}
        if threads is not None:
            options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        try:
            self._engine = RapidOCR(**options)
        except Exception as exc:  # onnxruntime raises its own types for a broken model file
            raise _translate(exc, "loading the OCR models") from exc
        self._lock = threading.Lock()

    def recognize(self, pixels: np.ndarray) -> list[OcrLine]:
        """Recognise the text lines of an HxWx3 uint8 RGB array, in reading order."""
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise BackendError(
                f"OCR needs an HxWx3 uint8 array, got {pixels.shape} {pixels.dtype}",
                category=ErrorCategory.INVALID_REQUEST,
                provider=PROVIDER,
            )
        bgr = np.ascontiguousarray(pixels[:, :, ::-1])  # RapidOCR follows OpenCV's channel order
        try:
            with self._lock:
                result, _elapsed = self._engine(bgr)
        except Exception as exc:  # onnxruntime / OpenCV failures
            raise _translate(exc, "recognising text") from exc
        lines = [_to_line(item) for item in result or []]
        return reading_order(lines)


def _to_line(item: Sequence[Any]) -> OcrLine:
    points, text, score = item[0], item[1], item[2]
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    return OcrLine(str(text), float(score), (min(xs), min(ys), max(xs), max(ys)))


def _translate(exc: Exception, doing: str) -> BackendError:
    """The one place foreign OCR exceptions become BackendError."""
    if isinstance(exc, MemoryError):
        return BackendError(f"out of memory {doing}", category=ErrorCategory.OVERLOADED, provider=PROVIDER)
    return BackendError(
        f"{doing} failed: {type(exc).__name__}: {exc}", category=ErrorCategory.SERVER, provider=PROVIDER
    )


def group_rows(lines: Sequence[OcrLine]) -> list[list[OcrLine]]:
    """Group boxes into visual rows (boxes whose vertical centres lie within half a line height)."""
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda item: (item.y0 + item.y1) / 2):
        centre = (line.y0 + line.y1) / 2
        if rows:
            row = rows[-1]
            row_centre = sum((item.y0 + item.y1) / 2 for item in row) / len(row)
            row_height = max(item.height for item in row)
            if abs(centre - row_centre) <= 0.5 * max(row_height, line.height):
                row.append(line)
                continue
        rows.append([line])
    return [sorted(row, key=lambda item: item.x0) for row in rows]


def reading_order(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """The lines sorted top to bottom by visual row, left to right within a row."""
    return [line for row in group_rows(lines) for line in row]


def layout_text(lines: Sequence[OcrLine], *, separator: str = "  ") -> str:
    """The recognised text in reading order: one output line per visual row, boxes joined by ``separator``."""
    return "\n".join(separator.join(item.text for item in row) for row in group_rows(lines))


_engine_lock = threading.Lock()
_engine: OCR | None = None
_results_lock = threading.Lock()
_results: OrderedDict[str, list[OcrLine]] = OrderedDict()


def get_ocr() -> OCR:
    """The process-wide OCR engine (created on first use; model loading takes about a second)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = OCR()
        return _engine


def ocr_lines(image: Image) -> list[OcrLine]:
    """The text lines of ``image`` in reading order, boxes in its pixels; cached per image content hash."""
    key = image.content_hash
    with _results_lock:
        cached = _results.get(key)
        if cached is not None:
            _results.move_to_end(key)
            return list(cached)
    lines = get_ocr().recognize(image.to_numpy())
    with _results_lock:
        _results[key] = lines
        while len(_results) > RESULT_CACHE_SIZE:
            _results.popitem(last=False)
    return list(lines)


__all__ = ["OCR", "OcrLine", "get_ocr", "group_rows", "layout_text", "ocr_lines", "reading_order"]
