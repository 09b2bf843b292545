from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import fpdf
import pytest
from PIL import Image as PILImage
from skimage import data as skdata

from polymodal.errors import InputError
from polymodal.media import SUPPORTED_SUFFIXES, Document, Limits, Page, _render, iter_sources
from polymodal.media._render_worker import choose_dpi, render_size
from tests.media.helpers import encode_pil, many_page_pdf, solid, text_pdf

A4_PT = (595.28, 841.89)


@pytest.fixture(scope="module")
def invoice_pdf() -> bytes:
    return text_pdf(["Invoice 42 total 13.50 EUR", "Page two says hello"])


def test_pdf_pages_are_rendered_with_their_text_layer(
    tmp_path: Path, invoice_pdf: bytes, fresh_pool: _render.RenderPool
) -> None:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(invoice_pdf)
    document = Document.open(path)
    assert document.kind == "pdf"
    assert document.name == str(path)
    assert document.content_hash == hashlib.sha256(invoice_pdf).hexdigest()
    assert document.page_count == 2
    pages = document.pages()
    assert [p.number for p in pages] == [1, 2]
    first = pages[0]
    assert isinstance(first, Page)
    assert first.source == str(path)
    assert first.text is not None and "Invoice 42 total 13.50 EUR" in first.text
    assert pages[1].text is not None and "Page two says hello" in pages[1].text
    assert first.dpi == 150
    assert first.width_pt == pytest.approx(A4_PT[0], abs=0.1)
    assert first.height_pt == pytest.approx(A4_PT[1], abs=0.1)
    assert first.image.size == (1241, 1754)  # A4 at 150 DPI
    assert first.image.name == f"{path}#page=1"
    pixels = first.image.to_numpy()
    assert pixels.min() < 100 < pixels.max()  # black text on a white page


def test_worker_pixels_equal_an_in_process_render(invoice_pdf: bytes, fresh_pool: _render.RenderPool) -> None:
    import numpy as np
    import pypdfium2

    page = Document.open(invoice_pdf).pages(dpi=100)[0]
    document = pypdfium2.PdfDocument(invoice_pdf)
    expected = np.asarray(document[0].render(scale=100 / 72).to_pil().convert("RGB"))
    document.close()
    assert np.array_equal(page.image.to_numpy(), expected)


def test_dpi_is_chosen_to_fit_the_pixel_budget(invoice_pdf: bytes, fresh_pool: _render.RenderPool) -> None:
    budget = 1024 * 1024
    pages = Document.open(invoice_pdf).pages(max_pixels=budget)
    for page in pages:
        pixels = page.image.width * page.image.height
        assert 0.97 * budget <= pixels <= budget
        assert page.dpi is not None and 100 < page.dpi < 106  # sqrt(2^20 / A4 in^2) * ... ~ 103.6 DPI


def test_explicit_dpi_and_the_caps(invoice_pdf: bytes, fresh_pool: _render.RenderPool) -> None:
    page = Document.open(invoice_pdf).pages(dpi=72)[0]
    assert page.image.size == (596, 842) and page.dpi == 72
    capped = Document.open(invoice_pdf, limits=Limits(max_dpi=100)).pages(dpi=300)[0]
    assert capped.dpi == 100
    small = Document.open(invoice_pdf, limits=Limits(max_pixels=300_000)).pages()[0]
    assert small.image.width * small.image.height <= 300_000


def test_choose_dpi_rule() -> None:
    a4: dict[str, Any] = {"max_dpi": 300.0, "limit_pixels": 80_000_000}
    assert choose_dpi(*A4_PT, dpi=None, max_pixels=None, **a4) == 150
    assert choose_dpi(*A4_PT, dpi=200, max_pixels=None, **a4) == 200
    assert choose_dpi(*A4_PT, dpi=600, max_pixels=None, **a4) == 300
    fit = choose_dpi(*A4_PT, dpi=None, max_pixels=1_000_000, **a4)
    w, h = render_size(*A4_PT, fit)
    assert 990_000 <= w * h <= 1_000_000
    assert choose_dpi(*A4_PT, dpi=300, max_pixels=1_000_000, **a4) == fit  # budget wins over dpi
    # A huge page (200 x 200 inches) never exceeds the decoding limit, whatever was asked.
    giant = choose_dpi(14400, 14400, dpi=300, max_pixels=None, max_dpi=300.0, limit_pixels=80_000_000)
    w, h = render_size(14400, 14400, giant)
    assert w * h <= 80_000_000
    with pytest.raises(ValueError):
        choose_dpi(0, 10, dpi=None, max_pixels=None, **a4)


