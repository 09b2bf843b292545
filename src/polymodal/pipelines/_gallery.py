"""A static, self-contained HTML gallery of image results: thumbnails embedded as small JPEG data URLs, scores
and paths under each, grouped into sections (one per query, duplicate group or label). No scripts, no
external requests; every text is escaped."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from polymodal.errors import PolymodalError
from polymodal.media.image import Image

THUMBNAIL_PIXELS = 200 * 200

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
h1{font-size:1.3rem} h2{font-size:1.05rem;margin-top:2rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
figure img{width:100%;height:200px;object-fit:contain;background:#eee}
figcaption{font-size:.8rem;word-break:break-all} .score{font-weight:600}
.missing{height:200px;display:flex;align-items:center;justify-content:center;background:#eee;color:#888}
"""


@dataclass(frozen=True)
class GalleryItem:
    """One tile: an image file, its score and an optional note (a label, a rank...)."""

    path: str
    score: float | None = None
    note: str = ""


@dataclass(frozen=True)
class GallerySection:
    """A titled group of tiles."""

    title: str
    items: Sequence[GalleryItem]


def thumbnail_data_url(path: str) -> str | None:
    """A small JPEG data URL of the image at ``path``, or None when it cannot be read."""
    try:
        return Image.from_path(path).encode("JPEG", quality=80, max_pixels=THUMBNAIL_PIXELS).data_url()
    except (PolymodalError, OSError, ValueError):
        return None


def render_gallery(title: str, sections: Sequence[GallerySection]) -> str:
    """The gallery as one HTML document."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2><div class='grid'>")
        for item in section.items:
            url = thumbnail_data_url(item.path)
            picture = (
                f"<img src='{url}' alt='{html.escape(Path(item.path).name, quote=True)}' loading='lazy'>"
                if url
                else "<div class='missing'>unavailable</div>"
            )
            score = f"<span class='score'>{item.score:.4f}</span> " if item.score is not None else ""
            note = f"{html.escape(item.note)}<br>" if item.note else ""
            parts.append(
                f"<figure>{picture}<figcaption>{score}{note}{html.escape(item.path)}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_gallery(out: str | Path, title: str, sections: Sequence[GallerySection]) -> Path:
    """Write :func:`render_gallery` to ``out`` (UTF-8) and return its path."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_gallery(title, sections), encoding="utf-8")
    return target


__all__ = ["GalleryItem", "GallerySection", "render_gallery", "thumbnail_data_url", "write_gallery"]
