from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polymodal.errors import IndexError_
from polymodal.index import MultiVectorIndex, open_multivector_index
from polymodal.index.embedded import EmbeddedMultiVectorIndex
from polymodal.index.embedded.writing import SegmentWriter
from tests.index._data import exact_top

DIM = 32


def fill(index: EmbeddedMultiVectorIndex, pages: list[np.ndarray], start: int = 0) -> None:
    index.add(
        [f"p{i}" for i in range(start, start + len(pages))],
        pages,
        [{"doc": f"d{i % 5}", "page": i} for i in range(start, start + len(pages))],
    )


def recall_at(index: EmbeddedMultiVectorIndex, pages, queries, k: int = 10) -> float:
    total = 0.0
    for q in queries:
        expected = {f"p{i}" for i in exact_top(pages, q, k)}
        total += len(expected & {h.id for h in index.search(q, k)}) / k
    return total / len(queries)


def test_add_search_persist_reopen(tmp_path: Path, corpus) -> None:
    pages, queries, sources = corpus
    index = open_multivector_index(tmp_path / "ix", dim=DIM, embedder_id="test:e")
    assert isinstance(index, MultiVectorIndex)
    fill(index, pages[:100])
    hits = index.search(queries[0], k=3)  # unflushed writes are searchable
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    index.close()
    reopened = open_multivector_index(tmp_path / "ix", dim=DIM, embedder_id="test:e", create=False)
    assert len(reopened) == 100 and reopened.ids() == {f"p{i}" for i in range(100)}
    for q, src in zip(queries, sources, strict=True):
        if src < 100:
            assert reopened.search(q, k=1)[0].id == f"p{src}"
    top = reopened.search(pages[7][:4], k=1)[0]
    assert top.id == "p7" and top.payload == {"doc": "d2", "page": 7}
    reopened.close()


def test_exact_before_training_matches_brute_force(tmp_path: Path, corpus) -> None:
    pages, queries, _ = corpus
    index = EmbeddedMultiVectorIndex(tmp_path / "ix", dim=DIM, embedder_id="e")
    fill(index, pages)
    index.flush()
    assert index.codebook is None and {s.kind for s in index.segments} == {"raw"}
    assert recall_at(index, pages, queries) == 1.0
    q = queries[0]
    best = index.search(q, 1)[0]
    expected = float((pages[int(best.id[1:])] @ q.T).max(axis=0).sum())
    assert best.score == pytest.approx(expected, rel=2e-3)  # float16 storage


@pytest.mark.parametrize("store_vectors", [False, True, "int8"])
def test_compressed_recall_against_exact(tmp_path: Path, corpus, store_vectors: bool | str) -> None:
    pages, queries, sources = corpus
    index = EmbeddedMultiVectorIndex(
        tmp_path / "ix",
        dim=DIM,
        embedder_id="e",
        min_train_tokens=2_000,
        n_centroids=128,
        candidates=64,
        rerank=32,
        store_vectors=store_vectors,
    )
    fill(index, pages[:200])
    index.flush()
    fill(index, pages[200:], start=200)
    index.flush()
    assert index.codebook is not None and {s.kind for s in index.segments} == {"pq"}
    # 400 pages, 64 candidates: the staged search really prunes, and still finds what exact MaxSim finds
    # 2-bit residuals blur near-ties at rank 10 (measured 0.80-0.85; a random pick of 10 of 400 gives 0.025);
    # with the float16 or int8 re-rank it is exact-grade
    recall = recall_at(index, pages, queries)
    assert recall >= (0.95 if store_vectors else 0.75), recall
    assert {s.rerank_store for s in index.segments} == {index.store_vectors}
    assert all(index.search(q, 1)[0].id == f"p{s}" for q, s in zip(queries, sources, strict=True))
    many = index.search(queries[0], 100)  # k above every stage's default size still returns k hits
    assert len(many) == 100 and len({h.id for h in many}) == 100
    assert sum(s.arrays["codes"].nbytes for s in index.segments) == 400 * 24 * DIM * 2 // 8  # 2 bits/dim


def test_without_a_rerank_store_the_codebook_is_trained_once(tmp_path: Path, corpus) -> None:
    pages, queries, sources = corpus
    index = EmbeddedMultiVectorIndex(
        tmp_path / "ix", dim=DIM, embedder_id="e", min_train_tokens=1_000, store_vectors=False
    )
    fill(index, pages[:50])
    index.flush()
    first = index._meta["codebook"]
    fill(index, pages[50:], start=50)
    index.flush()
    assert index._meta["codebook"] == first  # 2-bit codes re-encoded from 2-bit codes would lose twice
    assert all(index.search(q, 1)[0].id == f"p{s}" for q, s in zip(queries, sources, strict=True))


