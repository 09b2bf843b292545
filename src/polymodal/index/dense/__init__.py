"""Dense (one vector per point) indexes: the embedded engine and Qdrant behind one protocol.

See :func:`open_dense_index` and :class:`~polymodal.index.dense.base.DenseIndex`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polymodal.index.dense.base import DenseHit, DenseIndex, DenseIndexInfo

QDRANT_PREFIX = "qdrant:"


def open_dense_index(
    path_or_url: str | Path,
    *,
    dim: int,
    embedder_id: str,
    create: bool = True,
    **options: Any,
) -> DenseIndex:
    """Open (or create) a dense index.

    ``path_or_url``: a directory for the embedded engine, or ``"qdrant:<url>/<collection>"``,
    ``"qdrant::memory:/<collection>"`` or ``"qdrant:path=<dir>/<collection>"`` for Qdrant (the same syntax
    as :func:`polymodal.index.open_multivector_index`). ``dim`` and ``embedder_id`` must match what the index
    was created with, else :class:`~polymodal.errors.IndexError_`. ``options`` go to the engine: for the
    embedded one :class:`~polymodal.index.dense.embedded.EngineSettings` fields, ``read_only``,
    ``lock_timeout`` and ``progress``; for Qdrant ``quantization="scalar"|"binary"``, ``payload_indexes``...

    Example::

        index = open_dense_index("photos.idx", dim=768, embedder_id=embedder.id)
        index.add(["a", "b"], embedder.embed_images(images), [{"path": "a.jpg"}, {"path": "b.jpg"}])
        index.flush()
        hits = index.search(embedder.embed_texts(["a red bicycle"])[0], k=5)
    """
    if isinstance(path_or_url, str) and path_or_url.startswith(QDRANT_PREFIX):
        from polymodal.index.dense.qdrant import QdrantDenseIndex

        return QdrantDenseIndex.from_url(
            path_or_url[len(QDRANT_PREFIX) :], dim=dim, embedder_id=embedder_id, create=create, **options
        )
    from polymodal.index.dense.embedded import EmbeddedDenseIndex

    return EmbeddedDenseIndex(path_or_url, dim=dim, embedder_id=embedder_id, create=create, **options)


def read_dense_index_info(path_or_url: str | Path) -> DenseIndexInfo:
    """The embedder id and dimension an existing index was built with (without knowing them in advance)."""
    if isinstance(path_or_url, str) and path_or_url.startswith(QDRANT_PREFIX):
        from polymodal.index.dense.qdrant import read_qdrant_info

        return read_qdrant_info(path_or_url[len(QDRANT_PREFIX) :])
    from polymodal.index.dense.embedded import read_embedded_info

    return read_embedded_info(Path(path_or_url))


__all__ = ["DenseHit", "DenseIndex", "DenseIndexInfo", "open_dense_index", "read_dense_index_info"]
