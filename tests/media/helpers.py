"""Fixture builders for the media tests: images and PDFs generated in the test."""

from __future__ import annotations

import io
import struct
import zlib

import fpdf
import numpy as np
from PIL import Image as PILImage


def encode_pil(image: PILImage.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def text_pdf(lines: list[str]) -> bytes:
    """An A4 PDF with one page per line of text (a real text layer)."""
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=14)
    for line in lines:
        pdf.add_page()
        pdf.cell(text=line)
    return bytes(pdf.output())


def many_page_pdf(pages: int, size_pt: float = 72.0) -> bytes:
    """A valid PDF with ``pages`` empty pages, written by hand (milliseconds even for 10,000 pages)."""
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
    ]
    page = f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {size_pt} {size_pt}] >>".encode()
    objects.extend([page] * pages)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def solid(color: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> PILImage.Image:
    return PILImage.new("RGB", size, color)


def mean_abs_diff(a: PILImage.Image, b: PILImage.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean())
