"""Late-interaction retrieval benchmark: every system side by side on the same ColPali-shaped data.

Data (synthetic, structured; no real embeddings): a vocabulary of ``--topics`` unit "concept" directions
plus a
few shared "background" directions (blank-paper patches). A page has ``--tokens`` token vectors: 30%
background,
70% drawn from 12 concepts of its own, each = concept + Gaussian noise, L2-normalised, stored as float16 (the
same values go to every system). A query = 20 tokens of one page + more noise, normalised. Ground truth is
exact
float32 MaxSim over all pages; recall@10 = |top-10 of a system ∩ exact top-10| / 10, averaged over queries.

Each system runs in its own subprocess (build, then search with the peak-RSS counter reset: ``peak_rss_gb`` is
the peak resident set while searching, memory-mapped index pages included).

    python benchmarks/retrieval_bench.py --pages 5000 --json
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(os.environ.get("POLYMODAL_BENCH_CACHE", "/tmp/polymodal-retrieval-bench"))
CHUNK = 250  # pages generated / added per step
SYSTEMS = [
    "exact",
    "embedded",
    "embedded-4bit",
    "embedded-f16",
    "embedded-f16-wide",
    "qdrant-local",
    "qdrant-pooled",
    "lancedb",
]
# qdrant-client's local mode keeps every vector as Python lists and scores in Python/numpy: at 1,000 pages
# (1M vectors) one upsert pass did not finish in 7 minutes on this machine, so it is measured at <= 300 pages.
LIMITS = {"qdrant-local": 300, "qdrant-pooled": 300}


def dataset_dir(args: argparse.Namespace) -> Path:
    key = f"{args.pages}-{args.tokens}-{args.dim}-{args.topics}-{args.queries}-{args.seed}"
    return CACHE / hashlib.sha1(key.encode()).hexdigest()[:12]


def generate(args: argparse.Namespace) -> Path:
    """Write pages.npy (float16 memmap), queries.npy, truth.npy into the cache dir (once)."""
    out = dataset_dir(args)
    if (out / "truth.npy").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    concepts = rng.standard_normal((args.topics, args.dim)).astype(np.float32)
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    background = rng.standard_normal((8, args.dim)).astype(np.float32)
    background /= np.linalg.norm(background, axis=1, keepdims=True)
    pages = np.lib.format.open_memmap(
        out / "pages.tmp.npy", mode="w+", dtype=np.float16, shape=(args.pages, args.tokens, args.dim)
    )
    n_bg = int(args.tokens * 0.3)
    for start in range(0, args.pages, CHUNK):
        stop = min(start + CHUNK, args.pages)
        crng = np.random.default_rng([args.seed, start])
        n = stop - start
        own = crng.integers(0, args.topics, size=(n, 12))
        pick = own[np.arange(n)[:, None], crng.integers(0, 12, size=(n, args.tokens - n_bg))]
        centres = np.concatenate([background[crng.integers(0, 8, size=(n, n_bg))], concepts[pick]], axis=1)
        noise = crng.standard_normal(centres.shape, dtype=np.float32) * (0.6 / np.sqrt(args.dim))
        block = centres + noise
        block /= np.linalg.norm(block, axis=2, keepdims=True)
        pages[start:stop] = block.astype(np.float16)
    pages.flush()
    del pages
    os.replace(out / "pages.tmp.npy", out / "pages.npy")
    pages = np.load(out / "pages.npy", mmap_mode="r")
    qrng = np.random.default_rng([args.seed, 999])
    sources = qrng.choice(args.pages, size=args.queries, replace=False)
    queries = []
    for page in sources:
        tokens = np.asarray(
            pages[page][qrng.choice(np.arange(n_bg, args.tokens), 20, replace=False)], np.float32
        )
        tokens += qrng.standard_normal(tokens.shape).astype(np.float32) * (0.8 / np.sqrt(args.dim))
        queries.append(tokens / np.linalg.norm(tokens, axis=1, keepdims=True))
    q = np.stack(queries)
    np.save(out / "queries.npy", q)
    np.save(out / "sources.npy", sources)
    scores = exact_scores(pages, q)
    np.save(out / "truth.npy", np.argsort(-scores, axis=1, kind="stable")[:, :100])
    return out


def exact_scores(pages: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(n_queries, n_pages) exact f32 MaxSim, chunked over pages, all queries at once."""
    n_q, q_len, dim = queries.shape
    flat = queries.reshape(-1, dim)
    out = np.empty((n_q, pages.shape[0]), dtype=np.float32)
    for start in range(0, pages.shape[0], CHUNK):
        block = np.asarray(pages[start : start + CHUNK], dtype=np.float32)
        sims = block.reshape(-1, dim) @ flat.T  # (n*t, n_q*q_len)
        sims = sims.reshape(block.shape[0], block.shape[1], n_q, q_len).max(axis=1)
        out[:, start : start + block.shape[0]] = sims.sum(axis=2).T
    return out


