"""Immutable segments and their MaxSim kernels.

A *raw* segment stores float16 vectors and is searched exactly (small indexes, before a codebook exists). A
*pq* segment stores centroid ids + 2-bit residual codes, and optionally a re-rank store (int8 residuals with a
scale per token, or float16 originals). It is searched in stages (after PLAID, Santhanam et al. 2022): (1)
candidates from the inverted lists of each query token's nearest centroids, scored with centroid similarities
only; (2) full centroid interaction (every distinct centroid of a candidate); (3) MaxSim from the re-rank
store, or from the decoded 2-bit vectors when there is none (see search.py).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from polymodal.index.embedded.codec import Codebook
from polymodal.index.embedded.storage import RowFile, load_array, load_points

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_TOKEN_CHUNK = 262_144
_CAST_CHUNK = 16_384  # tokens cast to float32 at a time (8 MB at 128-d: stays in cache)


def ranges_index(starts: I64, stops: I64) -> I64:
    """Concatenation of ``arange(starts[i], stops[i])`` for all i, without a Python loop."""
    lengths = stops - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(total, dtype=np.int64) + offsets


_READERS: ThreadPoolExecutor | None = None


def _read_pool() -> ThreadPoolExecutor:
    """Threads that read re-rank stores ahead of the scoring (pread releases the GIL)."""
    global _READERS
    if _READERS is None:
        _READERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="polymodal-read")
    return _READERS


def token_scores(block: np.ndarray, query: F32) -> F32:
    """``block @ query.T`` in float32 for a float16 or int8 ``block``, cast one cache-sized chunk at a time
    (casting the whole block first and multiplying after is twice as slow: it goes through memory twice)."""
    out = np.empty((block.shape[0], query.shape[0]), dtype=np.float32)
    buffer = np.empty((min(_CAST_CHUNK, block.shape[0]), block.shape[1]), dtype=np.float32)
    query_t = np.ascontiguousarray(query.T)
    for start in range(0, block.shape[0], _CAST_CHUNK):
        part = block[start : start + _CAST_CHUNK]
        cast = buffer[: part.shape[0]]
        cast[...] = part
        np.matmul(cast, query_t, out=out[start : start + part.shape[0]])
    return out


def maxsim_from_token_scores(scores: F32, lengths: I64) -> F32:
    """Per-point MaxSim from token-by-query scores ``(n_tokens, n_q)`` of consecutive points of
    ``lengths``."""
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.float32)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    best: F32 = np.maximum.reduceat(scores, starts, axis=0).sum(axis=1).astype(np.float32)
    return best


def exact_maxsim(vectors: np.ndarray, offsets: I64, rows: I64, query: F32) -> F32:
    """Exact MaxSim of ``query`` against points ``rows`` whose tokens are
    ``vectors[offsets[r]:offsets[r+1]]``."""
    scores = np.empty(len(rows), dtype=np.float32)
    done = 0
    while done < len(rows):
        # take as many points as fit in one chunk of tokens
        batch_end = done + 1
        budget = int(offsets[rows[done] + 1] - offsets[rows[done]])
        while batch_end < len(rows):
            size = int(offsets[rows[batch_end] + 1] - offsets[rows[batch_end]])
            if budget + size > _TOKEN_CHUNK:
                break
            budget += size
            batch_end += 1
        batch = rows[done:batch_end]
        starts, stops = offsets[batch], offsets[batch + 1]
        if len(batch) == 1 or np.all(starts[1:] == stops[:-1]):
            block = np.asarray(vectors[int(starts[0]) : int(stops[-1])])
        else:
            block = np.asarray(vectors[ranges_index(starts, stops)])
        scores[done:batch_end] = maxsim_from_token_scores(token_scores(block, query), stops - starts)
        done = batch_end
    return scores


@dataclass
class Segment:
    """One immutable segment, memory-mapped; ``live`` marks rows not deleted."""

    name: str
    kind: str  # "raw" | "pq"
    ids: list[str] = field(repr=False)
    payloads: list[dict[str, Any]] = field(repr=False)
    offsets: I64 = field(repr=False)
    arrays: dict[str, np.ndarray] = field(repr=False)
    directory: Path | None = field(default=None, repr=False)  # where re-rank stores are read from
    live: BoolArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.live = np.ones(len(self.ids), dtype=bool)
        self._columns: dict[str, np.ndarray] = {}
        self._row_files: dict[str, RowFile | None] = {}

    @classmethod
    def load(cls, directory: Path, name: str, kind: str) -> Segment:
        """Open a committed segment directory."""
        path = directory / name
        ids, payloads = load_points(path)
        names = (
            ["vectors"]
            if kind == "raw"
            else ["cids", "codes", "page_cids_offsets", "page_cids", "ivf_offsets", "ivf_points"]
        )
        if kind == "pq":  # a re-rank store, when the index keeps one
            names += [key for key in ("vectors", "residuals", "scales") if (path / f"{key}.npy").exists()]
        arrays = {key: load_array(path / f"{key}.npy") for key in names}
        offsets = np.asarray(load_array(path / "offsets.npy"), dtype=np.int64)
        return cls(name, kind, ids, payloads, offsets, arrays, path)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_tokens(self) -> int:
        """Tokens stored (deleted points included)."""
        return int(self.offsets[-1])

    def column(self, key: str) -> np.ndarray:
        """Payload values of ``key`` for every row (None where absent), cached for filtering."""
        if key not in self._columns:
            column = np.empty(len(self.ids), dtype=object)
            column[:] = [payload.get(key) for payload in self.payloads]
            self._columns[key] = column
        return self._columns[key]

    @property
    def rerank_store(self) -> str:
        """What the last stage scores with: ``"float16"`` originals, ``"int8"`` residuals, or ``"none"``."""
        if self.kind == "raw" or "vectors" in self.arrays:
            return "float16"
        return "int8" if "residuals" in self.arrays else "none"

    def vectors_of(self, row: int, codebook: Codebook | None) -> F32:
        """The best stored approximation of one row's vectors (originals, int8 or 2-bit decoded)."""
        return self._approximation(slice(int(self.offsets[row]), int(self.offsets[row + 1])), codebook)

    def sample_tokens(self, share: float, rng: np.random.Generator, codebook: Codebook | None) -> F32:
        """About ``share`` of the live tokens, drawn uniformly, as their best stored approximation."""
        live_token = np.repeat(self.live, np.diff(self.offsets))
        return self._approximation(
            np.flatnonzero(live_token & (rng.random(len(live_token)) < share)), codebook
        )

    def _approximation(self, tokens: slice | I64, codebook: Codebook | None) -> F32:
        if "vectors" in self.arrays:
            return np.asarray(self.arrays["vectors"][tokens], dtype=np.float32)
        assert codebook is not None
        cids = np.asarray(self.arrays["cids"][tokens])
        if "residuals" in self.arrays:
            residuals = np.asarray(self.arrays["residuals"][tokens])
            return codebook.decode_int8(cids, residuals, np.asarray(self.arrays["scales"][tokens]))
        return codebook.decode(cids, np.asarray(self.arrays["codes"][tokens]))

    def token_rows(self, key: str, rows: I64) -> np.ndarray:
        """Rows of the per-token array ``key`` for the tokens of points ``rows`` (sorted), read with pread."""
        starts, stops = self.offsets[rows], self.offsets[rows + 1]
        reader = self._row_file(key)
        if reader is None:
            return np.asarray(self.arrays[key])[ranges_index(starts, stops)]
        return reader.read_ranges(starts, stops)

    def _row_file(self, key: str) -> RowFile | None:
        """The pread reader of ``key``'s file (opened once), or None where it is not read from a file."""
        if key not in self._row_files:
            path = None if self.directory is None else self.directory / f"{key}.npy"
            usable = path is not None and hasattr(os, "preadv") and path.exists()
            self._row_files[key] = RowFile(path) if usable and path is not None else None
        return self._row_files[key]

    # -- search -

    def exact_scores(self, rows: I64, query: F32) -> F32:
        """Exact MaxSim of ``rows`` from float16 vectors (raw segments, or the float16 re-rank store)."""
        if self.kind == "raw":
            return exact_maxsim(self.arrays["vectors"], self.offsets, rows, query)
        return self._stored_scores("vectors", rows, query, None)

    def int8_scores(self, rows: I64, query: F32, centroid_scores_t: F32) -> F32:
        """MaxSim from the int8 re-rank store: ``<q, c> + scale * <q, r8>``, centroid part precomputed."""
        return self._stored_scores("residuals", rows, query, centroid_scores_t)

    def _stored_scores(self, key: str, rows: I64, query: F32, centroid_scores_t: F32 | None) -> F32:
        """MaxSim of ``rows`` from the re-rank store ``key``, a cache-sized group of points at a time (read,
        cast, multiplied and reduced while in cache: about twice as fast as each step over all rows)."""
        starts, stops = self.offsets[rows], self.offsets[rows + 1]
        lengths = stops - starts
        out = np.empty(len(rows), dtype=np.float32)
        query_t = np.ascontiguousarray(query.T)
        ends = np.cumsum(lengths)
        cuts = np.searchsorted(ends, np.arange(_CAST_CHUNK, int(ends[-1]) if len(ends) else 0, _CAST_CHUNK))
        bounds = np.unique(np.concatenate(([0], cuts + 1, [len(rows)])).clip(0, len(rows)))
        groups = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
        if len(groups) == 0:
            return out
        self._row_file(key)  # opened once, before the reader threads share it
        # reads run ahead on reader threads (a cold page cache means disk reads: overlap them with the math)
        blocks = _read_pool().map(lambda group: self.token_rows(key, rows[group[0] : group[1]]), groups)
        for (first, last), block in zip(groups, blocks, strict=True):
            scores = block.astype(np.float32) @ query_t
            if centroid_scores_t is not None:
                tokens = ranges_index(starts[first:last], stops[first:last])
                scores *= np.asarray(self.arrays["scales"])[tokens][:, None]
                scores += centroid_scores_t[np.asarray(self.arrays["cids"])[tokens]]
            out[first:last] = maxsim_from_token_scores(scores, lengths[first:last])
        return out

    def decoded_scores(self, rows: I64, query: F32, codebook: Codebook, centroid_scores_t: F32) -> F32:
        """MaxSim on decoded vectors of ``rows``: ``<q, c + r> = <q, c> + <q, r>``, centroid part
        precomputed."""
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float32)
        starts, stops = self.offsets[rows], self.offsets[rows + 1]
        tokens = ranges_index(starts, stops)
        cids = np.asarray(self.arrays["cids"])[tokens]
        scores = codebook.decode_residuals(self.token_rows("codes", rows)) @ query.T
        scores += centroid_scores_t[cids]
        return maxsim_from_token_scores(scores, stops - starts)

    def centroid_scores(self, rows: I64, centroid_scores_t: F32) -> F32:
        """Approximate MaxSim of ``rows`` from each row's distinct centroids (``centroid_scores_t``: (K,
        n_q))."""
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float32)
        offsets = np.asarray(self.arrays["page_cids_offsets"])
        starts, stops = offsets[rows], offsets[rows + 1]
        cids = np.asarray(self.arrays["page_cids"])[ranges_index(starts, stops)]
        return maxsim_from_token_scores(centroid_scores_t[cids], stops - starts)

    def probe_scores(self, probe_ids: npt.NDArray[np.int64], probe_scores: F32) -> tuple[F32, BoolArray]:
        """Stage 1: per row, sum over query tokens of its best probed centroid score.

        ``probe_ids`` / ``probe_scores`` are ``(n_q, nprobe)``, each row sorted by descending score. A row
        without any probed centroid for a query token gets that token's lowest probed score (an upper bound).
        Returns the scores and a mask of rows hit by at least one probe.
        """
        n_q, _ = probe_ids.shape
        n_rows = len(self.ids)
        floor = probe_scores[:, -1]
        table = np.repeat(floor[:, None], n_rows, axis=1)
        ivf_offsets = np.asarray(self.arrays["ivf_offsets"])
        ivf_points = np.asarray(self.arrays["ivf_points"])
        flat_ids = probe_ids.reshape(-1)
        starts, stops = ivf_offsets[flat_ids], ivf_offsets[flat_ids + 1]
        positions = ranges_index(starts, stops)
        rows = ivf_points[positions].astype(np.int64)
        lengths = stops - starts
        values = np.repeat(probe_scores.reshape(-1), lengths)
        query_of = np.repeat(np.repeat(np.arange(n_q), probe_ids.shape[1]), lengths)
        flat = table.reshape(-1)
        # descending scores per query token: write in reverse so the best probe of each row wins
        flat[(query_of * n_rows + rows)[::-1]] = values[::-1]
        hit = np.zeros(n_rows, dtype=bool)
        hit[rows] = True
        return table.sum(axis=0), hit


def build_pq_arrays(offsets: I64, cids: np.ndarray, n_centroids: int) -> dict[str, np.ndarray]:
    """The point-level arrays of a pq segment from its tokens' centroid ids: offsets, the distinct-centroid
    CSR of each point and the centroid -> points inverted lists."""
    n_rows = len(offsets) - 1
    lengths = np.diff(offsets)
    row_of_token = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
    pairs = np.unique(row_of_token * n_centroids + cids.astype(np.int64))
    pair_rows, pair_cids = np.divmod(pairs, n_centroids)
    page_cids_offsets = np.searchsorted(pair_rows, np.arange(n_rows + 1)).astype(np.int64)
    order = np.argsort(pair_cids, kind="stable")
    ivf_offsets = np.searchsorted(pair_cids[order], np.arange(n_centroids + 1)).astype(np.int64)
    return {
        "offsets": offsets,
        "page_cids_offsets": page_cids_offsets,
        "page_cids": pair_cids.astype(cids.dtype),
        "ivf_offsets": ivf_offsets,
        "ivf_points": pair_rows[order].astype(np.int32),
    }
