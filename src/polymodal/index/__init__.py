"""Persistence and search of embeddings. Never embeds, never calls a model.

* :func:`open_multivector_index` -- a late-interaction (MaxSim) index: a directory opens the embedded engine,
  ``"qdrant:http://host:6333/collection"`` / ``"qdrant::memory:/collection"`` /
  ``"qdrant:path=DIR/collection"``
  a Qdrant collection.
* :class:`~polymodal.index.manifest.Manifest` -- the SQLite record that makes ingestion resumable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polymodal.index.base import MultiVectorHit, MultiVectorIndex, PayloadFilter
from polymodal.index.manifest import Manifest, Plan, PlannedItem, content_hash_of, point_id

QDRANT_PREFIX = "qdrant:"


def open_multivector_index(
    path_or_url: str | Path,
    *,
    dim: int,
    embedder_id: str,
    create: bool = True,
    **options: Any,
) -> MultiVectorIndex:
    """Open (or create) a multi-vector index.

    ``path_or_url``: a directory for the embedded engine, or ``"qdrant:<url>/<collection>"``,
    ``"qdrant::memory:/<collection>"`` or ``"qdrant:path=<dir>/<collection>"`` for Qdrant. ``dim`` and
    ``embedder_id`` must match what the index was created with (else :class:`~polymodal.errors.IndexError_`).
    ``create=False`` raises :class:`~polymodal.errors.IndexError_` when it does not exist. ``options`` go to
    the engine (e.g. ``nbits=2``, ``lock_timeout=10`` for the embedded one; ``quantization="binary"`` for
    Qdrant).

    Example::

        index = open_multivector_index("my-index", dim=128, embedder_id="colpali:vidore/colqwen2-v1.0")
        index.add(["p1"], [page_vectors], [{"document": "a.pdf", "page": 1}])
        index.flush()
        hits = index.search(query_vectors, k=5, filter={"document": "a.pdf"})
    """
    if isinstance(path_or_url, str) and path_or_url.startswith(QDRANT_PREFIX):
        from polymodal.index.qdrant_multi import QdrantMultiVectorIndex

        return QdrantMultiVectorIndex.from_url(
            path_or_url[len(QDRANT_PREFIX) :], dim=dim, embedder_id=embedder_id, create=create, **options
        )
    from polymodal.index.embedded import EmbeddedMultiVectorIndex

    return EmbeddedMultiVectorIndex(path_or_url, dim=dim, embedder_id=embedder_id, create=create, **options)


__all__ = [
    "Manifest",
    "MultiVectorHit",
    "MultiVectorIndex",
    "PayloadFilter",
    "Plan",
    "PlannedItem",
    "content_hash_of",
    "open_multivector_index",
    "point_id",
]
