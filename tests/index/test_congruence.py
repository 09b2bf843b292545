"""The same calls on every MultiVectorIndex implementation give the same answers (small, exact-enough
data)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from polymodal.errors import IndexError_
from polymodal.index import MultiVectorIndex, open_multivector_index
from polymodal.index.qdrant_multi import QdrantMultiVectorIndex

DIM = 32


@pytest.fixture(params=["embedded", "qdrant-multivector", "qdrant-pooled", "qdrant-path"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MultiVectorIndex]:
    kind = request.param
    if kind == "embedded":
        opened = open_multivector_index(tmp_path / "ix", dim=DIM, embedder_id="test:e")
    elif kind == "qdrant-path":
        opened = open_multivector_index(f"qdrant:path={tmp_path / 'q'}/pages", dim=DIM, embedder_id="test:e")
    else:
        from qdrant_client import QdrantClient

        stage = "none" if kind == "qdrant-multivector" else "pooled"
        opened = QdrantMultiVectorIndex(
            QdrantClient(":memory:"),
            f"c{uuid.uuid4().hex}",
            dim=DIM,
            embedder_id="test:e",
            first_stage=stage,
            prefetch=60,
            payload_indexes={"doc": "keyword", "page": "integer"},
        )
    yield opened
    opened.close()


def load(index: MultiVectorIndex, pages: list[np.ndarray]) -> None:
    ids = [f"page-{i}" for i in range(len(pages))]
    payloads = [{"doc": f"d{i % 4}", "page": i, "scanned": i % 3 == 0} for i in range(len(pages))]
    index.add(ids, pages, payloads)
    index.flush()


def test_same_top_results_scores_and_payloads(index: MultiVectorIndex, corpus) -> None:
    pages, queries, sources = corpus
    pages = pages[:60]
    load(index, pages)
    assert len(index) == 60 and index.ids() == {f"page-{i}" for i in range(60)}
    probes = [p[::4] for p in pages[::6]] + [q for q, s in zip(queries, sources, strict=True) if s < 60]
    for q in probes:
        hits = index.search(q, k=5)
        exact = {f"page-{i}": float((p @ q.T).max(axis=0).sum()) for i, p in enumerate(pages)}
        best = sorted(exact.values(), reverse=True)[:5]
        # same ranking as exact MaxSim, up to float16 rounding of near-ties
        assert [exact[h.id] for h in hits] == pytest.approx(best, rel=2e-3)
        assert [h.score for h in hits] == pytest.approx(best, rel=2e-3)
        number = int(hits[0].id.split("-")[1])
        assert hits[0].payload == {"doc": f"d{number % 4}", "page": number, "scanned": number % 3 == 0}
    del sources


def test_same_filter_semantics(index: MultiVectorIndex, corpus) -> None:
    pages, queries, _ = corpus
    load(index, pages[:40])
    q = queries[0]
    assert {h.payload["doc"] for h in index.search(q, 40, filter={"doc": "d1"})} == {"d1"}
    assert len(index.search(q, 40, filter={"doc": "d1"})) == 10
    pages_in = {h.payload["page"] for h in index.search(q, 40, filter={"page": {"in": [1, 2, 3, 99]}})}
    assert pages_in == {1, 2, 3}
    both = index.search(q, 40, filter={"doc": {"in": ["d0", "d2"]}, "scanned": True})
    assert {h.payload["page"] for h in both} == {i for i in range(40) if i % 4 in (0, 2) and i % 3 == 0}
    assert index.search(q, 5, filter={"doc": "none"}) == []
    with pytest.raises(IndexError_):
        index.search(q, 5, filter={"page": {"gte": 3}})


def test_same_upsert_and_delete(index: MultiVectorIndex, corpus) -> None:
    pages, _, _ = corpus
    load(index, pages[:20])
    index.add(["page-1"], [pages[30]], [{"doc": "moved", "page": 1}])
    index.delete(["page-2", "never-existed"])
    index.flush()
    assert len(index) == 19 and "page-2" not in index.ids()
    hit = index.search(pages[30][:6], 1)[0]
    assert (hit.id, hit.payload) == ("page-1", {"doc": "moved", "page": 1})
    assert all(h.id != "page-2" for h in index.search(pages[2][:6], 19))


def test_same_validation_errors(index: MultiVectorIndex) -> None:
    with pytest.raises(IndexError_, match="shape"):
        index.add(["x"], [np.zeros((2, DIM + 1))])
    with pytest.raises(IndexError_, match="ids but"):
        index.add(["x", "y"], [np.zeros((2, DIM))])
    with pytest.raises(IndexError_, match="shape"):
        index.search(np.zeros((2, 3)))


def test_qdrant_identity_is_checked_on_reopen(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    QdrantMultiVectorIndex(client, "pages", dim=DIM, embedder_id="colpali:a")
    with pytest.raises(IndexError_, match="built with embedder 'colpali:a', not 'colpali:b'"):
        QdrantMultiVectorIndex(client, "pages", dim=DIM, embedder_id="colpali:b")
    with pytest.raises(IndexError_, match="32-d vectors, not 8-d"):
        QdrantMultiVectorIndex(client, "pages", dim=8, embedder_id="colpali:a")
    with pytest.raises(IndexError_, match="does not exist"):
        QdrantMultiVectorIndex(client, "other", dim=DIM, embedder_id="colpali:a", create=False)
    with pytest.raises(IndexError_, match="expected <url>/<collection>"):
        open_multivector_index("qdrant:nocollection", dim=DIM, embedder_id="x")
