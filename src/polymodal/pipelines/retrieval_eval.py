"""Retrieval quality from labelled queries: nDCG@5/10, recall@k and MRR@10.

Accepted label files:

* **Simple JSONL**, one relevant page per line: ``{"query": "...", "document": "report.pdf", "page": 12}``
  (optional ``"score"``: the graded relevance, default 1). Lines with the same query are one query with
  several relevant pages.
* **ViDoRe / BEIR layout**: queries (``query-id``, ``query``) plus qrels (``query-id``, ``corpus-id``,
  ``score``), as JSONL, JSON lists, CSV or TSV; pass the queries file with ``qrels=``, or a folder holding
  ``queries.*`` and ``qrels.*``. A corpus file (``corpus-id`` with ``document``/``doc-id`` and ``page``/
  ``page_number``) maps corpus ids to pages; without one, corpus id ``X`` means the indexed file whose stem is
  ``X`` (the corpus images saved as ``X.png``), page 1.

A labelled document matches a hit when it equals the hit's document, its file name or its stem.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polymodal.errors import InputError

PageKey = tuple[str, int]
SearchFunction = Callable[[str, int], Sequence[PageKey]]


@dataclass(frozen=True)
class LabelledQuery:
    """A query and its relevant pages with graded relevance."""

    query: str
    relevant: dict[PageKey, float]
    query_id: str = ""


@dataclass
class RetrievalReport:
    """Mean metrics over the queries, plus each query's ranked pages."""

    queries: int
    ndcg_at_5: float
    ndcg_at_10: float
    mrr_at_10: float
    recall: dict[int, float]
    per_query: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, *, per_query: bool = False) -> dict[str, Any]:
        """JSON-able summary (``recall_at_K`` keys)."""
        data: dict[str, Any] = {
            "queries": self.queries,
            "ndcg_at_5": round(self.ndcg_at_5, 4),
            "ndcg_at_10": round(self.ndcg_at_10, 4),
            "mrr_at_10": round(self.mrr_at_10, 4),
        }
        data.update({f"recall_at_{k}": round(v, 4) for k, v in sorted(self.recall.items())})
        if per_query:
            data["per_query"] = self.per_query
        return data


# -- metrics ------------------------------------------------------------------------------------------------


def _matches(label: str, document: str) -> bool:
    path = Path(document)
    return label in (document, path.name, path.stem)


def _gains(ranked: Sequence[PageKey], relevant: dict[PageKey, float]) -> list[float]:
    gains: list[float] = []
    used: set[PageKey] = set()
    for document, page in ranked:
        gain = 0.0
        for key, grade in relevant.items():
            if key not in used and key[1] == page and _matches(key[0], document):
                gain, used = grade, used | {key}
                break
        gains.append(gain)
    return gains


def ndcg_at(ranked: Sequence[PageKey], relevant: dict[PageKey, float], k: int) -> float:
    """Normalised discounted cumulative gain of the top ``k`` (graded, log2 discount)."""
    gains = _gains(ranked[:k], relevant)
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[PageKey], relevant: dict[PageKey, float], k: int) -> float:
    """Share of the relevant pages (relevance > 0) found in the top ``k``."""
    positive = {key: grade for key, grade in relevant.items() if grade > 0}
    if not positive:
        return 0.0
    return sum(1 for g in _gains(ranked[:k], positive) if g > 0) / len(positive)


def mrr_at(ranked: Sequence[PageKey], relevant: dict[PageKey, float], k: int) -> float:
    """Reciprocal rank of the first relevant page within the top ``k`` (0 when none)."""
    for rank, gain in enumerate(_gains(ranked[:k], relevant), start=1):
        if gain > 0:
            return 1.0 / rank
    return 0.0


