"""Late-interaction retrieval benchmark: every system side by side on the same token vectors.

Two corpora (``--corpus``):

* ``synthetic`` (default; ColPali-shaped, structured, no real embeddings): a vocabulary of ``--topics`` unit
  "concept" directions plus a few shared "background" directions (blank-paper patches). A page has
  ``--tokens`` token vectors: 30% background, 70% drawn from 12 concepts of its own, each = concept +
  Gaussian noise, L2-normalised, stored as float16 (the same values go to every system). A query = 20 tokens
  of one page + more noise, normalised.
* ``real``: the pages of real PDFs (Debian documentation packages: the R manuals, gnuplot, libtasn1,
  shared-mime-info; ``apt-get install r-doc-pdf gnuplot-doc libtasn1-doc shared-mime-info``), their text
  layers embedded as all-MiniLM-L6-v2 token vectors (384-d, the offline default embedder); a query = a
  sentence drawn from a page, embedded as a query. ``--pages`` caps the page count.

Ground truth is exact float32 MaxSim over all pages; recall@10 = |top-10 of a system ∩ exact top-10| / 10,
averaged over queries. Each system runs in its own subprocess (build, then search with the peak-RSS counter
reset: ``peak_rss_gb`` is the peak resident set while searching, memory-mapped index pages included).

    python benchmarks/retrieval_bench.py --pages 5000 --json
    python benchmarks/retrieval_bench.py --corpus real --json
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import re
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
REAL_CORPUS = [
    "/usr/share/R/doc/manual/R-intro.pdf",
    "/usr/share/R/doc/manual/R-FAQ.pdf",
    "/usr/share/R/doc/manual/R-data.pdf",
    "/usr/share/R/doc/manual/R-admin.pdf",
    "/usr/share/R/doc/manual/R-exts.pdf",
    "/usr/share/R/doc/manual/R-ints.pdf",
    "/usr/share/R/doc/manual/R-lang.pdf",
    "/usr/share/doc/gnuplot/gnuplot.pdf",
    "/usr/share/doc/libtasn1-doc/libtasn1.pdf",
    "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf",
    "/usr/share/R/doc/manual/fullrefman.pdf",  # 2,415 pages: last, so that --pages cuts it, not the rest
]
SYSTEMS = [
    "exact",
    "embedded",
    "embedded-compact",
    "embedded-f16",
    "qdrant-local",
    "qdrant-pooled",
    "lancedb",
]
# qdrant-client's local mode keeps every vector as Python lists and scores in Python/numpy: at 1,000 pages
# (1M vectors) one upsert pass did not finish in 7 minutes on this machine, so it is measured at <= 300 pages.
LIMITS = {"qdrant-local": 300, "qdrant-pooled": 300}
RERANK_FILES = ("residuals", "scales", "vectors")  # the embedded engine's re-rank store, part of index_gb
EXTRA: dict[str, Any] = {}  # per-system figures beyond the common ones


class Pages:
    """Every page's token vectors: ``tokens`` (n_tokens, dim) float16; page i: ``offsets[i]:offsets[i+1]``."""

    def __init__(self, directory: Path) -> None:
        if (directory / "offsets.npy").exists():  # ragged (real corpus)
            self.tokens = np.load(directory / "tokens.npy", mmap_mode="r")
            self.offsets = np.load(directory / "offsets.npy")
        else:  # synthetic: one (pages, tokens, dim) array
            pages = np.load(directory / "pages.npy", mmap_mode="r")
            self.tokens = pages.reshape(-1, pages.shape[2])
            self.offsets = np.arange(pages.shape[0] + 1, dtype=np.int64) * pages.shape[1]

    @property
    def count(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])

    def flat(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 tokens of pages start..stop and their offsets inside that block."""
        first, last = int(self.offsets[start]), int(self.offsets[stop])
        return np.asarray(self.tokens[first:last], dtype=np.float32), self.offsets[start : stop + 1] - first

    def block(self, start: int, stop: int) -> list[np.ndarray]:
        """float32 token matrices of pages start..stop."""
        flat, offsets = self.flat(start, stop)
        return np.split(flat, offsets[1:-1])


def dataset_dir(args: argparse.Namespace) -> Path:
    if args.corpus == "real":
        key = f"real-{args.pages}-{args.queries}-{args.seed}-{','.join(sorted(REAL_CORPUS))}"
    else:
        key = f"{args.pages}-{args.tokens}-{args.dim}-{args.topics}-{args.queries}-{args.seed}"
    return CACHE / hashlib.sha1(key.encode()).hexdigest()[:12]


def load_queries(directory: Path) -> list[np.ndarray]:
    if (directory / "queries.npy").exists():  # synthetic: (queries, 20, dim)
        return list(np.load(directory / "queries.npy"))
    tokens, offsets = np.load(directory / "query_tokens.npy"), np.load(directory / "query_offsets.npy")
    return np.split(tokens, offsets[1:-1])


def generate(args: argparse.Namespace) -> Path:
    """Write the corpus, queries and exact ground truth (truth.npy) into the cache dir (once)."""
    out = dataset_dir(args)
    if (out / "truth.npy").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    if args.corpus == "real":
        generate_real(args, out)
    else:
        generate_synthetic(args, out)
    scores = exact_scores(Pages(out), load_queries(out))
    np.save(out / "truth.npy", np.argsort(-scores, axis=1, kind="stable")[:, :100])
    return out


def generate_synthetic(args: argparse.Namespace, out: Path) -> None:
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
    np.save(out / "queries.npy", np.stack(queries))
    np.save(out / "sources.npy", sources)


def generate_real(args: argparse.Namespace, out: Path) -> None:
    """MiniLM token vectors of real PDF pages (text layer), and sentence queries drawn from them."""
    import pypdfium2 as pdfium

    from polymodal.backends.sentence import MiniLMTokenEmbedder

    texts: list[str] = []
    for path in REAL_CORPUS:
        if not Path(path).exists():
            print(f"skipping {path}: not installed", file=sys.stderr)
            continue
        pdf = pdfium.PdfDocument(path)
        texts += [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]
    texts = [t for t in texts if len(t.split()) >= 20][: args.pages]  # pages with text to match
    embedder = MiniLMTokenEmbedder(ocr=None, batch_size=16)
    started = time.perf_counter()
    matrices = embedder.embed_page_texts(texts)
    rate = len(texts) / (time.perf_counter() - started)
    print(f"embedded {len(texts)} pages at {rate:.1f} pages/s", file=sys.stderr)
    lengths = [len(m) for m in matrices]
    np.save(out / "tokens.npy", np.concatenate(matrices).astype(np.float16))
    np.save(out / "offsets.npy", np.concatenate(([0], np.cumsum(lengths))).astype(np.int64))
    rng = random.Random(args.seed)
    candidates = [
        (page, sentence)
        for page, text in enumerate(texts)
        for sentence in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text))
        if 8 <= len(sentence.split()) <= 30 and sum(w.isalpha() for w in sentence.split()) >= 6
    ]
    picked = rng.sample(candidates, min(args.queries, len(candidates)))
    queries = embedder.embed_queries([sentence for _, sentence in picked])
    np.save(out / "query_tokens.npy", np.concatenate(queries).astype(np.float32))
    np.save(out / "query_offsets.npy", np.concatenate(([0], np.cumsum([len(q) for q in queries]))))
    np.save(out / "sources.npy", np.array([page for page, _ in picked]))
    (out / "corpus.json").write_text(json.dumps({"pages": len(texts), "embed_pages_per_s": round(rate, 2)}))


def exact_scores(pages: Pages, queries: list[np.ndarray]) -> np.ndarray:
    """(n_queries, n_pages) exact f32 MaxSim, chunked over pages, all queries at once."""
    flat_queries = np.concatenate(queries).astype(np.float32)
    query_starts = np.concatenate(([0], np.cumsum([len(q) for q in queries])[:-1]))
    out = np.empty((len(queries), pages.count), dtype=np.float32)
    for start in range(0, pages.count, CHUNK):
        stop = min(start + CHUNK, pages.count)
        tokens, offsets = pages.flat(start, stop)
        page_max = np.maximum.reduceat(tokens @ flat_queries.T, offsets[:-1], axis=0)
        out[:, start:stop] = np.add.reduceat(page_max, query_starts, axis=1).T
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


def build_exact(pages: Pages, work: Path) -> tuple[Any, float]:
    in_ram = pages.tokens.shape[0] * pages.dim * 4 <= 4 * 1024**3
    flat, offsets = pages.flat(0, pages.count) if in_ram else (None, None)

    def search(query: np.ndarray, k: int) -> list[int]:
        if flat is not None:
            scores = np.maximum.reduceat(flat @ query.T, offsets[:-1], axis=0).sum(axis=1)
        else:  # too big for RAM as f32: stream the float16 file
            scores = exact_scores(pages, [query])[0]
        return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]

    return search, 0.0


def build_embedded(pages: Pages, work: Path, **options: Any) -> tuple[Any, float]:
    from polymodal.index import open_multivector_index

    path = work / "embedded"
    index = open_multivector_index(path, dim=pages.dim, embedder_id="bench", **options)
    for start in range(0, pages.count, CHUNK):
        block = pages.block(start, min(start + CHUNK, pages.count))
        index.add(
            [str(start + i) for i in range(len(block))],
            block,
            [{"page": start + i} for i in range(len(block))],
        )
    index.flush()
    index.optimize()  # type: ignore[attr-defined]
    codebook = index.codebook  # type: ignore[attr-defined]
    EXTRA["centroids"] = 0 if codebook is None else codebook.n_centroids
    index.close()
    store = sum(f.stat().st_size for key in RERANK_FILES for f in path.glob(f"seg-*/{key}.npy"))
    EXTRA["rerank_store_gb"] = round(store / 1024**3, 3)
    index = open_multivector_index(path, dim=pages.dim, embedder_id="bench", create=False, **options)
    return (lambda q, k: [int(h.id) for h in index.search(q, k)]), dir_gb(path)


def build_qdrant(pages: Pages, work: Path, first_stage: str) -> tuple[Any, float]:
    from qdrant_client import QdrantClient

    from polymodal.index.qdrant_multi import QdrantMultiVectorIndex

    path = work / "qdrant"
    index = QdrantMultiVectorIndex(
        QdrantClient(path=str(path)),
        "bench",
        dim=pages.dim,
        embedder_id="bench",
        first_stage=first_stage,
    )
    for start in range(0, pages.count, 50):
        block = pages.block(start, min(start + 50, pages.count))
        index.add(
            [str(start + i) for i in range(len(block))],
            block,
            [{"page": start + i} for i in range(len(block))],
        )
    return (lambda q, k: [int(h.id) for h in index.search(q, k)]), dir_gb(path)


def build_lancedb(pages: Pages, work: Path) -> tuple[Any, float]:
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(work / "lancedb"))
    dim = pages.dim
    schema = pa.schema(
        [pa.field("page", pa.int64()), pa.field("vector", pa.list_(pa.list_(pa.float32(), dim)))]
    )
    table = db.create_table("bench", schema=schema)
    for start in range(0, pages.count, CHUNK):
        stop = min(start + CHUNK, pages.count)
        flat, offsets = pages.flat(start, stop)
        inner = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim)
        vectors = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), inner)
        table.add(pa.table({"page": np.arange(start, stop), "vector": vectors}, schema=schema))
    if pages.count >= 256:
        table.create_index(
            metric="cosine",
            vector_column_name="vector",
            index_type="IVF_PQ",
            num_partitions=max(1, pages.count // 256),
            num_sub_vectors=dim // 8,
        )

    def search(query: np.ndarray, k: int) -> list[int]:
        rows = table.search(query.tolist(), vector_column_name="vector").limit(k).select(["page"]).to_list()
        return [int(r["page"]) for r in rows]

    return search, dir_gb(work / "lancedb")


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    data = dataset_dir(args)
    pages = Pages(data)
    queries, truth = load_queries(data), np.load(data / "truth.npy")
    sources = np.load(data / "sources.npy") if (data / "sources.npy").exists() else truth[:, 0]
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=args.workdir))
    try:
        started = time.perf_counter()
        builders = {
            "exact": build_exact,
            "embedded": build_embedded,
            # the default keeps an int8 re-rank store; "compact" keeps only the 2-bit codes, "f16" the
            # float16 originals
            "embedded-compact": lambda p, w: build_embedded(p, w, store_vectors="none"),
            "embedded-f16": lambda p, w: build_embedded(p, w, store_vectors="float16"),
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
            **EXTRA,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def corpus_parser(description: str | None, synthetic_pages: int) -> argparse.ArgumentParser:
    """The arguments that name a corpus (and so its cache directory), shared with rerank_precision.py."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", choices=["synthetic", "real"], default="synthetic")
    parser.add_argument(
        "--pages", type=int, default=None, help=f"synthetic: {synthetic_pages}; real: every page"
    )
    parser.add_argument("--tokens", type=int, default=1030)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--topics", type=int, default=4096)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(synthetic_pages=synthetic_pages)
    return parser