def test_too_many_pages_is_refused_fast_without_rendering(fresh_pool: _render.RenderPool) -> None:
    pdf = many_page_pdf(10_000)
    document = Document.open(pdf, name="huge.pdf")
    started = time.perf_counter()
    pages = document.iter_pages()
    with pytest.raises(InputError) as caught:
        next(pages)  # refused before the first page is rendered
    elapsed = time.perf_counter() - started
    assert caught.value.limit == "max_pages=500"
    assert "10000 pages" in str(caught.value) and "huge.pdf" in str(caught.value)
    assert elapsed < 10  # worker start + page count; rendering 10,000 pages would take far longer
    assert document.page_count == 10_000


def test_page_limit_boundary(fresh_pool: _render.RenderPool) -> None:
    pdf = many_page_pdf(5)
    assert len(Document.open(pdf, limits=Limits(max_pages=5)).pages()) == 5
    with pytest.raises(InputError, match="max_pages=4"):
        Document.open(pdf, limits=Limits(max_pages=4)).pages()


def test_truncated_pdf_is_refused(invoice_pdf: bytes, fresh_pool: _render.RenderPool) -> None:
    with pytest.raises(InputError, match="truncated") as caught:
        Document.open(invoice_pdf[: len(invoice_pdf) // 2], name="cut.pdf")
    assert caught.value.source == "cut.pdf"
    # The middle is missing but the tail (with %%EOF) survived: pdfium itself must refuse it.
    spliced = invoice_pdf[:300] + invoice_pdf[-40:]
    with pytest.raises(InputError, match="corrupt or truncated PDF"):
        Document.open(spliced, name="spliced.pdf").pages()


def test_encrypted_pdf_is_refused(fresh_pool: _render.RenderPool) -> None:
    pdf = fpdf.FPDF()
    pdf.set_encryption(owner_password="owner", user_password="user")
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="secret")
    with pytest.raises(InputError, match="password") as caught:
        Document.open(bytes(pdf.output()), name="locked.pdf").pages()
    assert caught.value.source == "locked.pdf"


def test_worker_is_reused_across_documents(invoice_pdf: bytes, fresh_pool: _render.RenderPool) -> None:
    Document.open(invoice_pdf).pages(dpi=36)
    first = fresh_pool.worker_pids()
    Document.open(many_page_pdf(30)).pages(dpi=36)
    with pytest.raises(InputError):
        Document.open(many_page_pdf(3), limits=Limits(max_pages=2)).pages()  # a clean refusal
    assert len(first) == 1 and fresh_pool.worker_pids() == first


def test_abandoned_iteration_stops_the_worker(invoice_pdf: bytes, fresh_pool: _render.RenderPool) -> None:
    pages = Document.open(many_page_pdf(20)).iter_pages(dpi=36)
    next(pages)
    (pid,) = fresh_pool.worker_pids()
    pages.close()
    assert fresh_pool.worker_pids() == []
    _assert_reaped(pid)
    assert len(Document.open(invoice_pdf).pages(dpi=36)) == 2  # a fresh worker takes over


def _assert_reaped(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


class _RecordingWorker(_render._Worker):
    created: list[_render._Worker] = []

    def __init__(self, command: tuple[str, ...]) -> None:
        super().__init__(command)
        _RecordingWorker.created.append(self)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("import time; time.sleep(60)", "render_seconds=0.5"),
        ("import sys; sys.stdin.buffer.read(4); sys.exit(3)", "crashed \\(exit status 3\\)"),
        (
            "import sys, time; sys.stdout.buffer.write(b'\\xff' * 64); sys.stdout.flush(); time.sleep(60)",
            "invalid",
        ),
        (  # a well-formed frame that claims a 1 TB page: refused before anything is allocated
            'import struct, sys, time; h = b\'{"type":"page"}\'; '
            "sys.stdout.buffer.write(struct.pack('>I', len(h)) + h + struct.pack('>Q', 10**12)); "
            "sys.stdout.flush(); time.sleep(60)",
            "invalid output .*exceeds",
        ),
    ],
    ids=["hang", "crash", "garbage", "oversized"],
)
def test_misbehaving_worker_becomes_input_error_and_is_killed(
    invoice_pdf: bytes, monkeypatch: pytest.MonkeyPatch, script: str, expected: str
) -> None:
    pool = _render.RenderPool(command=(sys.executable, "-c", script))
    monkeypatch.setattr(_render, "_default_pool", pool)
    monkeypatch.setattr(_render, "_Worker", _RecordingWorker)
    _RecordingWorker.created.clear()
    started = time.perf_counter()
    with pytest.raises(InputError, match=expected) as caught:
        Document.open(invoice_pdf, name="evil.pdf", limits=Limits(render_seconds=0.5)).pages()
    assert caught.value.source == "evil.pdf"
    assert time.perf_counter() - started < 8
    (worker,) = _RecordingWorker.created
    assert worker.process.poll() is not None
    _assert_reaped(worker.pid)
    assert pool.worker_pids() == []


