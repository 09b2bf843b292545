"""Same data, same queries: the embedded engine and Qdrant (local mode) return the same top results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_client")

from polymodal.index.dense import DenseIndex, open_dense_index
from tests.index.dense._vectors import clustered

DIM = 64
N = 1500


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, list[dict[str, object]]]:
    base = clustered(N, DIM, seed=11, clusters=60)
    queries = clustered(15, DIM, seed=12, clusters=60)
    payloads: list[dict[str, object]] = [
        {"shard": i % 5, "tag": "odd" if i % 2 else "even"} for i in range(N)
    ]
    return base, queries, payloads


def _fill(index: DenseIndex, base: np.ndarray, payloads: list[dict[str, object]]) -> DenseIndex:
    index.add([f"p{i}" for i in range(N)], base, payloads)
    index.delete([f"p{i}" for i in range(0, N, 7)])
    index.add(["p1"], base[2:3], [{"shard": 9, "tag": "moved"}])
    return index


@pytest.fixture(scope="module")
def engines(
    tmp_path_factory: pytest.TempPathFactory, data: tuple[np.ndarray, np.ndarray, list[dict[str, object]]]
) -> dict[str, DenseIndex]:
    base, _, payloads = data
    path: Path = tmp_path_factory.mktemp("congruence") / "idx"
    return {
        "embedded": _fill(open_dense_index(path, dim=DIM, embedder_id="m"), base, payloads),
        # the approximate paths too (a small index is otherwise scanned exactly), searched more widely than
        # by default: these 64-d clusters with isotropic noise are harder for compressed codes than real
        # embeddings
        "graph": _fill(
            open_dense_index(
                path.with_name("graph"),
                dim=DIM,
                embedder_id="m",
                engine="hnsw",
                exact_below=0,
                exact_filter_limit=0,
                expansion_search=200,
                rescore_min=100,
            ),
            base,
            payloads,
        ),
        "ivf": _fill(
            open_dense_index(
                path.with_name("ivf"),
                dim=DIM,
                embedder_id="m",
                exact_below=0,
                exact_filter_limit=0,
                rescore_min=200,
            ),
            base,
            payloads,
        ),
        "qdrant": _fill(
            open_dense_index("qdrant::memory:/c", dim=DIM, embedder_id="m", quantization="scalar"),
            base,
            payloads,
        ),
    }


@pytest.mark.parametrize(
    "filter", [None, {"shard": 3}, {"tag": "odd", "shard": {"in": [1, 2]}}, {"tag": "moved"}], ids=str
)
def test_same_top_results(
    engines: dict[str, DenseIndex],
    data: tuple[np.ndarray, np.ndarray, list[dict[str, object]]],
    filter: dict[str, object] | None,
) -> None:
    _, queries, _ = data
    agree, overlap, ivf_overlap = 0, [], []
    for q in queries:
        a = engines["embedded"].search(q, 10, filter=filter)
        b = engines["qdrant"].search(q, 10, filter=filter)
        g = engines["graph"].search(q, 10, filter=filter)
        v = engines["ivf"].search(q, 10, filter=filter)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert x.score == pytest.approx(y.score, abs=1e-4)  # same cosine at each rank
        agree += [h.id for h in a] == [h.id for h in b]
        assert a[0].id == b[0].id and a[0].payload == b[0].payload
        overlap.append(len({h.id for h in g} & {h.id for h in b}) / max(1, len(b)))
        ivf_overlap.append(len({h.id for h in v} & {h.id for h in b}) / max(1, len(b)))
    assert agree >= len(queries) - 1  # ties in the 4th decimal may swap neighbours
    assert np.mean(overlap) >= 0.97  # the approximate paths find (nearly) the same neighbours
    assert np.mean(ivf_overlap) >= 0.95


def test_same_contents(engines: dict[str, DenseIndex]) -> None:
    assert len(engines["embedded"]) == len(engines["qdrant"]) == len(engines["graph"]) == len(engines["ivf"])
    assert engines["embedded"].ids() == engines["qdrant"].ids()
    ids = sorted(engines["embedded"].ids())[:50]
    found_a, va = engines["embedded"].vectors(ids)
    found_b, vb = engines["qdrant"].vectors(ids)
    assert found_a == found_b
    np.testing.assert_allclose(va, vb, atol=1e-6)
    assert engines["embedded"].payloads(ids) == engines["qdrant"].payloads(ids)
