"""RapidOCR wrapper: real recognition on a scanned page, reading order, caching and input checks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from polymodal.backends import ocr as ocr_module
from polymodal.backends.ocr import OCR, OcrLine, group_rows, layout_text, ocr_lines, reading_order
from polymodal.errors import BackendError
from polymodal.media.image import Image


def _line(text: str, x0: float, y0: float, x1: float, y1: float) -> OcrLine:
    return OcrLine(text, 0.9, (x0, y0, x1, y1))


def test_rows_group_by_vertical_centre_and_sort_left_to_right() -> None:
    lines = [
        _line("12.00", 300, 52, 360, 70),
        _line("Total", 10, 50, 80, 72),
        _line("ACME", 10, 5, 90, 30),
        _line("2025-01-02", 10, 100, 120, 118),
    ]
    rows = group_rows(lines)
    assert [[line.text for line in row] for row in rows] == [["ACME"], ["Total", "12.00"], ["2025-01-02"]]
    assert [line.text for line in reading_order(lines)] == ["ACME", "Total", "12.00", "2025-01-02"]
    assert layout_text(lines) == "ACME\nTotal  12.00\n2025-01-02"


def test_line_geometry() -> None:
    line = _line("x", 1, 2, 5, 10)
    assert (line.x0, line.y0, line.x1, line.y1, line.height) == (1, 2, 5, 10, 8)


def test_wrong_array_shape_is_a_backend_error() -> None:
    engine = OCR.__new__(OCR)  # the check runs before the ONNX models are touched
    with pytest.raises(BackendError):
        engine.recognize(np.zeros((10, 10), dtype=np.uint8))


@pytest.mark.slow
def test_scanned_page_words_and_boxes() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    page = Image.from_pil(PILImage.fromarray(skimage_data.page()).convert("RGB"), name="page.png")
    lines = ocr_lines(page)
    text = layout_text(lines).lower()
    for word in ("segmentation", "markers", "coins", "background", "histogram"):
        assert word in text
    height, width = page.height, page.width
    for line in lines:
        assert 0 <= line.x0 < line.x1 <= width + 1 and 0 <= line.y0 < line.y1 <= height + 1
        assert 0.0 < line.confidence <= 1.0
    first = next(line for line in lines if "segmentation" in line.text.lower())
    assert first.y0 < height / 4  # the heading sits at the top of the page


def test_results_are_cached_per_image_content(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []

    class Engine:
        def recognize(self, pixels: np.ndarray) -> list[OcrLine]:
            calls.append(pixels.shape)
            return [_line("hi", 0, 0, 5, 5)]

    monkeypatch.setattr(ocr_module, "get_ocr", lambda: Engine())
    pixels = np.full((8, 9, 3), 200, dtype=np.uint8)
    first = Image.from_pil(PILImage.fromarray(pixels), name="a.png")
    same = Image.from_pil(PILImage.fromarray(pixels.copy()), name="b.png")
    assert ocr_lines(first) == ocr_lines(same) == [_line("hi", 0, 0, 5, 5)]
    assert calls == [(8, 9, 3)]
