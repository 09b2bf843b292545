"""The staged search over one compressed segment, and payload filtering (see segment.py for the kernels)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from polymodal.index.embedded.codec import Codebook
from polymodal.index.embedded.segment import Segment

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class StageSizes:
    """How many points survive each stage: probe -> ``candidates`` -> centroid interaction -> ``rerank``.

    The ``rerank`` points get their final scores from the int8 store; without a re-rank store from the
    decoded 2-bit vectors; with float16 originals, the ``exact_rerank`` best by decoded score are scored
    exactly.
    """

    candidates: int = 256
    rerank: int = 96
    exact_rerank: int = 64


DEFAULT_STAGES = {
    # measured at 25K ColPali-shaped pages (docs/benchmarks/retrieval.md)
    "int8": StageSizes(candidates=256, rerank=96),
    "none": StageSizes(candidates=256, rerank=64),
    "float16": StageSizes(candidates=256, rerank=96, exact_rerank=96),  # exact on all 96: no decoding
}


def probe_centroids(centroid_scores_t: F32, nprobe: int) -> tuple[I64, F32]:
    """The ``nprobe`` best centroids of each query token (ids and scores, best first); input is (K, n_q)."""
    scores = centroid_scores_t.T
    nprobe = max(1, min(nprobe, scores.shape[1]))
    top = np.argpartition(-scores, nprobe - 1, axis=1)[:, :nprobe]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1)
    ids = np.take_along_axis(top, order, axis=1).astype(np.int64)
    return ids, np.take_along_axis(top_scores, order, axis=1)


def staged_scores(
    segment: Segment,
    rows: I64,
    eligible: npt.NDArray[np.bool_],
    query: F32,
    codebook: Codebook,
    centroid_scores_t: F32,
    probes: tuple[I64, F32],
    k: int,
    sizes: StageSizes,
) -> tuple[I64, F32]:
    """Rows of the best points among ``rows`` (the eligible ones) and their final scores."""
    # a large k widens every stage so that k results survive it
    n_candidates = max(sizes.candidates, 4 * k)
    n_rerank = max(sizes.rerank, k)
    n_exact = max(sizes.exact_rerank, k)
    if len(rows) > n_candidates:
        approx, hit = segment.probe_scores(*probes)
        approx[~(eligible & hit)] = -np.inf
        keep = min(n_candidates, int((eligible & hit).sum()))
        if keep < n_rerank:  # too few probed hits (e.g. a narrow filter): fall back to every eligible row
            approx[~eligible] = -np.inf
            approx[eligible & ~hit] = np.finfo(np.float32).min
            keep = min(n_candidates, len(rows))
        rows = np.sort(np.argpartition(-approx, keep - 1)[:keep])
    if len(rows) > n_rerank:
        coarse = segment.centroid_scores(rows, centroid_scores_t)
        rows = np.sort(rows[np.argpartition(-coarse, n_rerank - 1)[:n_rerank]])
    store = segment.rerank_store
    if store == "int8":
        return rows, segment.int8_scores(rows, query, centroid_scores_t)
    if store == "float16" and len(rows) <= n_exact:  # nothing to prune: skip the decoded stage
        return rows, segment.exact_scores(rows, query)
    decoded = segment.decoded_scores(rows, query, codebook, centroid_scores_t)
    if store == "none":
        return rows, decoded
    if len(rows) > n_exact:
        rows = np.sort(rows[np.argpartition(-decoded, n_exact - 1)[:n_exact]])
    return rows, segment.exact_scores(rows, query)


def filter_mask(segment: Segment, conditions: Mapping[str, tuple[str, Any]]) -> npt.NDArray[np.bool_]:
    """Rows of ``segment`` whose payload satisfies the normalised ``conditions`` (see base.check_filter)."""
    mask = np.ones(len(segment), dtype=bool)
    for key, (op, expected) in conditions.items():
        column = segment.column(key)
        options = [expected] if op == "eq" else list(expected)
        mask &= np.fromiter(
            (any(type(v) is type(o) and v == o for o in options) for v in column), bool, len(column)
        )
    return mask
