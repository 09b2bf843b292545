from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from polymodal.errors import IndexError_, StoreError
from polymodal.index.dense import DenseIndex, open_dense_index, read_dense_index_info
from polymodal.index.dense.embedded import POINTS, STRUCTURE_FILES, VECTORS, EmbeddedDenseIndex
from tests.index.dense._vectors import clustered, exact_top

DIM = 48


@pytest.fixture
def base() -> np.ndarray:
    return clustered(2000, DIM, seed=1)


def _filled(path: Path, base: np.ndarray, **options: object) -> EmbeddedDenseIndex:
    index = EmbeddedDenseIndex(path, dim=DIM, embedder_id="m1", **options)  # type: ignore[arg-type]
    payloads = [{"group": i % 4, "even": i % 2 == 0, "name": f"n{i}"} for i in range(len(base))]
    index.add([f"p{i}" for i in range(len(base))], base, payloads)
    return index


@pytest.mark.parametrize(
    ("exact_below", "engine"),
    [(4096, "ivf-pq"), (0, "ivf-pq"), (0, "hnsw")],  # exact scan of a small index; each structure
)
def test_is_a_dense_index_and_finds_exact_neighbours(
    tmp_path: Path, base: np.ndarray, exact_below: int, engine: str
) -> None:
    # the approximate paths, searched widely: these noisy 48-d clusters are harder than real embeddings
    # (the default settings' recall at scale is measured by benchmarks/dense_bench.py)
    index = _filled(
        tmp_path / "idx", base, exact_below=exact_below, engine=engine, expansion_search=200, rescore_min=200
    )
    assert isinstance(index, DenseIndex)
    queries = clustered(50, DIM, seed=2)
    recall = []
    for q in queries:
        got = [int(h.id[1:]) for h in index.search(q, 10)]
        recall.append(len(set(got) & set(exact_top(base, q, 10))) / 10)
    assert np.mean(recall) >= (1.0 if exact_below else 0.97)
    hits = index.search(base[7], 3)
    assert hits[0].id == "p7"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].payload == {"group": 3, "even": False, "name": "n7"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    index.close()


def test_scores_are_exact_cosines_after_rescoring(tmp_path: Path, base: np.ndarray) -> None:
    index = _filled(tmp_path / "idx", base, exact_below=0)
    q = clustered(1, DIM, seed=9)[0] * 3.0  # not normalised: the index normalises
    for hit in index.search(q, 5):
        expected = float(base[int(hit.id[1:])] @ (q / np.linalg.norm(q)))
        assert hit.score == pytest.approx(expected, abs=1e-5)
    index.close()


@pytest.mark.parametrize(
    ("exact_filter_limit", "engine"),
    [(0, "ivf-pq"), (0, "hnsw"), (100_000, "ivf-pq")],  # filtered structure search, and exact scan
)
def test_filters_match_the_reference(
    tmp_path: Path, base: np.ndarray, exact_filter_limit: int, engine: str
) -> None:
    index = _filled(
        tmp_path / "idx", base, exact_filter_limit=exact_filter_limit, exact_below=0, engine=engine
    )
    group = np.arange(len(base)) % 4
    q = clustered(1, DIM, seed=3)[0]
    got = [int(h.id[1:]) for h in index.search(q, 10, filter={"group": 2})]
    assert got == exact_top(base, q, 10, allowed=group == 2)
    got = [int(h.id[1:]) for h in index.search(q, 10, filter={"group": {"in": [0, 1]}, "even": True})]
    assert got == exact_top(base, q, 10, allowed=(group == 0))  # group 1 rows are all odd
    assert index.search(q, 5, filter={"group": True}) == []  # typed: True is not 1
    assert index.search(q, 5, filter={"name": "n11"})[0].id == "p11"
    assert index.search(q, 5, filter={"missing": "x"}) == []
    index.close()


def test_upsert_replaces_and_delete_removes(tmp_path: Path, base: np.ndarray) -> None:
    index = _filled(tmp_path / "idx", base)
    index.add(["p3"], base[10:11], [{"group": 99}])
    assert len(index) == len(base)
    hits = index.search(base[10], 2)
    assert {h.id for h in hits} == {"p3", "p10"}
    assert index.payloads(["p3"]) == {"p3": {"group": 99}}
    index.delete(["p10", "p3", "never-there"])
    assert len(index) == len(base) - 2
    assert "p10" not in {h.id for h in index.search(base[10], 5)}
    found, vectors = index.vectors(["p4", "p3", "p5"])
    assert found == ["p4", "p5"]
    np.testing.assert_allclose(vectors, base[[4, 5]], atol=1e-6)
    index.close()


def test_persists_and_reopens(tmp_path: Path, base: np.ndarray) -> None:
    index = _filled(tmp_path / "idx", base)
    index.delete(["p0"])
    before = index.search(base[5], 5)
    index.close()
    index.close()  # idempotent
    assert read_dense_index_info(tmp_path / "idx").embedder_id == "m1"
    again = open_dense_index(tmp_path / "idx", dim=DIM, embedder_id="m1", create=False)
    assert len(again) == len(base) - 1
    assert again.search(base[5], 5) == before
    again.close()


def test_wrong_model_or_dimension_is_a_clear_error(tmp_path: Path, base: np.ndarray) -> None:
    _filled(tmp_path / "idx", base).close()
    with pytest.raises(IndexError_, match="built with embedder 'm1', not 'm2'"):
        open_dense_index(tmp_path / "idx", dim=DIM, embedder_id="m2")
    with pytest.raises(IndexError_, match="48-dimensional"):
        open_dense_index(tmp_path / "idx", dim=64, embedder_id="m1")
    with pytest.raises(IndexError_, match="no dense index"):
        open_dense_index(tmp_path / "nothing", dim=DIM, embedder_id="m1", create=False)
    index = open_dense_index(tmp_path / "idx", dim=DIM, embedder_id="m1")
    with pytest.raises(IndexError_, match=r"shape \(n, 48\)"):
        index.search(np.ones(64, dtype=np.float32))
    with pytest.raises(IndexError_, match=r"shape \(n, 48\)"):
        index.add(["x"], np.ones((1, 32), dtype=np.float32))
    with pytest.raises(IndexError_, match="zero vector"):
        index.add(["x"], np.zeros((1, DIM), dtype=np.float32))
    with pytest.raises(IndexError_, match="NaN"):
        index.search(np.full(DIM, np.nan, dtype=np.float32))
    with pytest.raises(IndexError_, match="JSON"):
        index.add(["x"], base[:1], [{"bad": object()}])
    with pytest.raises(IndexError_, match="fixed when the index is built"):
        EmbeddedDenseIndex(tmp_path / "idx2", dim=DIM, embedder_id="m1", quantization="f16").close()
        EmbeddedDenseIndex(tmp_path / "idx2", dim=DIM, embedder_id="m1", quantization="i8")
    index.close()


def test_one_writer_and_read_only_readers(tmp_path: Path, base: np.ndarray) -> None:
    writer = _filled(tmp_path / "idx", base)
    writer.flush()
    with pytest.raises(StoreError, match="locked"):
        EmbeddedDenseIndex(tmp_path / "idx", dim=DIM, embedder_id="m1")
    reader = EmbeddedDenseIndex(tmp_path / "idx", dim=DIM, embedder_id="m1", read_only=True)
    assert reader.search(base[1], 1)[0].id == "p1"
    with pytest.raises(IndexError_, match="read-only"):
        reader.add(["x"], base[:1])
    reader.close()
    writer.close()


@pytest.mark.parametrize("engine", ["ivf-pq", "hnsw"])
def test_missing_or_torn_structure_is_rebuilt_from_the_originals(
    tmp_path: Path, base: np.ndarray, engine: str
) -> None:
    _filled(tmp_path / "idx", base, exact_below=0, engine=engine).close()
    assert (tmp_path / "idx" / STRUCTURE_FILES[engine]).is_file()
    (tmp_path / "idx" / STRUCTURE_FILES[engine]).write_bytes(b"torn")
    seen: list[tuple[int, int]] = []
    index = EmbeddedDenseIndex(
        tmp_path / "idx", dim=DIM, embedder_id="m1", progress=lambda d, t: seen.append((d, t))
    )
    assert seen and seen[-1] == (len(base), len(base))
    assert index.search(base[42], 1)[0].id == "p42"
    index.close()


def test_crash_before_flush_loses_nothing_committed(tmp_path: Path, base: np.ndarray) -> None:
    """A writer killed after add() (no flush, no graph save) leaves an index that reopens whole."""
    script = (
        "import os, sys, numpy as np\n"
        "from polymodal.index.dense.embedded import EmbeddedDenseIndex\n"
        "base = np.load(sys.argv[2])\n"
        "index = EmbeddedDenseIndex(sys.argv[1], dim=base.shape[1], embedder_id='m1')\n"
        "index.add([f'p{i}' for i in range(100)], base[:100]); index.flush()\n"
        "index.add([f'p{i}' for i in range(100, 300)], base[100:300])\n"
        "os._exit(9)\n"
    )
    np.save(tmp_path / "base.npy", base)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "idx"), str(tmp_path / "base.npy")], check=False
    )
    assert done.returncode == 9
    index = EmbeddedDenseIndex(tmp_path / "idx", dim=DIM, embedder_id="m1")
    assert len(index) == 300
    assert index.search(base[250], 1)[0].id == "p250"
    # rows appended after the last committed key (a crash mid-add) are overwritten, not misattributed
    with open(tmp_path / "idx" / VECTORS, "ab") as handle:
        handle.write(np.ones(DIM, dtype=np.float32).tobytes())
    index.close()
    index = EmbeddedDenseIndex(tmp_path / "idx", dim=DIM, embedder_id="m1")
    index.add(["new"], base[1999:2000])
    assert index.search(base[1999], 1)[0].id == "new"
    assert os.path.getsize(tmp_path / "idx" / VECTORS) == 301 * DIM * 4
    assert json.loads((tmp_path / "idx" / "dense.json").read_text())["embedder_id"] == "m1"
    assert (tmp_path / "idx" / POINTS).is_file()
    index.close()


