"""Candidate structures of the embedded dense engine: they propose keys, the engine rescores them exactly.

Two structures behind one small interface (:class:`CandidateStructure`), both caches of the float32
originals (rebuilt from them when missing, torn or outgrown):

* :class:`IvfPqCandidates` (``engine="ivf-pq"``, the default): a faiss inverted file (``nlist`` k-means cells)
  over 4-bit product-quantized codes scanned with SIMD look-up tables (``IndexIVFPQFastScan``, one bit per
  dimension; two below 256 dimensions). Builds in seconds where a graph takes minutes, and the cell probe
  finds every cluster of clustered embeddings, where a graph walk can stay stuck in the wrong one
  (docs/benchmarks/dense.md).
* :class:`HnswCandidates` (``engine="hnsw"``): a usearch HNSW graph over int8 (or f16/f32) vectors; needs no
  training, so it suits indexes that grow by small steps from nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from polymodal.errors import ConfigError, IndexError_

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
#: An inverted file is retrained (cells and codebooks) once the index holds this many times the points it
#: was trained on: cells drawn from a small sample get too long as the index grows.
RETRAIN_GROWTH = 8
#: Fewest points an inverted file is trained on, whatever ``min_train`` says (k-means and the 16-entry
#: product codebooks need points to learn from; an index this small is scanned exactly anyway).
TRAIN_FLOOR = 1024


class CandidateStructure(Protocol):
    """What the embedded dense engine needs of an approximate structure (keys are int64 row numbers)."""

    def __len__(self) -> int: ...

    @property
    def ready(self) -> bool:
        """True when points can be added (an inverted file must be trained first)."""
        ...

    def keys(self) -> I64:
        """Every key held (any order)."""
        ...

    def add(self, keys: I64, vectors: F32) -> None:
        """Insert normalised vectors under ``keys``."""
        ...

    def remove(self, keys: I64) -> None:
        """Drop ``keys`` (unknown keys are ignored)."""
        ...

    def candidates(self, q: F32, count: int, allowed: I64 | None) -> I64 | None:
        """About ``count`` keys near ``q`` (restricted to the sorted ``allowed`` keys when given); None when
        the structure cannot answer the restricted search well (the engine then scans exactly)."""
        ...

    def wants_rebuild(self, live: int) -> bool:
        """True when the structure should be rebuilt from all ``live`` originals (untrained, outgrown)."""
        ...

    def save(self, path: Path) -> None:
        """Write the structure to ``path``."""
        ...

    def load(self, path: Path) -> None:
        """Replace the contents with what :meth:`save` wrote (IndexError_ when the file is unusable)."""
        ...


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ConfigError(
            "the embedded dense index needs faiss", hint="pip install 'polymodal[index]'"
        ) from exc
    return faiss


def default_nlist(n: int) -> int:
    """Inverted-file cells for ``n`` points: the power of two nearest ``sqrt(n)``, within 16..8192, and at
    least 39 training points per cell (faiss's minimum)."""
    cells = min(8192, max(16, 2 ** round(math.log2(math.sqrt(max(n, 1))))))
    return int(max(1, min(cells, n // 39)))


def pq_subvectors(dim: int) -> int:
    """Sub-quantizers (4 bits each) for ``dim``: one per 4 dimensions, one per 2 up to 256 dimensions.

    Measured on 1M x 768 clustered vectors (docs/benchmarks/dense.md): one code per 8 dimensions halved the
    bytes but capped recall@10 after rescoring 100 candidates at 0.989, against 0.9997 with one per 4, for
    0.05 ms more. Small vectors get finer codes: at 48-64 dimensions one code per 4 left recall at 0.8-0.9.
    """
    preferred = (2, 4, 3, 6, 8) if dim <= 256 else (4, 6, 8, 2, 3, 5, 7)
    for width in preferred:
        if dim % width == 0:
            return dim // width
    return dim


class IvfPqCandidates:
    """faiss ``IndexIVFPQFastScan`` with our keys as ids; trained by :meth:`trained` (see module docstring).

    Args:
        dim: vector dimension.
        nprobe: cells scanned per query (capped at the number of cells).
        min_train: fewest points it is trained on; smaller indexes are scanned exactly by the engine.
    """

    def __init__(self, dim: int, *, nprobe: int, min_train: int, index: Any = None, trained_on: int = 0):
        self.dim = dim
        self.nprobe = nprobe
        self.min_train = min_train
        self._index = index
        self.trained_on = trained_on

    def load(self, path: Path) -> None:
        """Read a structure written by :meth:`save` into this one (IndexError_ when the file is unusable)."""
        faiss = _faiss()
        try:
            with np.load(path) as stored:
                index = faiss.deserialize_index(stored["index"])
                trained_on = int(stored["trained_on"])
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise IndexError_(f"{path}: unreadable inverted file: {exc}") from exc
        if index.d != self.dim:
            raise IndexError_(f"{path}: inverted file holds {index.d}-d vectors, not {self.dim}-d")
        self._index, self.trained_on = index, trained_on

    @classmethod
    def trained(cls, rows: F32, keys: I64, *, nprobe: int, min_train: int, seed: int = 0) -> IvfPqCandidates:
        """An empty structure whose cells and codebooks are trained on a sample of ``rows[keys]``."""
        faiss = _faiss()
        dim = int(rows.shape[1])
        nlist = default_nlist(len(keys))
        sample_size = min(len(keys), 64 * nlist)
        sample_keys = np.sort(np.random.default_rng(seed).choice(keys, sample_size, replace=False))
        sample = np.ascontiguousarray(rows[sample_keys], dtype=np.float32)
        index = faiss.IndexIVFPQFastScan(
            faiss.IndexFlatIP(dim), dim, nlist, pq_subvectors(dim), 4, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.niter = 10
        index.cp.seed = seed
        index.train(sample)
        return cls(dim, nprobe=nprobe, min_train=min_train, index=index, trained_on=len(keys))

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def ready(self) -> bool:
        """True once trained."""
        return self._index is not None

    def keys(self) -> I64:
        """Every key, read from the inverted lists."""
        if not len(self):
            return np.zeros(0, dtype=np.int64)
        faiss = _faiss()
        lists = self._index.invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(cell), lists.list_size(cell)).copy()
            for cell in range(self._index.nlist)
            if lists.list_size(cell)
        ]
        return np.concatenate(parts).astype(np.int64)

    def add(self, keys: I64, vectors: F32) -> None:
        """Encode and insert (the structure must have been built)."""
        if self._index is None:
            raise IndexError_("the inverted file is not trained yet")
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), keys.astype(np.int64))

    def remove(self, keys: I64) -> None:
        """Drop keys from their cells."""
        if self._index is not None and len(keys):
            self._index.remove_ids(_faiss().IDSelectorBatch(keys.astype(np.int64)))

    def candidates(self, q: F32, count: int, allowed: I64 | None) -> I64 | None:
        """Scan the ``nprobe`` nearest cells (only ``allowed`` keys, when given)."""
        if self._index is None:
            return None
        faiss = _faiss()
        nprobe = min(self.nprobe, self._index.nlist)
        selector = None if allowed is None else faiss.IDSelectorBatch(allowed.astype(np.int64))
        params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)
        _, found = self._index.search(q.reshape(1, -1).astype(np.float32), count, params=params)
        hits: I64 = np.asarray(found[0], dtype=np.int64)
        return hits[hits >= 0]

    def wants_rebuild(self, live: int) -> bool:
        """Untrained with enough points, or grown :data:`RETRAIN_GROWTH` times past its training."""
        if live < max(self.min_train, TRAIN_FLOOR):
            return False
        return self._index is None or live > RETRAIN_GROWTH * max(self.trained_on, 1)

    def save(self, path: Path) -> None:
        """Write the inverted file and how many points it was trained on (one ``.npz`` file)."""
        if self._index is None:
            raise IndexError_("an untrained inverted file has nothing to save")
        with open(path, "wb") as handle:
            np.savez(handle, index=_faiss().serialize_index(self._index), trained_on=self.trained_on)