def blas_gflops() -> float:
    """A 2-thread float32 matmul rate: how much CPU this run actually got (the machine is shared)."""
    a = np.random.default_rng(0).random((1500, 1500), dtype=np.float32)
    t0 = time.perf_counter()
    for _ in range(3):
        a @ a
    return round(3 * 2 * 1500**3 / (time.perf_counter() - t0) / 1e9, 1)


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def dir_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1024**3


# -- systems: build(pages, workdir) -> search(query, k) -> list of page numbers -


def build_exact(pages: np.ndarray, work: Path) -> tuple[Any, float]:
    if pages.nbytes * 2 <= 4 * 1024**3:
        data = np.asarray(pages, dtype=np.float32)
        flat, offsets = data.reshape(-1, data.shape[2]), None
    else:  # too big for RAM as f32: stream the float16 file
        data, flat, offsets = pages, None, None

    def search(query: np.ndarray, k: int) -> list[int]:
        if flat is not None:
            sims = (flat @ query.T).reshape(data.shape[0], data.shape[1], -1)
            scores = sims.max(axis=1).sum(axis=1)
        else:
            scores = exact_scores(data, query[None])[0]
        return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]

    del offsets
    return search, 0.0


def build_embedded(pages: np.ndarray, work: Path, **options: Any) -> tuple[Any, float]:
    from polymodal.index import open_multivector_index

    path = work / "embedded"
    index = open_multivector_index(path, dim=pages.shape[2], embedder_id="bench", **options)
    for start in range(0, pages.shape[0], CHUNK):
        block = np.asarray(pages[start : start + CHUNK], dtype=np.float32)
        index.add(
            [str(start + i) for i in range(len(block))],
            list(block),
            [{"page": start + i} for i in range(len(block))],
        )
    index.flush()
    index.optimize()  # type: ignore[attr-defined]
    index.close()
    index = open_multivector_index(path, dim=pages.shape[2], embedder_id="bench", create=False, **options)
    return (lambda q, k: [int(h.id) for h in index.search(q, k)]), dir_gb(path)


def build_qdrant(pages: np.ndarray, work: Path, first_stage: str) -> tuple[Any, float]:
    from qdrant_client import QdrantClient

    from polymodal.index.qdrant_multi import QdrantMultiVectorIndex

    path = work / "qdrant"
    index = QdrantMultiVectorIndex(
        QdrantClient(path=str(path)),
        "bench",
        dim=pages.shape[2],
        embedder_id="bench",
        first_stage=first_stage,
    )
    for start in range(0, pages.shape[0], 50):
        block = np.asarray(pages[start : start + 50], dtype=np.float32)
        index.add(
            [str(start + i) for i in range(len(block))],
            list(block),
            [{"page": start + i} for i in range(len(block))],
        )
    return (lambda q, k: [int(h.id) for h in index.search(q, k)]), dir_gb(path)