def test_empty_index_and_k_zero(tmp_path: Path) -> None:
    index = EmbeddedDenseIndex(tmp_path / "idx", dim=DIM, embedder_id="m1")
    q = np.ones(DIM, dtype=np.float32)
    assert index.search(q, 5) == []
    index.add(["a"], q[None, :])
    assert index.search(q, 0) == []
    assert [h.id for h in index.search(q, 5)] == ["a"]
    index.close()


@pytest.mark.parametrize(("engine", "points"), [("hnsw", 100), ("ivf-pq", 1500)])
def test_flush_keeps_the_structure_as_a_cache(
    tmp_path: Path, base: np.ndarray, engine: str, points: int
) -> None:
    """flush() makes points durable without rewriting the structure each time; close() saves it."""
    index = _filled(tmp_path / "idx", base[:points], engine=engine, exact_below=0)
    index.flush()
    assert not (tmp_path / "idx" / STRUCTURE_FILES[engine]).exists()  # below the save threshold
    index.close()
    assert (tmp_path / "idx" / STRUCTURE_FILES[engine]).is_file()
    reopened = EmbeddedDenseIndex(tmp_path / "idx", dim=DIM, embedder_id="m1", exact_below=0)
    assert reopened.search(base[3], 1)[0].id == "p3"
    reopened.close()


