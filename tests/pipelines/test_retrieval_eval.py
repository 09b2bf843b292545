"""Retrieval metrics, label-file formats (simple JSONL and ViDoRe), and the BM25 page store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from polymodal.errors import InputError
from polymodal.pipelines._retrieval_store import PageTextStore, reciprocal_rank_fusion
from polymodal.pipelines.retrieval_eval import (
    LabelledQuery,
    evaluate,
    load_queries,
    mrr_at,
    ndcg_at,
    recall_at,
)


def test_ndcg_recall_and_mrr_by_hand() -> None:
    relevant = {("a.pdf", 2): 1.0, ("b.pdf", 1): 1.0}
    ranked = [("c.pdf", 1), ("a.pdf", 2), ("d.pdf", 3), ("b.pdf", 1)]
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at(ranked, relevant, 5) == pytest.approx(dcg / idcg)
    assert ndcg_at(ranked, relevant, 1) == 0.0
    assert recall_at(ranked, relevant, 2) == 0.5 and recall_at(ranked, relevant, 4) == 1.0
    assert mrr_at(ranked, relevant, 10) == 0.5
    assert ndcg_at([("a.pdf", 2), ("b.pdf", 1)], relevant, 10) == pytest.approx(1.0)
    # a labelled file name matches a hit in a sub-folder, a duplicate hit does not count twice
    assert recall_at([("sub/a.pdf", 2), ("a.pdf", 2)], {("a.pdf", 2): 1.0}, 2) == 1.0
    assert ndcg_at([("a.pdf", 2), ("a.pdf", 2)], relevant, 2) == pytest.approx(1 / idcg)


def test_graded_relevance_rewards_the_better_page_first() -> None:
    relevant = {("a.pdf", 1): 2.0, ("a.pdf", 2): 1.0}
    best = ndcg_at([("a.pdf", 1), ("a.pdf", 2)], relevant, 5)
    worse = ndcg_at([("a.pdf", 2), ("a.pdf", 1)], relevant, 5)
    assert best == pytest.approx(1.0) and worse < best


def test_simple_jsonl_groups_pages_by_query(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    rows = [
        {"query": "sourdough", "document": "bakery.pdf", "page": 2},
        {"query": "sourdough", "document": "bakery.pdf", "page": 3, "score": 0.5},
        {"query": "jupiter", "document": "astronomy.pdf", "page": 2},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    queries = load_queries(path)
    assert [q.query for q in queries] == ["sourdough", "jupiter"]
    assert queries[0].relevant == {("bakery.pdf", 2): 1.0, ("bakery.pdf", 3): 0.5}

    def search(query: str, k: int) -> list[tuple[str, int]]:
        return [("bakery.pdf", 2)] if query == "sourdough" else [("bakery.pdf", 1), ("astronomy.pdf", 2)]

    report = evaluate(queries, search, recall_ks=(1, 5))
    assert report.queries == 2
    assert report.recall == {1: pytest.approx(0.25), 5: pytest.approx(0.75)}
    assert report.to_dict()["recall_at_5"] == 0.75


def test_vidore_layout_with_and_without_a_corpus_map(tmp_path: Path) -> None:
    folder = tmp_path / "vidore"
    folder.mkdir()
    (folder / "queries.jsonl").write_text(
        json.dumps({"query-id": "q1", "query": "What is the revenue?"})
        + "\n"
        + json.dumps({"query-id": "q2", "query": "Who signed?"})
        + "\n"
    )
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t101\t1\nq2\t102\t2\n")
    queries = load_queries(folder)
    assert {q.query_id: q.relevant for q in queries} == {"q1": {("101", 1): 1.0}, "q2": {("102", 1): 2.0}}
    assert recall_at([("101.png", 1)], queries[0].relevant, 1) == 1.0  # corpus images saved as <id>.png

    (folder / "corpus.csv").write_text("corpus-id,doc-id,page_number\n101,report.pdf,7\n102,contract.pdf,2\n")
    mapped = {q.query_id: q.relevant for q in load_queries(folder)}
    assert mapped == {"q1": {("report.pdf", 7): 1.0}, "q2": {("contract.pdf", 2): 2.0}}

    with pytest.raises(InputError, match="qrels"):
        load_queries(folder / "queries.jsonl")


def test_malformed_label_files_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"query": "x", "document": "a.pdf"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1"):
        load_queries(path)
    path.write_text("{not json\n")
    with pytest.raises(InputError, match="malformed"):
        load_queries(path)


def test_page_store_ranks_by_bm25_filters_and_deletes(tmp_path: Path) -> None:
    store = PageTextStore(tmp_path / "pages.sqlite")
    store.upsert(
        ["p1", "p2", "p3"],
        [
            "Volcanoes erupt when magma pressure builds.",
            "Sourdough bread uses wild yeast; the bread rises overnight.",
            "Bread and butter.",
        ],
        [
            {"document": "v.pdf", "page": 1},
            {"document": "b.pdf", "page": 1},
            {"document": "c.pdf", "page": 4},
        ],
    )
    hits = store.search("breads rising", 5)
    assert [h.id for h in hits] == ["p2", "p3"]  # porter stemming: breads -> bread, rising -> rise
    assert store.search("bread", 5, filter={"document": "c.pdf"})[0].payload == {
        "document": "c.pdf",
        "page": 4,
    }
    assert store.search('"; DROP TABLE pages; --', 5) == []  # query syntax is escaped, not executed
    store.upsert(["p2"], ["Now about telescopes."], [{"document": "b.pdf", "page": 1}])
    assert [h.id for h in store.search("bread", 5)] == ["p3"]
    store.delete(["p3", "missing"])
    assert len(store) == 2 and store.text("p2") == "Now about telescopes." and store.text("p3") is None
    store.close()


def test_reciprocal_rank_fusion_prefers_agreement() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "c", "d"]])
    assert [pid for pid, _ in fused] == ["b", "c", "a", "d"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_labelled_query_is_a_plain_value() -> None:
    assert LabelledQuery("q", {("a", 1): 1.0}) == LabelledQuery("q", {("a", 1): 1.0})
