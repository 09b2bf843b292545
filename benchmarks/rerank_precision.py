"""How precise must the last stage of a late-interaction search be? Recall@10 per storage format.

Every format scores the same candidates, the exact top 100 pages of each query (so no candidate stage can lose
anything), and recall@10 is measured against exact float32 MaxSim. What is left is what a format's rounding
does to the order of the exact top 10. Data: the ColPali-shaped synthetic corpus of retrieval_bench.py (same
cache, same arguments); the residual formats use a codebook of the embedded engine trained on a sample of
every page.

    python benchmarks/retrieval_bench.py --pages 25000 --systems exact   # builds the cached corpus
    python benchmarks/rerank_precision.py --pages 25000
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from polymodal.index.embedded.codec import POINTS_PER_CENTROID, Codebook, default_centroid_count
from retrieval_bench import (  # the same corpora
    Pages,
    corpus_parser,
    dataset_dir,
    generate,
    load_queries,
    parse_corpus_args,
)

F32 = np.ndarray
CANDIDATES = 100


def per_token(bits: int) -> Callable[[F32, np.ndarray, Codebook], F32]:
    """Symmetric scalar quantization of the raw vector with one scale per token."""
    top = 2 ** (bits - 1) - 1

    def apply(x: F32, cids: np.ndarray, book: Codebook) -> F32:
        scale = np.abs(x).max(axis=1, keepdims=True) / top
        return np.asarray(np.clip(np.rint(x / scale), -top, top) * scale, dtype=np.float32)

    return apply


def int8_residual(x: F32, cids: np.ndarray, book: Codebook) -> F32:
    """The embedded engine's int8 re-rank store."""
    return book.decode_int8(cids, *book.encode_int8(x, cids))


def formats(book2: Codebook) -> dict[str, tuple[float, Callable[[F32, np.ndarray, Codebook], F32]]]:
    """name -> (bytes per 128-d token, reconstruction)."""
    return {
        "float16 originals": (256, lambda x, c, b: x),
        "int8 residual + scale (engine default)": (134, int8_residual),
        "int8 per token": (132, per_token(8)),
        "4-bit per token": (68, per_token(4)),
        "2-bit residual codes (engine, no store)": (34, lambda x, c, b: book2.decode(*book2.encode(x))),
        "sign bits": (16, lambda x, c, b: np.sign(x)),
    }


def main() -> None:
    args = parse_corpus_args(corpus_parser(__doc__, synthetic_pages=5000))
    generate(args)
    data: Path = dataset_dir(args)
    pages = Pages(data)
    queries, truth = load_queries(data), np.load(data / "truth.npy")
    flat = pages.tokens
    rng = np.random.default_rng(args.seed)
    n_centroids = default_centroid_count(flat.shape[0])
    n_sample = min(flat.shape[0], max(500_000, POINTS_PER_CENTROID * n_centroids))  # as the engine samples
    sample = np.asarray(flat[np.sort(rng.choice(flat.shape[0], n_sample, replace=False))], np.float32)
    started = time.perf_counter()
    book = Codebook.train(sample, nbits=2, n_centroids=n_centroids, seed=args.seed)
    train_s = time.perf_counter() - started
    table = formats(book)
    recalls: dict[str, list[float]] = {name: [] for name in table}
    gaps: list[float] = []  # exact score of rank 10 minus rank 11: how close the near-ties are
    for i, query in enumerate(queries):
        ids = np.sort(truth[i, :CANDIDATES])
        blocks = [pages.flat(int(page), int(page) + 1)[0] for page in ids]
        x = np.concatenate(blocks)
        starts = np.concatenate(([0], np.cumsum([len(b) for b in blocks])[:-1]))
        cids = book.assign(x)
        exact_top = set(truth[i, :10].tolist())
        for name, (_, reconstruct) in table.items():
            q = np.sign(query) if name == "sign bits" else query
            scores = np.maximum.reduceat(reconstruct(x, cids, book) @ q.T, starts, axis=0).sum(axis=1)
            if name == "float16 originals":  # the stored values themselves: exact MaxSim
                ranked = np.sort(scores)[::-1]
                gaps.append(float(ranked[9] - ranked[10]))
            recalls[name].append(len(exact_top & set(ids[np.argsort(-scores)[:10]].tolist())) / 10)
    result = {
        "corpus": args.corpus,
        "pages": pages.count,
        "candidates": CANDIDATES,
        "codebook": {"centroids": book.n_centroids, "train_s": round(train_s, 1)},
        "median_gap_rank10_rank11": round(float(np.median(gaps)), 5),
        "formats": {
            name: {
                "bytes_per_token": size,
                "gb_at_this_size": round(size * flat.shape[0] / 1e9, 2),
                "recall_at_10": round(float(np.mean(recalls[name])), 4),
            }
            for name, (size, _) in table.items()
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{pages.count} {args.corpus} pages, exact top {CANDIDATES} as candidates, recall@10 vs exact MaxSim"
    )
    print(f"median exact score gap between ranks 10 and 11: {result['median_gap_rank10_rank11']}")
    print(f"{'format':<42} {'B/token':>8} {'GB':>7} {'recall@10':>10}")
    for name, row in result["formats"].items():  # type: ignore[union-attr]
        print(
            f"{name:<42} {row['bytes_per_token']:>8} {row['gb_at_this_size']:>7} {row['recall_at_10']:>10.4f}"
        )


if __name__ == "__main__":
    main()