def evaluate(
    queries: Sequence[LabelledQuery], search: SearchFunction, *, recall_ks: Iterable[int] = (1, 5, 10)
) -> RetrievalReport:
    """Run ``search(query, k)`` for each labelled query and average the metrics."""
    ks = sorted(set(recall_ks))
    depth = max([10, *ks])
    per_query: list[dict[str, Any]] = []
    for item in queries:
        ranked = list(search(item.query, depth))
        per_query.append(
            {
                "query": item.query,
                "ndcg_at_5": ndcg_at(ranked, item.relevant, 5),
                "ndcg_at_10": ndcg_at(ranked, item.relevant, 10),
                "mrr_at_10": mrr_at(ranked, item.relevant, 10),
                **{f"recall_at_{k}": recall_at(ranked, item.relevant, k) for k in ks},
                "top": [f"{d} p.{p}" for d, p in ranked[:5]],
            }
        )
    n = len(per_query)

    def mean(key: str) -> float:
        return sum(float(q[key]) for q in per_query) / n if n else 0.0

    return RetrievalReport(
        queries=n,
        ndcg_at_5=mean("ndcg_at_5"),
        ndcg_at_10=mean("ndcg_at_10"),
        mrr_at_10=mean("mrr_at_10"),
        recall={k: mean(f"recall_at_{k}") for k in ks},
        per_query=per_query,
    )


# -- label files --------------------------------------------------------------------------------------------


def _rows(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL, JSON (list) , CSV or TSV file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(str(path), f"cannot read labels: {exc}") from exc
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return list(csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
        if suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, list):
                raise InputError(str(path), "a .json label file must hold a list of records")
            return [dict(r) for r in data]
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (json.JSONDecodeError, csv.Error, TypeError, ValueError) as exc:
        raise InputError(str(path), f"malformed label file: {exc}") from exc


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in (".jsonl", ".json", ".tsv", ".csv"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return None


def load_queries(
    path: str | Path, *, qrels: str | Path | None = None, corpus: str | Path | None = None
) -> list[LabelledQuery]:
    """Read labelled queries in the simple JSONL or the ViDoRe layout (see the module docstring)."""
    source = Path(path)
    if source.is_dir():
        queries_file, qrels_file = _find(source, "queries"), _find(source, "qrels")
        if queries_file is None or qrels_file is None:
            raise InputError(str(source), "a ViDoRe folder needs queries.(jsonl|json|tsv|csv) and qrels.*")
        return _load_vidore(queries_file, qrels_file, corpus or _find(source, "corpus"))
    if qrels is not None:
        return _load_vidore(source, Path(qrels), corpus)
    rows = _rows(source)
    if rows and "query-id" in rows[0] and "document" not in rows[0]:
        raise InputError(str(source), "ViDoRe queries need their qrels (pass qrels=... / --qrels)")
    grouped: dict[str, dict[PageKey, float]] = {}
    for number, row in enumerate(rows, start=1):
        try:
            key = (str(row["document"]), int(row["page"]))
            grouped.setdefault(str(row["query"]), {})[key] = float(row.get("score", 1))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}:{number}", f"need query, document and page: {exc}") from exc
    return [LabelledQuery(q, relevant) for q, relevant in grouped.items()]


def _load_vidore(queries_file: Path, qrels_file: Path, corpus_file: str | Path | None) -> list[LabelledQuery]:
    corpus: dict[str, PageKey] = {}
    if corpus_file is not None:
        for row in _rows(Path(corpus_file)):
            document = row.get("document", row.get("doc-id", row.get("image_filename")))
            page = row.get("page", row.get("page_number", 1))
            corpus[str(row["corpus-id"])] = (str(document), int(page))
    texts = {str(row["query-id"]): str(row["query"]) for row in _rows(queries_file)}
    relevant: dict[str, dict[PageKey, float]] = {}
    for row in _rows(qrels_file):
        corpus_id = str(row["corpus-id"])
        key = corpus.get(corpus_id, (corpus_id, 1))
        relevant.setdefault(str(row["query-id"]), {})[key] = float(row.get("score", 1))
    missing = sorted(set(relevant) - set(texts))
    if missing:
        raise InputError(str(qrels_file), f"qrels name unknown query ids: {', '.join(missing[:5])}")
    return [LabelledQuery(texts[qid], rel, qid) for qid, rel in relevant.items()]


__all__ = [
    "LabelledQuery",
    "RetrievalReport",
    "evaluate",
    "load_queries",
    "mrr_at",
    "ndcg_at",
    "recall_at",
]
