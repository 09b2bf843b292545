"""Limits on untrusted media: every loader checks them and names the one that was hit."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Limits:
    """Upper bounds applied when decoding untrusted media.

    Attributes:
        max_bytes: largest file or download accepted, in bytes.
        max_pixels: largest decoded image (width x height); larger images are refused as decompression bombs.
        max_pages: most pages rendered from one document; a longer document is refused, not truncated.
        max_dpi: highest PDF render resolution.
        render_seconds: wall-clock budget for rendering one document in the worker process.
        fetch_seconds: wall-clock budget for downloading one URL.
        max_redirects: redirects followed when fetching a URL (each one re-checked).
        max_seconds: longest audio or video accepted, in seconds of media.
    """

    max_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 80_000_000
    max_pages: int = 500
    max_dpi: int = 300
    render_seconds: float = 120.0
    fetch_seconds: float = 30.0
    max_redirects: int = 5
    max_seconds: float = 4 * 3600.0

    def with_(self, **changes: int | float) -> Limits:
        """Return a copy with some limits changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_LIMITS = Limits()

__all__ = ["DEFAULT_LIMITS", "Limits"]
