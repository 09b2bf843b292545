"""``search --explain``: a heat map of where on a page the query matched (visual late-interaction models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from polymodal.errors import ConfigError, InputError
from polymodal.media.document import Document, Page
from polymodal.pipelines.retrieval import SearchHit


def heatmap_overlay(page: PILImage.Image, heat: np.ndarray, *, alpha: float = 0.55) -> PILImage.Image:
    """Blend a ``(rows, cols)`` heat grid, scaled to 0..1 and stretched over the page, in a "hot" colour map.

    The page is shown in grey underneath so the colours read as the query's match strength.
    """
    grid = np.asarray(heat, dtype=np.float32)
    low, high = float(grid.min()), float(grid.max())
    scaled = (grid - low) / (high - low) if high > low else np.zeros_like(grid)
    small = PILImage.fromarray((scaled * 255).astype(np.uint8), mode="L")
    level = np.asarray(small.resize(page.size, PILImage.Resampling.BILINEAR), dtype=np.float32) / 255.0
    hot = np.stack(
        [np.clip(3 * level, 0, 1), np.clip(3 * level - 1, 0, 1), np.clip(3 * level - 2, 0, 1)], axis=-1
    )
    base = np.asarray(page.convert("L").convert("RGB"), dtype=np.float32) / 255.0
    weight = alpha * level[..., None]
    blended = base * (1 - weight) + hot * weight
    return PILImage.fromarray((blended * 255).round().astype(np.uint8), mode="RGB")


def _render_page(hit: SearchHit, max_pixels: int | None) -> Page:
    try:
        for page in Document.open(hit.path, name=hit.document).iter_pages(max_pixels=max_pixels):
            if page.number == hit.page:
                return page
    except OSError as exc:
        raise InputError(hit.path, f"cannot re-open the page to explain it: {exc}") from exc
    raise InputError(hit.path, f"page {hit.page} no longer exists")


def explain_hit(query: str, hit: SearchHit, embedder: Any, out: str | Path) -> Path:
    """Write a PNG of ``hit``'s page with the query's patch similarity (summed over query tokens) on top."""
    if not hasattr(embedder, "similarity_map"):
        raise ConfigError(
            "--explain needs a visual late-interaction model",
            hint="index with --model colqwen2:DIR or colpali:DIR",
        )
    page = _render_page(hit, getattr(embedder, "page_max_pixels", None))
    similarity = embedder.similarity_map(query, page)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    heatmap_overlay(page.image.to_pil(), similarity.heat).save(target, format="PNG")
    return target


__all__ = ["explain_hit", "heatmap_overlay"]
