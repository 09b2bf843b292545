"""PDF rendering throughput: pypdfium2 in-process vs polymodal's worker process vs PyMuPDF, plus encode cost.

Every engine renders the same PDFs at the same DPI to an RGB bitmap in memory, side by side in one run;
the figure is the median over ``--repeats`` full passes. The worker figure is what ``Document.pages()``
costs a caller (render + PNG hand-off + header check in the parent), with the worker already started;
the worker's cold start is reported separately.

    python benchmarks/render_bench.py            # table
    python benchmarks/render_bench.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fpdf
import psutil
import pymupdf
import pypdfium2 as pdfium
from PIL import Image as PILImage
from skimage import data as skdata

from polymodal.media import DEFAULT_LIMITS, Document, Image, _render

REAL_PDFS = [
    Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf"),
    Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"),
]


def synthetic_pdf(pages: int) -> bytes:
    """Text paragraphs plus a real photo on every page (fpdf2)."""
    photo = io.BytesIO()
    PILImage.fromarray(skdata.coffee()).save(photo, format="JPEG", quality=85)
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=11)
    paragraph = (
        "Invoice line items, totals and terms. The quick brown fox jumps over the lazy dog. "
        "Payment is due within thirty days of the invoice date. "
    ) * 6
    for number in range(pages):
        pdf.add_page()
        pdf.multi_cell(0, 6, f"Page {number + 1}. " + paragraph)
        photo.seek(0)
        pdf.image(photo, w=120)  # placed in the flow; the cursor moves below it
        pdf.set_x(pdf.l_margin)
        pdf.multi_cell(0, 6, paragraph)
    return bytes(pdf.output())


def pdfium_in_process(data: bytes, dpi: float) -> int:
    document = pdfium.PdfDocument(data)
    try:
        for index in range(len(document)):
            page = document[index]
            page.render(scale=dpi / 72, rev_byteorder=True).to_pil()
            page.close()
        return len(document)
    finally:
        document.close()


def pymupdf_in_process(data: bytes, dpi: float) -> int:
    with pymupdf.open(stream=data, filetype="pdf") as document:
        for page in document:
            pixmap = page.get_pixmap(dpi=int(dpi))
            PILImage.frombytes("RGB", (pixmap.width, pixmap.height), pixmap.samples)
        return int(document.page_count)


def polymodal_worker(data: bytes, dpi: float) -> int:
    return len(Document.open(data, name="bench.pdf").pages(dpi=dpi))


ENGINES: dict[str, Callable[[bytes, float], int]] = {
    "pypdfium2 in-process": pdfium_in_process,
    "polymodal worker (pypdfium2)": polymodal_worker,
    "PyMuPDF in-process": pymupdf_in_process,
}


def cpu_seconds() -> float:
    """CPU time of this process plus the render workers: unlike wall time, not inflated by other load."""
    total = time.process_time()
    for pid in _render.default_pool().worker_pids():
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def measure(fn: Callable[[], int], repeats: int) -> dict[str, float]:
    seconds: list[float] = []
    cpu: list[float] = []
    pages = 0
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), cpu_seconds()
        pages = fn()
        seconds.append(time.perf_counter() - started)
        cpu.append(cpu_seconds() - cpu_started)
    median = statistics.median(seconds)
    median_cpu = statistics.median(cpu)
    return {
        "pages": pages,
        "median_s": median,
        "pages_per_s": pages / median,
        "median_cpu_s": median_cpu,
        "pages_per_cpu_s": pages / median_cpu,
    }


def encode_costs(data: bytes, repeats: int) -> dict[str, float]:
    """Median milliseconds per page to encode a 150-DPI page for the wire at a 1024x1024 budget."""
    pages = Document.open(data, name="bench.pdf").pages(dpi=150)[:10]
    budget = 1024 * 1024
    variants: dict[str, Callable[[Image], Any]] = {
        "decode 150 DPI page": lambda image: image.to_pil(),
        "resize to 1024x1024 budget": lambda image: image.resized_to_budget(budget).to_pil(),
        "encode PNG (budget)": lambda image: image.encode("PNG", max_pixels=budget),
        "encode JPEG q90 (budget)": lambda image: image.encode("JPEG", quality=90, max_pixels=budget),
        "encode WebP q90 (budget)": lambda image: image.encode("WEBP", quality=90, max_pixels=budget),
    }
    result: dict[str, float] = {}
    for label, fn in variants.items():
        times: list[float] = []
        cpu: list[float] = []
        for _ in range(repeats):
            for page in pages:
                started, cpu_started = time.perf_counter(), time.process_time()
                fn(page.image)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
        result[f"{label} (wall ms)"] = 1000 * statistics.median(times)
        result[f"{label} (CPU ms)"] = 1000 * statistics.median(cpu)
    # The better path: render each page at the budget in the first place (no resize at all).
    at_budget = Document.open(data, name="bench.pdf").pages(max_pixels=budget)[:10]
    direct: dict[str, Callable[[Image], Any]] = {
        "page rendered at budget: encode PNG": lambda image: image.encode("PNG"),
        "page rendered at budget: encode JPEG q90": lambda image: image.encode("JPEG", quality=90),
    }
    for label, fn in direct.items():
        times, cpu = [], []
        for _ in range(repeats):
            for page in at_budget:
                started, cpu_started = time.perf_counter(), time.process_time()
                fn(page.image)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
        result[f"{label} (wall ms)"] = 1000 * statistics.median(times)
        result[f"{label} (CPU ms)"] = 1000 * statistics.median(cpu)
    sizes = {
        "PNG": statistics.median(len(p.image.encode("PNG", max_pixels=budget).data) for p in pages),
        "JPEG": statistics.median(len(p.image.encode("JPEG", max_pixels=budget).data) for p in pages),
    }
    result["median PNG bytes"] = sizes["PNG"]
    result["median JPEG bytes"] = sizes["JPEG"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=50, help="pages in the synthetic PDF")
    parser.add_argument("--dpi", type=float, default=150.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    documents = {f"synthetic text+photo ({args.pages} p)": synthetic_pdf(args.pages)}
    for path in REAL_PDFS:
        if path.is_file():
            documents[path.name] = path.read_bytes()

    pool = _render.default_pool()
    started = time.perf_counter()
    pool.page_count(next(iter(documents.values())), "warmup", DEFAULT_LIMITS)
    cold_start = time.perf_counter() - started

    rows: list[dict[str, Any]] = []
    for doc_name, data in documents.items():
        for engine, fn in ENGINES.items():
            stats = measure(lambda fn=fn, data=data: fn(data, args.dpi), args.repeats)
            rows.append({"document": doc_name, "engine": engine, **stats})
    encode = encode_costs(next(iter(documents.values())), args.repeats)
    report = {"dpi": args.dpi, "repeats": args.repeats, "worker_cold_start_s": cold_start, "render": rows}
    report["encode_ms_per_page"] = encode
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"PDF rendering at {args.dpi:g} DPI, median of {args.repeats} passes")
    print(
        f"{'document':<34} {'engine':<29} {'pages':>5} {'wall s':>7} {'pages/s':>8} {'CPU s':>7} "
        f"{'pages/CPU s':>11} {'vs pdfium (CPU)':>15}"
    )
    for doc_name in documents:
        base = next(r for r in rows if r["document"] == doc_name and r["engine"] == "pypdfium2 in-process")
        for row in (r for r in rows if r["document"] == doc_name):
            ratio = row["pages_per_cpu_s"] / base["pages_per_cpu_s"]
            print(
                f"{doc_name:<34} {row['engine']:<29} {row['pages']:>5} {row['median_s']:>7.3f} "
                f"{row['pages_per_s']:>8.1f} {row['median_cpu_s']:>7.3f} {row['pages_per_cpu_s']:>11.1f} "
                f"{ratio:>14.2f}x"
            )
    print(f"\nworker cold start (spawn + import + first page count): {cold_start:.3f} s")
    print("\nper-page cost on 150-DPI pages of the synthetic PDF (median ms; sizes in bytes)")
    for label, value in encode.items():
        print(f"  {label:<52} {value:>10.1f}")


if __name__ == "__main__":
    main()