def build_lancedb(pages: np.ndarray, work: Path) -> tuple[Any, float]:
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(work / "lancedb"))
    dim, tokens = pages.shape[2], pages.shape[1]
    schema = pa.schema(
        [pa.field("page", pa.int64()), pa.field("vector", pa.list_(pa.list_(pa.float32(), dim)))]
    )
    table = db.create_table("bench", schema=schema)
    for start in range(0, pages.shape[0], CHUNK):
        block = np.asarray(pages[start : start + CHUNK], dtype=np.float32)
        inner = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), dim)
        offsets = pa.array(np.arange(0, (len(block) + 1) * tokens, tokens, dtype=np.int32))
        vectors = pa.ListArray.from_arrays(offsets, inner)
        table.add(pa.table({"page": np.arange(start, start + len(block)), "vector": vectors}, schema=schema))
    if pages.shape[0] >= 256:
        table.create_index(
            metric="cosine",
            vector_column_name="vector",
            index_type="IVF_PQ",
            num_partitions=max(1, pages.shape[0] // 256),
            num_sub_vectors=dim // 8,
        )

    def search(query: np.ndarray, k: int) -> list[int]:
        rows = table.search(query.tolist(), vector_column_name="vector").limit(k).select(["page"]).to_list()
        return [int(r["page"]) for r in rows]

    return search, dir_gb(work / "lancedb")


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    data = dataset_dir(args)
    pages = np.load(data / "pages.npy", mmap_mode="r")
    queries, truth = np.load(data / "queries.npy"), np.load(data / "truth.npy")
    sources = np.load(data / "sources.npy") if (data / "sources.npy").exists() else truth[:, 0]
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=args.workdir))
    try:
        started = time.perf_counter()
        builders = {
            "exact": build_exact,
            "embedded": build_embedded,
            "embedded-4bit": lambda p, w: build_embedded(p, w, nbits=4),
            "embedded-f16": lambda p, w: build_embedded(p, w, store_vectors=True),
            # float16 originals kept, and wider stages before the exact re-rank
            "embedded-f16-wide": lambda p, w: build_embedded(
                p, w, store_vectors=True, candidates=512, rerank=256, exact_rerank=128
            ),
            "qdrant-local": lambda p, w: build_qdrant(p, w, "none"),
            "qdrant-pooled": lambda p, w: build_qdrant(p, w, "pooled"),
            "lancedb": build_lancedb,
        }
        search, size_gb = builders[args.worker](pages, work)
        build_s = time.perf_counter() - started
        # unmap the benchmark's own page file (every system but exact has its own copy by now), so that the
        # peak RSS while searching is the system's, not the input data's
        del pages
        gc.collect()
        n_queries = min(len(queries), args.exact_queries if args.worker == "exact" else len(queries))
        search(queries[0], 10)  # warm up
        reset_peak_rss()
        latencies, recalls, source_found = [], [], []
        for i in range(n_queries):
            t0 = time.perf_counter()
            found = search(queries[i], 10)
            latencies.append((time.perf_counter() - t0) * 1000)
            recalls.append(len(set(found) & set(truth[i, :10].tolist())) / 10)
            source_found.append(int(sources[i]) in found)
        return {
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p95_ms": round(float(np.percentile(latencies, 95)), 2),
            "recall_at_10": round(float(np.mean(recalls)), 4),
            "source_in_top10": round(float(np.mean(source_found)), 4),
            "index_gb": round(size_gb, 3),
            "peak_rss_gb": round(peak_rss_gb(), 3),
            "build_s": round(build_s, 1),
            "queries": n_queries,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=1030)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--topics", type=int, default=4096)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--exact-queries", type=int, default=10, help="queries timed for the exact system")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    t0 = time.perf_counter()
    generate(args)
    gen_s = time.perf_counter() - t0
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        OPENBLAS_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
    )
    results: dict[str, Any] = {}
    gflops = blas_gflops()
    for system in args.systems.split(","):
        if args.pages > LIMITS.get(system, 10**9):
            results[system] = {
                "skipped": f"local mode holds every vector as Python lists; run at <= {LIMITS[system]} pages"
            }
            continue
        cmd = [sys.executable, __file__, "--worker", system] + [a for a in sys.argv[1:] if a != "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            results[system] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
        else:
            results[system] = json.loads(proc.stdout.strip().splitlines()[-1])
        if not args.json:
            print(system, results[system], file=sys.stderr, flush=True)
    report = {
        "pages": args.pages,
        "tokens_per_page": args.tokens,
        "dim": args.dim,
        "data_s": round(gen_s, 1),
        "load_avg": os.getloadavg()[0],
        "blas_gflops_before": gflops,
        "blas_gflops_after": blas_gflops(),
        "systems": results,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"{'system':<15}{'p50 ms':>9}{'p95 ms':>9}{'recall@10':>11}{'index GB':>10}"
        f"{'RSS GB':>8}{'build s':>9}"
    )
    for name, r in results.items():
        if "p50_ms" in r:
            print(
                f"{name:<15}{r['p50_ms']:>9}{r['p95_ms']:>9}{r['recall_at_10']:>11}{r['index_gb']:>10}"
                f"{r['peak_rss_gb']:>8}{r['build_s']:>9}"
            )
        else:
            print(f"{name:<15} {r}")


if __name__ == "__main__":
    main()
