"""Synthetic late-interaction data for the index tests: pages built from concept centres + noise."""

from __future__ import annotations

import numpy as np


def make_corpus(
    n_pages: int, *, dim: int = 32, tokens: int = 24, concepts: int = 64, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Pages (each 4 concepts + noise), queries (6 tokens of page i + noise) and each query's source page."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((concepts, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    pages = []
    for _ in range(n_pages):
        own = rng.choice(concepts, 4, replace=False)
        vectors = (
            centres[rng.choice(own, tokens)] + rng.standard_normal((tokens, dim)).astype(np.float32) * 0.1
        )
        pages.append((vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32))
    sources = rng.choice(n_pages, min(n_pages, 12), replace=False)
    queries = []
    for page in sources:
        q = (
            pages[page][rng.choice(tokens, 6, replace=False)]
            + rng.standard_normal((6, dim)).astype(np.float32) * 0.05
        )
        queries.append((q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32))
    return pages, queries, sources


def exact_top(pages: list[np.ndarray], query: np.ndarray, k: int) -> list[int]:
    """Exact MaxSim top-k page numbers."""
    scores = [float((p @ query.T).max(axis=0).sum()) for p in pages]
    return [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")[:k]]
