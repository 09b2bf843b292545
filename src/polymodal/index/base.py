"""Protocols and value types of the index layer.

An index stores *points*: a string id, a set of vectors (one per page patch / query token for late
interaction,
shape ``(n_tokens, dim)``) and a JSON-serialisable payload. It never embeds; callers hand it vectors.

Scores are late-interaction MaxSim: for a query ``Q`` (``(n_q, dim)``) and a page ``D``,
``score = sum_i max_j <Q_i, D_j>``. Vectors are used as given (embedders normalise them).

Payload filters are deliberately small and identical on every engine:

* ``{"document": "a.pdf"}`` -- equality on a payload key;
* ``{"page": {"in": [1, 2, 3]}}`` -- membership;
* several keys are AND-ed.

See :func:`polymodal.index.open_multivector_index` to open one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from polymodal.errors import IndexError_

#: A payload filter: ``{key: value}`` (equality) or ``{key: {"in": [values...]}}``; keys are AND-ed.
PayloadFilter = Mapping[str, Any]

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class MultiVectorHit:
    """One search result: the point id, its MaxSim score (higher is better) and its payload."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class MultiVectorIndex(Protocol):
    """A late-interaction (multi-vector, MaxSim) index of points.

    Implementations: the embedded engine (:class:`polymodal.index.embedded.EmbeddedMultiVectorIndex`, default,
    no server) and Qdrant (:class:`polymodal.index.qdrant_multi.QdrantMultiVectorIndex`).

    Contract shared by every implementation (tests/index/test_congruence.py checks it):

    * ``add`` upserts: adding an existing id replaces its vectors and payload.
    * Writes become visible to ``search`` immediately in the writing process, and durable once ``flush``
      returns. Only after ``flush`` may a caller record the ids as done (see :mod:`polymodal.index.manifest`).
    * Opening or adding with another ``embedder_id`` or ``dim`` than the index was created with raises
      :class:`~polymodal.errors.IndexError_`.
    """

    @property
    def dim(self) -> int:
        """Vector dimension every point and query must have."""
        ...

    @property
    def embedder_id(self) -> str:
        """Id of the embedder that produced the vectors (e.g. ``"colpali:vidore/colqwen2-v1.0"``)."""
        ...

    def add(
        self,
        ids: Sequence[str],
        vectors: Sequence[npt.ArrayLike],
        payloads: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Upsert points: ``vectors[i]`` is a ``(n_tokens, dim)`` array for ``ids[i]``; payloads are JSON
        dicts."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Remove points by id; unknown ids are ignored."""
        ...

    def search(
        self, query: npt.ArrayLike, k: int = 10, *, filter: PayloadFilter | None = None
    ) -> list[MultiVectorHit]:
        """Return the ``k`` best points for a ``(n_q, dim)`` query, best first, restricted by ``filter``."""
        ...

    def search_many(
        self, queries: Sequence[npt.ArrayLike], k: int = 10, *, filter: PayloadFilter | None = None
    ) -> list[list[MultiVectorHit]]:
        """Run :meth:`search` for several queries."""
        ...

    def __len__(self) -> int:
        """Number of live points."""
        ...

    def ids(self) -> set[str]:
        """Ids of all live points."""
        ...

    def flush(self) -> None:
        """Make every write so far durable (on disk, fsync-ed / acknowledged by the server)."""
        ...

    def close(self) -> None:
        """Flush and release files, locks and connections. Idempotent."""
        ...


# ---------------------------------------------------------------------------------------------------------
# Helpers shared by the implementations (validation and the filter language).
# ---------------------------------------------------------------------------------------------------------


def as_matrix(vectors: npt.ArrayLike, dim: int, *, what: str) -> FloatArray:
    """Return ``vectors`` as a C-contiguous float32 ``(n, dim)`` matrix or raise :class:`IndexError_`."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise IndexError_(f"{what}: expected vectors of shape (n, {dim}), got {tuple(np.shape(vectors))}")
    if array.shape[0] == 0:
        raise IndexError_(f"{what}: no vectors (a point needs at least one)")
    if not np.isfinite(array).all():
        raise IndexError_(f"{what}: vectors contain NaN or infinity")
    return np.ascontiguousarray(array)


def check_add_args(
    ids: Sequence[str], vectors: Sequence[Any], payloads: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """Validate the parallel ``add`` arguments; return the payloads as plain dicts (``{}`` when omitted)."""
    if isinstance(ids, str):
        raise IndexError_("ids must be a sequence of strings, not one string")
    if len(ids) != len(vectors):
        raise IndexError_(f"add: {len(ids)} ids but {len(vectors)} vector sets")
    if payloads is not None and len(payloads) != len(ids):
        raise IndexError_(f"add: {len(ids)} ids but {len(payloads)} payloads")
    if len(set(ids)) != len(ids):
        raise IndexError_("add: duplicate ids in one call")
    for point_id in ids:
        if not isinstance(point_id, str) or not point_id:
            raise IndexError_(f"add: ids must be non-empty strings, got {point_id!r}")
    return [dict(p) for p in payloads] if payloads is not None else [{} for _ in ids]


def check_filter(filter: PayloadFilter | None) -> dict[str, tuple[str, Any]]:
    """Normalise a filter to ``{key: ("eq", value) | ("in", frozenset_or_list)}``; raise on anything else."""
    if not filter:
        return {}
    normalised: dict[str, tuple[str, Any]] = {}
    for key, condition in filter.items():
        if not isinstance(key, str):
            raise IndexError_(f"filter keys must be strings, got {key!r}")
        if isinstance(condition, Mapping):
            if set(condition) != {"in"}:
                raise IndexError_(f"filter on {key!r}: only equality or {{'in': [...]}} is supported")
            values = condition["in"]
            if isinstance(values, str | bytes) or not isinstance(values, Sequence | set | frozenset):
                raise IndexError_(f"filter on {key!r}: 'in' needs a list of values")
            _check_scalars(key, values)
            normalised[key] = ("in", list(values))
        else:
            _check_scalars(key, [condition])
            normalised[key] = ("eq", condition)
    return normalised


def _check_scalars(key: str, values: Any) -> None:
    for value in values:
        if not isinstance(value, str | int | bool) or isinstance(value, float):
            raise IndexError_(f"filter on {key!r}: values must be str, int or bool, got {value!r}")


def payload_matches(payload: Mapping[str, Any], conditions: Mapping[str, tuple[str, Any]]) -> bool:
    """True when ``payload`` satisfies every normalised condition (see :func:`check_filter`)."""
    for key, (op, expected) in conditions.items():
        if key not in payload:
            return False
        value = payload[key]
        if op == "eq":
            if not _same(value, expected):
                return False
        elif not any(_same(value, option) for option in expected):
            return False
    return True


def _same(value: Any, expected: Any) -> bool:
    # bool is an int in Python; keep True != 1 so both engines agree with Qdrant's typed matching.
    return type(value) is type(expected) and value == expected


__all__ = [
    "MultiVectorHit",
    "MultiVectorIndex",
    "PayloadFilter",
    "as_matrix",
    "check_add_args",
    "check_filter",
    "payload_matches",
]