class HnswCandidates:
    """A usearch HNSW graph (cosine) over ``quantization`` vectors; see :class:`EngineSettings`."""

    def __init__(
        self,
        dim: int,
        *,
        quantization: str,
        connectivity: int,
        expansion_add: int,
        expansion_search: int,
        threads: int,
    ) -> None:
        from usearch.index import Index

        self.expansion_search = expansion_search
        self.threads = threads
        self._graph: Any = Index(
            ndim=dim,
            metric="cos",
            dtype=quantization,
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )

    def load(self, path: Path) -> None:
        """Read a saved graph into this one (IndexError_ when the file is unusable)."""
        try:
            self._graph.load(str(path))
        except (RuntimeError, ValueError, OSError) as exc:
            raise IndexError_(f"{path}: unreadable graph: {exc}") from exc
        self._graph.expansion_search = self.expansion_search

    def __len__(self) -> int:
        return len(self._graph)

    @property
    def ready(self) -> bool:
        """Always: a graph needs no training."""
        return True

    def keys(self) -> I64:
        """Every key in the graph."""
        return np.asarray(self._graph.keys, dtype=np.int64) if len(self._graph) else np.zeros(0, np.int64)

    def add(self, keys: I64, vectors: F32) -> None:
        """Insert into the graph (all cores unless ``threads`` says otherwise)."""
        self._graph.add(keys, np.ascontiguousarray(vectors), threads=self.threads)

    def remove(self, keys: I64) -> None:
        """Drop keys from the graph."""
        if len(keys):
            self._graph.remove(keys)

    def _walk(self, q: F32, count: int) -> I64:
        self._graph.expansion_search = max(self.expansion_search, count)
        return np.asarray(self._graph.search(q, count).keys, dtype=np.int64)

    def candidates(self, q: F32, count: int, allowed: I64 | None) -> I64 | None:
        """Walk the graph; with ``allowed``, over-fetch by the filter's selectivity (None if that fails)."""
        size = len(self._graph)
        if allowed is None:
            return self._walk(q, count)
        wanted = int(min(size, count / max(len(allowed) / max(size, 1), 1e-6) * 2))
        while True:
            found = self._walk(q, wanted)
            kept = found[np.isin(found, allowed, assume_unique=True)]
            if len(kept) >= count or wanted >= size:
                return kept
            if wanted * 4 > size:  # the graph cannot give enough
                return None
            wanted *= 4

    def wants_rebuild(self, live: int) -> bool:
        """Never: a graph grows point by point."""
        return False

    def save(self, path: Path) -> None:
        """Write the graph."""
        self._graph.save(str(path))


__all__ = ["RETRAIN_GROWTH", "CandidateStructure", "HnswCandidates", "IvfPqCandidates", "default_nlist"]
