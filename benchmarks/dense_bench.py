"""Dense ANN benchmark: the embedded index vs faiss HNSW, hnswlib, usearch, exact numpy and Qdrant local mode.

    python benchmarks/dense_bench.py --vectors 100000 --dim 768 --json
    python benchmarks/dense_bench.py --vectors 1000000 --dim 768 --dataset clustered --systems embedded,numpy

Datasets (synthetic; real embeddings sit between the two):

* ``random``: i.i.d. Gaussian vectors, L2-normalised; queries are fresh draws (not copies of base vectors).
  The hardest case for any graph index: neighbours are nearly equidistant in 768 dimensions.
* ``clustered``: 1,000 Gaussian centres; each point = centre + a 32-dimensional per-cluster subspace offset +
  small isotropic noise, normalised; queries are fresh draws from the same mixture. Low intrinsic dimension,
  like CLIP/SigLIP embeddings.

Every system runs in its own subprocess (honest peak RSS, no shared caches) on the same files: base vectors,
queries and exact top-10 ground truth are generated once per (dataset, N, dim) under ``--workdir`` and reused.
Latency is per single query (one vector per call, one thread), p50 over ``--queries`` queries after a warm-up;
recall@10 is |returned top-10 ∩ exact top-10| / 10; build_s includes persisting the index where the system has
one; peak_rss_gb is the worker's peak resident set, VmHWM (1 GB = 1e9 bytes). Builds use every core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SYSTEMS = ("embedded", "embedded-hnsw", "faiss-hnsw", "hnswlib", "usearch-f16", "numpy", "qdrant-local")
CHUNK = 100_000
K = 10


# ---------------------------------------------------------------------------------------------- data


def _generate(kind: str, n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.standard_normal((n, dim), dtype=np.float32)
    else:
        structure = np.random.default_rng(12345)
        centres = structure.standard_normal((1000, dim), dtype=np.float32)
        bases = structure.standard_normal((1000, 32, dim), dtype=np.float32) / np.sqrt(32)
        labels = rng.integers(0, 1000, n)
        latent = rng.standard_normal((n, 32), dtype=np.float32)
        x = centres[labels] + 0.15 * rng.standard_normal((n, dim), dtype=np.float32)
        for c in np.unique(labels):
            rows = labels == c
            x[rows] += 0.8 * (latent[rows] @ bases[c])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def prepare(workdir: Path, kind: str, n: int, dim: int, queries: int) -> Path:
    """Write base.f32, queries.f32 and gt.i64 (exact top-10) once; return their folder."""
    folder = workdir / f"{kind}-{n}-{dim}-{queries}"
    if (folder / "gt.i64").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    q = _generate(kind, queries, dim, seed=10**9)
    q.tofile(folder / "queries.f32")
    best_scores = np.full((queries, K), -np.inf, dtype=np.float32)
    best_ids = np.zeros((queries, K), dtype=np.int64)
    with open(folder / "base.f32", "wb") as handle:
        for start in range(0, n, CHUNK):
            block = _generate(kind, min(CHUNK, n - start), dim, seed=start + 1)
            handle.write(block.tobytes())
            scores = q @ block.T
            ids = np.broadcast_to(np.arange(start, start + len(block)), scores.shape)
            all_scores = np.concatenate([best_scores, scores], axis=1)
            all_ids = np.concatenate([best_ids, ids], axis=1)
            top = np.argsort(-all_scores, axis=1, kind="stable")[:, :K]
            best_scores = np.take_along_axis(all_scores, top, axis=1)
            best_ids = np.take_along_axis(all_ids, top, axis=1)
    best_ids.tofile(folder / "gt.i64")
    return folder


def read_chunks(folder: Path, dim: int) -> Any:
    """Yield (first_row, block) from base.f32 with plain reads (no memory map: RSS stays honest)."""
    row_bytes = 4 * dim
    total = os.path.getsize(folder / "base.f32") // row_bytes
    with open(folder / "base.f32", "rb") as handle:
        for start in range(0, total, CHUNK):
            count = min(CHUNK, total - start)
            yield start, np.frombuffer(handle.read(count * row_bytes), dtype=np.float32).reshape(count, dim)


# ---------------------------------------------------------------------------------------------- systems


def build_and_query(system: str, folder: Path, dim: int, n: int, scratch: Path) -> dict[str, Any]:
    """Build ``system`` over the base vectors, then time single queries. Runs inside the worker process."""
    queries = np.fromfile(folder / "queries.f32", dtype=np.float32).reshape(-1, dim)
    started = time.perf_counter()
    search, disk = _BUILDERS[system](folder, dim, n, scratch)
    build_s = time.perf_counter() - started
    for q in queries[:10]:  # warm-up
        search(q)
    times, found = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids = search(q)
        times.append(time.perf_counter() - t0)
        found.append(np.asarray(ids, dtype=np.int64)[:K])
    gt = np.fromfile(folder / "gt.i64", dtype=np.int64).reshape(-1, K)
    recall = float(
        np.mean([len(set(f.tolist()) & set(g.tolist())) / K for f, g in zip(found, gt, strict=True)])
    )
    return {
        "p50_ms": round(float(np.median(times)) * 1e3, 3),
        "p95_ms": round(float(np.percentile(times, 95)) * 1e3, 3),
        "recall_at_10": round(recall, 4),
        "build_s": round(build_s, 1),
        "peak_rss_gb": round(peak_rss_bytes() / 1e9, 3),
        "disk_gb": round(disk / 1e9, 3) if disk is not None else None,
    }


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM). Not ru_maxrss: on Linux that keeps the high-water mark of
    the forked parent across exec, so every worker would report at least the driver's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _embedded(folder: Path, dim: int, n: int, scratch: Path, **settings: Any) -> Any:
    from polymodal.index.dense.embedded import EmbeddedDenseIndex

    index = EmbeddedDenseIndex(scratch / "embedded", dim=dim, embedder_id="bench", **settings)
    for start, block in read_chunks(folder, dim):
        index.add([str(i) for i in range(start, start + len(block))], block)
    index.flush()

    def search(q: np.ndarray) -> list[int]:
        return [int(hit.id) for hit in index.search(q, K)]

    return search, _dir_bytes(scratch / "embedded")


def _faiss_hnsw(folder: Path, dim: int, n: int, scratch: Path) -> Any:
    import faiss

    index = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    for _, block in read_chunks(folder, dim):
        index.add(block)
    faiss.write_index(index, str(scratch / "faiss.index"))
    index.hnsw.efSearch = 256
    faiss.omp_set_num_threads(1)
    return (lambda q: index.search(q[None, :], K)[1][0]), os.path.getsize(scratch / "faiss.index")


def _hnswlib(folder: Path, dim: int, n: int, scratch: Path) -> Any:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=16, ef_construction=100)
    for start, block in read_chunks(folder, dim):
        index.add_items(block, np.arange(start, start + len(block)))
    index.save_index(str(scratch / "hnswlib.bin"))
    index.set_ef(128)
    index.set_num_threads(1)
    return (lambda q: index.knn_query(q, k=K)[0][0]), os.path.getsize(scratch / "hnswlib.bin")


def _usearch_f16(folder: Path, dim: int, n: int, scratch: Path) -> Any:
    from usearch.index import Index

    index = Index(
        ndim=dim, metric="cos", dtype="f16", connectivity=16, expansion_add=64, expansion_search=128
    )
    for start, block in read_chunks(folder, dim):
        index.add(np.arange(start, start + len(block)), block)
    index.save(str(scratch / "usearch.bin"))
    return (lambda q: index.search(q, K).keys), os.path.getsize(scratch / "usearch.bin")


def _numpy(folder: Path, dim: int, n: int, scratch: Path) -> Any:
    base = np.empty((n, dim), dtype=np.float32)
    for start, block in read_chunks(folder, dim):
        base[start : start + len(block)] = block

    def search(q: np.ndarray) -> np.ndarray:
        scores = base @ q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    return search, None


def _qdrant_local(folder: Path, dim: int, n: int, scratch: Path) -> Any:
    from qdrant_client import QdrantClient

    from polymodal.index.dense.qdrant import QdrantDenseIndex

    # in memory: path= mode re-persists the collection on every upsert and is far slower still
    index = QdrantDenseIndex(QdrantClient(":memory:"), "bench", dim=dim, embedder_id="bench")
    for start, block in read_chunks(folder, dim):
        index.add([str(i) for i in range(start, start + len(block))], block)
    return (lambda q: [int(h.id) for h in index.search(q, K)]), None


def _embedded_hnsw(folder: Path, dim: int, n: int, scratch: Path) -> Any:
    return _embedded(folder, dim, n, scratch, engine="hnsw")


_BUILDERS = {
    "embedded": _embedded,
    "embedded-hnsw": _embedded_hnsw,
    "faiss-hnsw": _faiss_hnsw,
    "hnswlib": _hnswlib,
    "usearch-f16": _usearch_f16,
    "numpy": _numpy,
    "qdrant-local": _qdrant_local,
}

SETTINGS = {
    "embedded": "defaults: faiss IVF (sqrt(N) cells, nprobe 32) over 4-bit PQ fast-scan codes (1 bit/dim);"
    " 200 candidates rescored in float32 (mmap)",
    "embedded-hnsw": "engine='hnsw': usearch HNSW over int8, M=16, efC=64, efS=64; 200 candidates rescored",
    "faiss-hnsw": "IndexHNSWFlat M=16, efConstruction=40, efSearch=256",
    "hnswlib": "M=16, ef_construction=100, ef=128",
    "usearch-f16": "f16 HNSW, M=16, efC=64, efS=128, no rescoring",
    "numpy": "exact: one (N, D) @ (D,) matmul + argpartition",
    "qdrant-local": "qdrant-client local mode, in memory (exact search in Python/numpy)",
}


# ---------------------------------------------------------------------------------------------- driver


def run_worker(system: str, folder: Path, dim: int, n: int, timeout: float) -> dict[str, Any]:
    """Run one system in a fresh interpreter; a crash or timeout is reported, not raised."""
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-{system}-", dir=folder))
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        system,
        "--folder",
        str(folder),
        "--dim",
        str(dim),
        "--vectors",
        str(n),
        "--scratch",
        str(scratch),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--dataset", choices=("random", "clustered"), default="random")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list from {', '.join(SYSTEMS)}")
    parser.add_argument(
        "--qdrant-max", type=int, default=100_000, help="largest N given to qdrant local mode"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per system")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "polymodal-dense-bench")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(build_and_query(args.worker, args.folder, args.dim, args.vectors, args.scratch)))
        return
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    folder = prepare(args.workdir, args.dataset, args.vectors, args.dim, args.queries)
    prepare_s = time.perf_counter() - t0
    results: dict[str, Any] = {}
    for system in systems:
        if system == "qdrant-local" and args.vectors > args.qdrant_max:
            results[system] = {
                "skipped": f"local mode is exact Python; run up to --qdrant-max {args.qdrant_max}"
            }
            continue
        results[system] = {
            **run_worker(system, folder, args.dim, args.vectors, args.timeout),
            "settings": SETTINGS[system],
        }
        print(f"{system:14s} {results[system]}", file=sys.stderr, flush=True)  # progress, also with --json
    report = {
        "vectors": args.vectors,
        "dim": args.dim,
        "dataset": args.dataset,
        "queries": args.queries,
        "raw_vector_gb": round(args.vectors * args.dim * 4 / 1e9, 3),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "data_prepare_s": round(prepare_s, 1),
        },
        "systems": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{args.vectors} x {args.dim} ({args.dataset}), {args.queries} single queries, "
        f"raw vectors {report['raw_vector_gb']} GB, load {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'system':14s} {'recall@10':>9s} {'p50 ms':>8s} {'p95 ms':>8s} {'build s':>8s} {'RSS GB':>7s}"
        f" {'disk GB':>7s}"
    )
    for name, r in results.items():
        if "p50_ms" not in r:
            print(f"{name:14s} {r.get('error') or r.get('skipped')}")
            continue
        print(
            f"{name:14s} {r['recall_at_10']:9.3f} {r['p50_ms']:8.3f} {r['p95_ms']:8.3f} {r['build_s']:8.1f} "
            f"{r['peak_rss_gb']:7.2f} {r['disk_gb'] if r['disk_gb'] is not None else '-':>7}"
        )


if __name__ == "__main__":
    main()