def test_inverted_file_is_trained_at_the_threshold_and_retrained_as_it_grows(tmp_path: Path) -> None:
    """Small batches: exact scans until exact_below points, then an inverted file, retrained once it has
    grown RETRAIN_GROWTH times; every state answers the same top hit."""
    from polymodal.index.dense._ann import RETRAIN_GROWTH, TRAIN_FLOOR, IvfPqCandidates

    vectors = clustered(TRAIN_FLOOR * (RETRAIN_GROWTH + 1), DIM, seed=5)
    # these isotropic 48-d clusters make compressed codes rank points of one cluster coarsely: rescore widely
    index = EmbeddedDenseIndex(
        tmp_path / "idx", dim=DIM, embedder_id="m1", exact_below=TRAIN_FLOOR, rescore_min=600
    )
    trained: list[int] = []
    for start in range(0, len(vectors), 512):
        index.add([f"p{i}" for i in range(start, start + 512)], vectors[start : start + 512])
        ann = index._ann
        assert isinstance(ann, IvfPqCandidates)
        assert ann.ready == (start + 512 >= TRAIN_FLOOR)
        if ann.ready and (not trained or trained[-1] != ann.trained_on):
            trained.append(ann.trained_on)
        probe = start + 100
        assert index.search(vectors[probe], 1)[0].id == f"p{probe}"
    assert trained == [TRAIN_FLOOR, TRAIN_FLOOR * RETRAIN_GROWTH + 512]
    index.close()
    reopened = EmbeddedDenseIndex(tmp_path / "idx", dim=DIM, embedder_id="m1")
    assert isinstance(reopened._ann, IvfPqCandidates)
    assert reopened._ann.trained_on == trained[-1]
    assert len(reopened._ann) == len(vectors)
    reopened.close()
