"""The dense-vector index contract: one L2-normalised vector per point, payloads, filters, persistence.

A dense index stores *points* (a string id, one ``dim``-long vector, a JSON payload) and answers cosine
nearest-neighbour queries. It never embeds; callers hand it vectors. The payload filter language, id and
payload validation are the ones of :mod:`polymodal.index.base`, shared with the multi-vector indexes::

    index.search(q, k=10, filter={"kind": "photo", "album": {"in": ["2023", "2024"]}})

Every implementation (the embedded engine, Qdrant) passes the same contract tests
(``tests/index/dense/test_congruence.py``):

* ``add`` upserts: adding an existing id replaces its vector and payload.
* Scores are cosine similarities (vectors are normalised on the way in), best first.
* Writes are visible to ``search`` at once and durable once ``flush`` returns.
* Opening with another ``embedder_id`` or ``dim`` than the index was created with, or adding or querying with
  vectors of another dimension, raises :class:`~polymodal.errors.IndexError_`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from polymodal.errors import IndexError_
from polymodal.index.base import FloatArray, PayloadFilter


@dataclass(frozen=True)
class DenseHit:
    """One search result: the point id, its cosine similarity (higher is closer) and its payload."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class DenseIndex(Protocol):
    """A persistent nearest-neighbour index of single vectors under cosine similarity."""

    @property
    def dim(self) -> int:
        """Vector dimension every point and query must have."""
        ...

    @property
    def embedder_id(self) -> str:
        """Id of the embedder that produced the vectors (e.g. ``"siglip:/models/siglip2-base-patch16"``)."""
        ...

    def add(
        self,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        payloads: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Upsert points: row ``i`` of the ``(n, dim)`` matrix ``vectors`` is the vector of ``ids[i]``."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Remove points by id; unknown ids are ignored."""
        ...

    def search(
        self, query: npt.ArrayLike, k: int = 10, *, filter: PayloadFilter | None = None
    ) -> list[DenseHit]:
        """The ``k`` nearest points to one ``(dim,)`` query vector, best first, restricted by ``filter``."""
        ...

    def vectors(self, ids: Sequence[str]) -> tuple[list[str], FloatArray]:
        """The stored (normalised) vectors of those ``ids`` that exist, with the ids found, in that order."""
        ...

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The payloads of those ``ids`` that exist."""
        ...

    def __len__(self) -> int:
        """Number of live points."""
        ...

    def ids(self) -> set[str]:
        """Ids of all live points."""
        ...

    def flush(self) -> None:
        """Persist: make every write so far durable."""
        ...

    def close(self) -> None:
        """Flush and release files and connections. Idempotent."""
        ...


@dataclass(frozen=True)
class DenseIndexInfo:
    """What a dense index records about itself: its embedder, the vector dimension and the metric."""

    embedder_id: str
    dim: int
    metric: str = "cosine"

    def check(self, embedder_id: str | None, dim: int | None, *, where: str) -> None:
        """Raise IndexError_ when another embedder or another dimension is asked for."""
        if embedder_id is not None and embedder_id != self.embedder_id:
            raise IndexError_(
                f"{where} was built with embedder {self.embedder_id!r}, not {embedder_id!r}: query it with "
                "the same model, or rebuild it for the new one (`polymodal images reindex`)"
            )
        if dim is not None and dim != self.dim:
            raise IndexError_(f"{where} holds {self.dim}-dimensional vectors, not {dim}-dimensional ones")


def normalize_rows(matrix: FloatArray, *, what: str) -> FloatArray:
    """L2-normalise each row; a zero row has no direction and is refused."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if (norms == 0).any():
        raise IndexError_(f"{what}: a zero vector has no direction and cannot be indexed or searched")
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


__all__ = ["DenseHit", "DenseIndex", "DenseIndexInfo", "normalize_rows"]