def test_image_documents(tmp_path: Path) -> None:
    scan = PILImage.fromarray(skdata.page())  # a real scanned page, 191 x 384 grayscale
    path = tmp_path / "scan.png"
    path.write_bytes(encode_pil(scan, "PNG"))
    document = Document.open(path)
    assert document.kind == "image" and document.page_count == 1
    (page,) = document.pages()
    assert page.number == 1 and page.text is None and page.dpi is None and page.source == str(path)
    assert page.image.size == scan.size
    (small,) = document.pages(max_pixels=10_000)
    assert small.image.width * small.image.height <= 10_000


def test_multipage_tiff_document_gives_every_frame() -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [solid(c) for c in colors]
    data = encode_pil(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    document = Document.open(data, name="fax.tiff")
    assert document.kind == "tiff" and document.page_count == 3
    pages = document.pages()
    assert [p.image.to_pil().getpixel((1, 1)) for p in pages] == colors
    assert [p.image.name for p in pages] == [f"fax.tiff#page={n}" for n in (1, 2, 3)]
    assert len({p.image.content_hash for p in pages}) == 3
    with pytest.raises(InputError, match="max_pages=2"):
        Document.open(data, limits=Limits(max_pages=2)).pages()


def test_tiff_pages_of_different_sizes_keep_their_own_size() -> None:
    frames = [solid((255, 0, 0), (40, 30)), solid((0, 0, 255), (30, 60))]
    data = encode_pil(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    pages = Document.open(data).pages()
    assert [p.image.size for p in pages] == [(40, 30), (30, 60)]
    assert [p.image.to_pil().size for p in pages] == [(40, 30), (30, 60)]
    with pytest.raises(InputError, match="page=2") as caught:
        Document.open(data, limits=Limits(max_pixels=1500)).pages()  # only the second page is too big
    assert caught.value.limit == "max_pixels=1500"


def test_document_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty"):
        Document.open(b"", name="empty.pdf")
    with pytest.raises(InputError, match="unsupported format"):
        Document.open(b"hello", name="notes.pdf")
    with pytest.raises(InputError, match="no such file"):
        Document.open(tmp_path / "missing.pdf")
    with pytest.raises(InputError, match="max_bytes=10"):
        Document.open(many_page_pdf(1), limits=Limits(max_bytes=10))


def test_iter_sources_expands_folders_deterministically(tmp_path: Path) -> None:
    for relative in [
        "b.PNG",
        "a.pdf",
        "notes.txt",
        ".hidden.png",
        "sub/c.jpg",
        "sub/deeper/d.tif",
        ".git/x.png",
    ]:
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")
    assert iter_sources([tmp_path]) == [
        tmp_path / "a.pdf",
        tmp_path / "b.PNG",
        tmp_path / "sub" / "c.jpg",
        tmp_path / "sub" / "deeper" / "d.tif",
    ]
    assert iter_sources([tmp_path], recursive=False) == [tmp_path / "a.pdf", tmp_path / "b.PNG"]
    notes = tmp_path / "notes.txt"
    assert iter_sources([notes, tmp_path / "a.pdf", tmp_path]) == [
        notes,  # a file given explicitly is kept, whatever its suffix
        tmp_path / "a.pdf",
        tmp_path / "b.PNG",
        tmp_path / "sub" / "c.jpg",
        tmp_path / "sub" / "deeper" / "d.tif",
    ]
    with pytest.raises(InputError, match="no such file") as caught:
        iter_sources([tmp_path / "nope"])
    assert caught.value.source == str(tmp_path / "nope")
    assert {".pdf", ".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".gif", ".bmp"} <= SUPPORTED_SUFFIXES


def test_concurrent_documents_share_a_bounded_pool(
    invoice_pdf: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    pool = _render.RenderPool(max_workers=2)
    monkeypatch.setattr(_render, "_default_pool", pool)
    try:
        documents = [many_page_pdf(6), invoice_pdf, many_page_pdf(3), invoice_pdf]
        with ThreadPoolExecutor(max_workers=4) as executor:
            counts = list(executor.map(lambda data: len(Document.open(data).pages(dpi=36)), documents))
        assert counts == [6, 2, 3, 2]
        assert 1 <= len(pool.worker_pids()) <= 2
    finally:
        pool.close()
    assert pool.worker_pids() == []