def parse_corpus_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, filling ``--pages`` by corpus when it is not given."""
    args = parser.parse_args()
    if args.pages is None:
        args.pages = args.synthetic_pages if args.corpus == "synthetic" else 1_000_000
    return args


def main() -> None:
    parser = corpus_parser(__doc__, synthetic_pages=1000)
    parser.add_argument("--exact-queries", type=int, default=10, help="queries timed for the exact system")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parse_corpus_args(parser)
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
        if Pages(dataset_dir(args)).count > LIMITS.get(system, 10**9):
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
    pages = Pages(dataset_dir(args))
    report = {
        "corpus": args.corpus,
        "pages": pages.count,
        "tokens_per_page": round(pages.tokens.shape[0] / pages.count, 1),
        "dim": pages.dim,
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
        f"{'system':<18}{'p50 ms':>9}{'p95 ms':>9}{'recall@10':>11}{'index GB':>10}"
        f"{'RSS GB':>8}{'build s':>9}"
    )
    for name, r in results.items():
        if "p50_ms" in r:
            print(
                f"{name:<18}{r['p50_ms']:>9}{r['p95_ms']:>9}{r['recall_at_10']:>11}{r['index_gb']:>10}"
                f"{r['peak_rss_gb']:>8}{r['build_s']:>9}"
            )
        else:
            print(f"{name:<18} {r}")


if __name__ == "__main__":
    main()
