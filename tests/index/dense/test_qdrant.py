from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_client")

from qdrant_client import QdrantClient

from polymodal.errors import IndexError_, StoreError
from polymodal.index.dense import DenseIndex, open_dense_index, read_dense_index_info
from polymodal.index.dense.qdrant import QdrantDenseIndex
from tests.index.dense._vectors import clustered, exact_top

DIM = 32


@pytest.mark.parametrize("quantization", [None, "scalar", "binary"])
def test_collection_is_created_as_configured_and_searches(quantization: str | None) -> None:
    client = QdrantClient(":memory:")
    created: dict[str, object] = {}
    original = client.create_collection

    def spy(
        name: str, **kwargs: object
    ) -> bool:  # local mode drops the quantization config: record the request
        created.update(kwargs)
        return original(name, **kwargs)  # type: ignore[arg-type]

    client.create_collection = spy  # type: ignore[method-assign]
    base = clustered(300, DIM, seed=4)
    index = QdrantDenseIndex(
        client,
        "photos",
        dim=DIM,
        embedder_id="m1",
        quantization=quantization,
        payload_indexes={"album": "keyword"},
    )
    assert isinstance(index, DenseIndex)
    config = client.get_collection("photos").config
    assert config.params.vectors.size == DIM
    assert config.params.vectors.distance.value == "Cosine"
    assert config.hnsw_config.m == 16
    assert config.metadata == {"embedder_id": "m1", "dim": DIM, "kind": "polymodal-dense"}
    quant = created["quantization_config"]
    if quantization == "scalar":
        assert quant.scalar.type.value == "int8" and quant.scalar.always_ram  # type: ignore[attr-defined]
    elif quantization == "binary":
        assert quant.binary.always_ram  # type: ignore[attr-defined]
    else:
        assert quant is None
    index.add([f"p{i}" for i in range(300)], base, [{"album": "a" if i < 100 else "b"} for i in range(300)])
    q = clustered(1, DIM, seed=5)[0]
    assert [int(h.id[1:]) for h in index.search(q, 5)] == exact_top(base, q, 5)
    album_a = np.arange(300) < 100
    assert [int(h.id[1:]) for h in index.search(q, 5, filter={"album": "a"})] == exact_top(
        base, q, 5, album_a
    )
    assert index.search(q, 1, filter={"album": "a"})[0].payload == {"album": "a"}


def test_upsert_delete_vectors_payloads_ids() -> None:
    index = open_dense_index("qdrant::memory:/c", dim=DIM, embedder_id="m1")
    base = clustered(20, DIM, seed=6)
    index.add(["x", "y", "z"], base[:3], [{"n": 1}, {"n": 2}, {"n": 3}])
    index.add(["y"], base[5:6], [{"n": 20}])
    assert len(index) == 3
    assert index.payloads(["y", "nope"]) == {"y": {"n": 20}}
    found, vectors = index.vectors(["z", "nope", "y"])
    assert found == ["z", "y"]
    np.testing.assert_allclose(vectors, base[[2, 5]], atol=1e-6)
    index.delete(["x", "nope"])
    assert index.ids() == {"y", "z"}
    with pytest.raises(IndexError_, match="reserved"):
        index.add(["w"], base[:1], [{"_polymodal_id": "spoof"}])
    index.close()


def test_identity_is_recorded_and_checked(tmp_path: Path) -> None:
    spec = f"qdrant:path={tmp_path}/store/photos"
    index = open_dense_index(spec, dim=DIM, embedder_id="m1")
    index.add(["a"], clustered(1, DIM)[:1])
    index.close()
    info = read_dense_index_info(spec)
    assert (info.embedder_id, info.dim) == ("m1", DIM)
    with pytest.raises(IndexError_, match="built with embedder 'm1', not 'm2'"):
        open_dense_index(spec, dim=DIM, embedder_id="m2")
    with pytest.raises(IndexError_, match="does not exist"):
        open_dense_index(f"qdrant:path={tmp_path}/other/none", dim=DIM, embedder_id="m1", create=False)


def test_foreign_errors_become_store_errors() -> None:
    client = QdrantClient(":memory:")
    index = QdrantDenseIndex(client, "c", dim=DIM, embedder_id="m1")
    client.delete_collection("c")
    with pytest.raises(StoreError, match="qdrant collection 'c'"):
        index.search(np.ones(DIM, dtype=np.float32))
