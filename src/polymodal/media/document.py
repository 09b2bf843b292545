"""Document: a PDF, a (multi-page) TIFF or a single image, turned into rendered :class:`Page` images.

PDF pages are rendered with pypdfium2 in a worker process (see :mod:`polymodal.media._render`) so that a
crashing or hanging PDF costs an :class:`InputError`, never the caller's process.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from polymodal.errors import InputError
from polymodal.media import _decode, _render
from polymodal.media.image import Image, read_file
from polymodal.media.limits import DEFAULT_LIMITS, Limits

#: Image file suffixes the media layer opens.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp"}
)
#: Every file suffix :func:`iter_sources` picks up from a folder (PDF and image suffixes, lower case).
SUPPORTED_SUFFIXES = frozenset({".pdf"} | IMAGE_SUFFIXES)

DocumentKind = Literal["pdf", "image", "tiff"]
_PDF_MAGIC = b"%PDF-"
_PDF_EOF = b"%%EOF"
_HEADER_WINDOW = 1024  # PDF readers accept the header and %%EOF anywhere within the first/last 1 KiB


@dataclass(frozen=True)
class Page:
    """One rendered page of a document, with its provenance.

    Attributes:
        image: the rendered page (decoded pixels for PDFs; the source image, still encoded, otherwise).
        number: 1-based page number.
        source: the document's name (the path as given).
        text: the PDF's own text layer when it has one; ``None`` for images, scans and empty pages.
        width_pt: PDF page width in points (1/72 inch); ``None`` for images.
        height_pt: PDF page height in points; ``None`` for images.
        dpi: resolution the page was rendered at; ``None`` for images.
    """

    image: Image
    number: int
    source: str
    text: str | None = None
    width_pt: float | None = None
    height_pt: float | None = None
    dpi: float | None = None


class Document:
    """A PDF, a TIFF (one page per frame) or an image (one page), checked against :class:`Limits`.

    Attributes:
        name: the source shown in errors and in :attr:`Page.source` (the path as given, or a given name).
        content_hash: SHA-256 hex of the file bytes.
        kind: ``"pdf"``, ``"tiff"`` or ``"image"``.
        limits: the limits applied when reading and rendering.
    """

    __slots__ = ("_data", "_frames", "_page_count", "content_hash", "kind", "limits", "name")

    def __init__(self, data: bytes, *, name: str, limits: Limits = DEFAULT_LIMITS) -> None:
        """Internal: use :meth:`open`."""
        _decode.check_bytes(name, len(data), limits)
        self.name = name
        self.limits = limits
        self._data = data
        self._page_count: int | None = None
        self.content_hash = hashlib.sha256(data).hexdigest()
        self.kind: DocumentKind
        if _PDF_MAGIC in data[:_HEADER_WINDOW]:
            if _PDF_EOF not in data[-_HEADER_WINDOW:]:
                raise InputError(name, "truncated PDF: no %%EOF marker at the end of the file")
            self.kind = "pdf"
            self._frames = 0
        else:
            info = _decode.probe(data, name, limits)
            self.kind = "tiff" if info.format == "TIFF" else "image"
            self._frames = info.frames if info.format == "TIFF" else 1
            self._page_count = self._frames

    @classmethod
    def open(
        cls,
        source: str | os.PathLike[str] | bytes,
        *,
        limits: Limits = DEFAULT_LIMITS,
        name: str | None = None,
    ) -> Document:
        """Open a PDF or image from a path or bytes. Reads the file; renders nothing yet."""
        if isinstance(source, bytes | bytearray | memoryview):
            return cls(bytes(source), name=name or "<bytes>", limits=limits)
        if isinstance(source, str | os.PathLike):
            data, label = read_file(source, limits, name)
            return cls(data, name=label, limits=limits)
        raise TypeError(f"cannot open a document from {type(source).__name__}")

    @property
    def page_count(self) -> int:
        """Number of pages. For a PDF it is read by the worker without rendering any page."""
        if self._page_count is None:
            self._page_count = _render.default_pool().page_count(self._data, self.name, self.limits)
        return self._page_count

    def pages(self, *, max_pixels: int | None = None, dpi: float | None = None) -> list[Page]:
        """Every page, rendered. See :meth:`iter_pages`."""
        return list(self.iter_pages(max_pixels=max_pixels, dpi=dpi))

    def iter_pages(
        self, *, max_pixels: int | None = None, dpi: float | None = None
    ) -> Generator[Page, None, None]:
        """Yield pages as they are rendered.

        Args:
            max_pixels: the target model's resolution budget: each page is rendered (PDF) or downscaled
                (images) to at most this many pixels.
            dpi: PDF render resolution. Without it, the DPI is chosen so each page fits ``max_pixels``, or
                150 when neither is given. Never above ``limits.max_dpi``, never so high that a page
                exceeds ``max_pixels`` or ``limits.max_pixels``. Ignored for images.

        Raises:
            InputError: more pages than ``limits.max_pages`` (refused, not truncated), an encrypted,
                corrupt or truncated PDF, a render that exceeds ``limits.render_seconds``, bad image data.
        """
        if max_pixels is not None and max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
        if dpi is not None and dpi <= 0:
            raise ValueError(f"dpi must be > 0, got {dpi}")
        if self.kind == "pdf":
            yield from self._pdf_pages(max_pixels=max_pixels, dpi=dpi)
            return
        infos = _decode.probe_frames(self._data, self.name, self.limits, max_frames=self.limits.max_pages)
        for index, info in enumerate(infos):
            label = self.name if len(infos) == 1 else f"{self.name}#page={index + 1}"
            image = Image._from_frame(self._data, index, name=label, limits=self.limits, info=info)
            if max_pixels is not None:
                image = image.resized_to_budget(max_pixels)
            yield Page(image=image, number=index + 1, source=self.name)

    def _pdf_pages(self, *, max_pixels: int | None, dpi: float | None) -> Iterator[Page]:
        rendered_pages = _render.default_pool().render(
            self._data, self.name, self.limits, dpi=dpi, max_pixels=max_pixels
        )
        count = 0
        for rendered in rendered_pages:
            count += 1
            label = f"{self.name}#page={rendered.number}"
            image = Image._from_rgb(
                rendered.pixels, (rendered.width, rendered.height), name=label, limits=self.limits
            )
            text = rendered.text.replace("\r\n", "\n")
            yield Page(
                image=image,
                number=rendered.number,
                source=self.name,
                text=text if text.strip() else None,
                width_pt=rendered.width_pt,
                height_pt=rendered.height_pt,
                dpi=rendered.dpi,
            )
        self._page_count = count

    def __repr__(self) -> str:
        return f"Document({self.name!r}, kind={self.kind!r}, {len(self._data)} bytes)"


def iter_sources(paths: Iterable[str | os.PathLike[str]], *, recursive: bool = True) -> list[Path]:
    """Expand folders into the supported files they contain; keep files as given.

    Folder contents are sorted (deterministic across machines); hidden files and folders (``.name``) are
    skipped and symlinked folders are not followed. A path given twice, or found twice, is listed once.

    Raises:
        InputError: a path that does not exist.
    """
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in _walk(path, recursive=recursive):
                add(file)
        elif path.exists():
            add(path)
        else:
            raise InputError(str(raw), "no such file or directory")
    return found


def _walk(folder: Path, *, recursive: bool) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in names:
            if not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED_SUFFIXES:
                files.append(Path(root) / name)
    return sorted(files, key=lambda p: p.relative_to(folder).parts)


__all__ = ["IMAGE_SUFFIXES", "SUPPORTED_SUFFIXES", "Document", "DocumentKind", "Page", "iter_sources"]