@pytest.mark.parametrize("store_vectors", ["int8", "float16"])
def test_codebook_is_retrained_as_the_index_grows(tmp_path: Path, corpus, store_vectors: str) -> None:
    pages, queries, sources = corpus
    index = EmbeddedMultiVectorIndex(
        tmp_path / "ix", dim=DIM, embedder_id="e", min_train_tokens=1_000, store_vectors=store_vectors
    )
    fill(index, pages[:50])  # 1,200 tokens: trained on these
    index.flush()
    first = index._meta["codebook"]
    assert index._meta["trained_on"] == 1_200
    index.delete(["p0"])
    fill(index, pages[50:400], start=50)  # 9,576 live tokens >= 4 x 1,200: retrained on a sample of all
    index.flush()
    assert index._meta["codebook"] != first and index._meta["trained_on"] == 399 * 24
    assert [p.name for p in (tmp_path / "ix").glob("codebook-*")] == [index._meta["codebook"]]
    assert len(index) == 399 and "p0" not in index.ids() and len(index.segments) == 2
    if store_vectors == "int8":  # re-encoded from the old int8 store: still within int8 precision
        row = index.segments[0].ids.index("p7")
        np.testing.assert_allclose(index.segments[0].vectors_of(row, index.codebook), pages[7], atol=0.02)
    recall = recall_at(index, pages, queries)
    assert recall >= 0.95, recall
    assert all(index.search(q, 1)[0].id == f"p{s}" for q, s in zip(queries, sources, strict=True) if s)
    before = [h.id for h in index.search(queries[1], 10)]
    index.close()
    reopened = EmbeddedMultiVectorIndex(tmp_path / "ix", dim=DIM, embedder_id="e", create=False)
    assert reopened.store_vectors == store_vectors
    assert [h.id for h in reopened.search(queries[1], 10)] == before


def test_a_failed_retrain_leaves_the_committed_codebook(tmp_path: Path, corpus, monkeypatch) -> None:
    pages, queries, sources = corpus
    index = EmbeddedMultiVectorIndex(tmp_path / "ix", dim=DIM, embedder_id="e", min_train_tokens=1_000)
    fill(index, pages[:50])
    index.flush()
    committed = index.codebook

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SegmentWriter, "reencode", disk_full)
    fill(index, pages[50:400], start=50)
    with pytest.raises(OSError, match="No space"):
        index.flush()
    assert index.codebook is committed  # the stored points are still encoded with it
    monkeypatch.undo()
    index.flush()  # the retry retrains and re-encodes
    assert index.codebook is not committed and len(index) == 400
    assert all(index.search(q, 1)[0].id == f"p{s}" for q, s in zip(queries, sources, strict=True))


def test_segment_writes_stream_through_scratch_files_and_leave_none(
    tmp_path: Path, corpus, monkeypatch
) -> None:
    from polymodal.index.embedded import writing

    pages, queries, sources = corpus
    path = tmp_path / "ix"
    index = EmbeddedMultiVectorIndex(path, dim=DIM, embedder_id="e", min_train_tokens=1_000, max_segments=2)
    monkeypatch.setattr(writing, "_ENCODE_CHUNK", 100)  # re-encoding and merging take many small steps
    monkeypatch.setattr(writing, "_MERGE_ROWS", 7)
    for start in range(0, 200, 50):  # train, merges, a retrain at 4x growth
        fill(index, pages[start : start + 50], start=start)
        index.flush()
    index.delete(["p3"])
    index.optimize()

    def leftovers() -> list[str]:
        return [p.name for p in path.iterdir() if p.name.endswith(".tmp")]

    assert leftovers() == [] and len(index.segments) == 1 and len(index) == 199

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writing, "write_segment_dir", disk_full)
    fill(index, pages[200:250], start=200)
    with pytest.raises(OSError, match="No space"):
        index.flush()
    assert leftovers() == []
    monkeypatch.undo()
    index.flush()
    assert len(index) == 249 and leftovers() == []
    hits = [index.search(q, 1)[0].id for q, s in zip(queries, sources, strict=True) if 3 != s < 250]
    assert len(hits) >= 5 and hits == [f"p{s}" for s in sources if 3 != s < 250]


def test_store_vectors_is_validated(tmp_path: Path) -> None:
    with pytest.raises(IndexError_, match="store_vectors must be one of"):
        EmbeddedMultiVectorIndex(tmp_path / "ix", dim=DIM, embedder_id="e", store_vectors="int4")


def test_upsert_delete_and_filters(tmp_path: Path, corpus) -> None:
    pages, _, _ = corpus
    index = EmbeddedMultiVectorIndex(tmp_path / "ix", dim=DIM, embedder_id="e", min_train_tokens=2_000)
    fill(index, pages[:150])
    index.flush()
    index.add(["p3"], [pages[99]], [{"doc": "new", "page": 3}])  # upsert: p3 now holds page 99's vectors
    index.delete(["p99", "missing"])
    assert len(index) == 149
    hit = index.search(pages[99][:5], 1)[0]
    assert (hit.id, hit.payload) == ("p3", {"doc": "new", "page": 3})
    index.flush()
    index.close()
    index = EmbeddedMultiVectorIndex(tmp_path / "ix", dim=DIM, embedder_id="e", create=False)
    assert len(index) == 149 and "p99" not in index.ids()
    assert index.search(pages[99][:5], 1)[0].id == "p3"
    hits = index.search(pages[0][:5], 50, filter={"doc": "d1"})
    assert hits and all(h.payload["doc"] == "d1" for h in hits)
    assert len(hits) == 30  # every page of d1, even those the candidate stage would not reach
    hits = index.search(pages[0][:5], 10, filter={"page": {"in": [1, 2, 140]}, "doc": {"in": ["d1", "d2"]}})
    assert sorted(h.payload["page"] for h in hits) == [1, 2]
    assert index.search(pages[0][:5], 10, filter={"doc": "nope"}) == []
    with pytest.raises(IndexError_, match="only equality"):
        index.search(pages[0], 3, filter={"page": {"gt": 3}})


