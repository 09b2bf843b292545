"""PDF corpora for the retrieval tests: generated PDFs with one clear topic per page, plus broken files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from fpdf import FPDF

CORPUS: dict[str, list[str]] = {
    "volcanoes.pdf": [
        "Volcanoes. An introduction to how volcanoes form where tectonic plates diverge or converge, and "
        "where hot spots in the mantle push magma upward through the crust.",
        "Magma chambers. Molten rock collects in a magma chamber several kilometres below the surface. "
        "When pressure from dissolved gases exceeds the strength of the overlying rock, an eruption begins.",
        "Lava flows. Basaltic lava is fluid and travels far; rhyolitic lava is viscous and builds steep "
        "domes. Pyroclastic flows of hot ash move faster than a car and are the deadliest hazard.",
    ],
    "bakery.pdf": [
        "The bakery opens at six in the morning and sells croissants, baguettes and seasonal fruit tarts. "
        "Orders for birthday cakes must be placed three days in advance.",
        "Sourdough bread is leavened by a starter of wild yeast and lactic acid bacteria instead of "
        "commercial yeast. The dough ferments slowly overnight, which gives the loaf its sour taste.",
    ],
    "astronomy.pdf": [
        "A telescope gathers light with a lens or a mirror. The larger the aperture, the fainter the stars "
        "and galaxies it can reveal on a dark night.",
        "Jupiter is the largest planet in the solar system. Its Great Red Spot is a storm larger than the "
        "Earth that has raged for centuries, and it has dozens of moons.",
    ],
}


def write_pdf(path: Path, pages: Sequence[str], *, password: str | None = None) -> Path:
    """A text PDF with one paragraph per page (optionally encrypted with a user password)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=13)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    if password is not None:
        pdf.set_encryption(owner_password="owner-" + password, user_password=password)
    pdf.output(str(path))
    return path


def write_corpus(folder: Path, corpus: dict[str, list[str]] | None = None) -> Path:
    """Write every document of ``corpus`` (default :data:`CORPUS`) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, pages in (corpus or CORPUS).items():
        write_pdf(folder / name, pages)
    return folder


def write_broken_files(folder: Path) -> dict[str, str]:
    """Write a corrupt, an encrypted and an oversized PDF; map each name to a word its failure names."""
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n")
    write_pdf(folder / "encrypted.pdf", ["Secret plans for the volcano lair."], password="hunter2")
    pdf = FPDF()
    pdf.add_page()
    noise = np.random.default_rng(0).integers(0, 255, (700, 700, 3), dtype=np.uint8)
    from PIL import Image as PILImage

    pdf.image(PILImage.fromarray(noise), x=10, y=10, w=180)
    pdf.output(str(folder / "oversized.pdf"))
    return {"corrupt.pdf": "", "encrypted.pdf": "encrypt", "oversized.pdf": "max_bytes"}


class HashingEmbedder:
    """A deterministic stand-in for a page embedder (fast tests of the pipeline's mechanics).

    Each word maps to a fixed random unit vector, so MaxSim rewards shared words; it counts embedded pages.
    """

    id = "test-hashing"
    dim = 32
    page_max_pixels = 60_000

    def __init__(self) -> None:
        self.pages_embedded = 0
        self.queries_embedded = 0

    def _matrix(self, text: str) -> np.ndarray:
        import re
        import zlib

        words = re.findall(r"[a-z]+", text.lower()) or ["<empty>"]
        rows = []
        for word in words:
            rng = np.random.default_rng(zlib.crc32(word.encode()))
            vector = rng.standard_normal(self.dim).astype(np.float32)
            rows.append(vector / np.linalg.norm(vector))
        return np.stack(rows)

    def embed_pages(self, pages: Sequence[object]) -> list[np.ndarray]:
        self.pages_embedded += len(pages)
        return [self._matrix(getattr(page, "text", None) or "") for page in pages]

    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        self.queries_embedded += len(texts)
        return [self._matrix(text) for text in texts]
