"""Embedding protocols: dense (one vector per item) and multi-vector (one matrix per item, late interaction).

Implementations live one module per model family or provider (``siglip.py``, ``colpali.py``, ``sentence.py``,
``openai_compat``...). Indexes never embed; pipelines pass vectors from these to an index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from polymodal.media.document import Page
from polymodal.media.image import Image

FloatMatrix = npt.NDArray[np.float32]


@runtime_checkable
class DenseEmbedder(Protocol):
    """Maps images and/or texts into one shared vector space.

    ``id`` names the model exactly (an index records it and refuses vectors from another model); ``dim`` is
    the vector length; ``normalized`` says whether vectors come L2-normalised (so dot product = cosine).
    """

    id: str
    dim: int
    normalized: bool

    def embed_images(self, images: Sequence[Image]) -> FloatMatrix:
        """One row per image, shape ``(len(images), dim)``."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix:
        """One row per text, shape ``(len(texts), dim)``."""
        ...


@runtime_checkable
class MultiVectorEmbedder(Protocol):
    """Late-interaction embedder: a page becomes a matrix of patch/token vectors, scored by MaxSim."""

    id: str
    dim: int

    def embed_pages(self, pages: Sequence[Page]) -> list[FloatMatrix]:
        """One ``(n_vectors_i, dim)`` matrix per page (visual models read ``page.image``, text models
        ``page.text`` or OCR of the image)."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """One ``(n_tokens_i, dim)`` matrix per query."""
        ...


__all__ = ["DenseEmbedder", "FloatMatrix", "MultiVectorEmbedder"]