def test_many_flushes_merge_segments(tmp_path: Path, corpus) -> None:
    pages, queries, sources = corpus
    index = EmbeddedMultiVectorIndex(
        tmp_path / "ix", dim=DIM, embedder_id="e", min_train_tokens=1_500, max_segments=4
    )
    for start in range(0, 200, 10):
        fill(index, pages[start : start + 10], start=start)
        index.delete([f"p{start}"])
        index.flush()
        assert len(index.segments) <= 4
    assert len(index) == 180
    files = {p.name for p in (tmp_path / "ix").iterdir()}
    assert {p for p in files if p.startswith("seg-")} == {s.name for s in index.segments}  # nothing left over
    index.optimize()
    assert len(index.segments) == 1 and len(index) == 180
    for q, src in zip(queries, sources, strict=True):
        if src < 200 and src % 10:
            assert index.search(q, 1)[0].id == f"p{src}"


def test_identity_and_validation_errors(tmp_path: Path, corpus) -> None:
    pages, _, _ = corpus
    with EmbeddedMultiVectorIndex(tmp_path / "ix", dim=DIM, embedder_id="colpali:a") as index:
        fill(index, pages[:2])
        with pytest.raises(IndexError_, match=r"expected vectors of shape \(n, 32\)"):
            index.add(["x"], [np.zeros((3, 16))])
        with pytest.raises(IndexError_, match="NaN"):
            index.add(["x"], [np.full((3, DIM), np.nan)])
        with pytest.raises(IndexError_, match="duplicate"):
            index.add(["x", "x"], [pages[0], pages[1]])
        with pytest.raises(IndexError_, match="query"):
            index.search(np.zeros((2, 8)))
    with pytest.raises(IndexError_, match="built with embedder 'colpali:a', not 'colpali:b'"):
        EmbeddedMultiVectorIndex(tmp_path / "ix", dim=DIM, embedder_id="colpali:b")
    with pytest.raises(IndexError_, match="32-d vectors, not 64-d"):
        open_multivector_index(tmp_path / "ix", dim=64, embedder_id="colpali:a")
    with pytest.raises(IndexError_, match="no index here"):
        open_multivector_index(tmp_path / "none", dim=DIM, embedder_id="x", create=False)


def test_reader_sees_commits_of_writer(tmp_path: Path, corpus) -> None:
    pages, _, _ = corpus
    writer = EmbeddedMultiVectorIndex(tmp_path / "ix", dim=DIM, embedder_id="e")
    fill(writer, pages[:5])
    writer.flush()
    reader = EmbeddedMultiVectorIndex(tmp_path / "ix", dim=DIM, embedder_id="e", create=False)
    assert len(reader.ids()) == 5
    fill(writer, pages[5:8], start=5)
    assert len(reader.ids()) == 5  # not committed yet
    writer.flush()
    assert len(reader.ids()) == 8
    assert reader.search(pages[6][:3], 1)[0].id == "p6"
    writer.close()
    reader.close()


@pytest.mark.parametrize("store_vectors", ["int8", "float16"])
def test_rerank_store_scores_in_groups_match_one_pass(
    tmp_path: Path, corpus, monkeypatch, store_vectors
) -> None:
    from polymodal.index.embedded import segment as segment_module

    pages, queries, _ = corpus
    index = EmbeddedMultiVectorIndex(
        tmp_path / "ix", dim=DIM, embedder_id="e", min_train_tokens=1_000, store_vectors=store_vectors
    )
    fill(index, pages)
    index.flush()
    segment, book = index.segments[0], index.codebook
    assert book is not None and segment.directory is not None
    rows = np.arange(0, len(segment), 3)
    q = queries[0]
    # one pass over the stored approximation of every row
    expected = np.array([(segment.vectors_of(int(r), book) @ q.T).max(axis=0).sum() for r in rows])
    monkeypatch.setattr(segment_module, "_CAST_CHUNK", 50)  # ~2 pages per group: many groups

    def score(rows: np.ndarray) -> np.ndarray:
        if store_vectors == "int8":
            return segment.int8_scores(rows, q, book.centroids @ q.T)
        return segment.exact_scores(rows, q)

    got = score(rows)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert len(score(rows[:0])) == 0
    if store_vectors == "float16":  # and the float16 store is the originals: exact MaxSim
        exact = np.array([(pages[int(segment.ids[r][1:])] @ q.T).max(axis=0).sum() for r in rows])
        np.testing.assert_allclose(got, exact, atol=5e-3)
