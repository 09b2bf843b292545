"""The dense protocol on Qdrant: a server or cluster for scale-out, or qdrant-client's local mode in tests.

One unnamed cosine vector per point in an HNSW index; optional int8 scalar or binary quantization, searched
with oversampling and rescoring on the original vectors; keyword/integer payload indexes for filtered search.
The embedder id and dimension are kept in the collection's metadata and checked on open. Point ids may be any
string: they are mapped to UUIDs and the original id is kept in the payload (as for the multi-vector index).
Foreign exceptions are translated in :meth:`QdrantDenseIndex._call` and nowhere else. (Local mode ignores
HNSW, quantization and payload indexes and searches exactly; a server applies them.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from polymodal.errors import IndexError_, StoreError
from polymodal.index.base import FloatArray, PayloadFilter, as_matrix, check_add_args, check_filter
from polymodal.index.dense.base import DenseHit, DenseIndexInfo, normalize_rows
from polymodal.index.qdrant_multi import ID_KEY, qdrant_point_id

T = TypeVar("T")
QUANTIZATIONS = (None, "scalar", "binary")


class QdrantDenseIndex:
    """:class:`~polymodal.index.dense.base.DenseIndex` on a Qdrant collection (see the module docstring).

    Args:
        client: a ``qdrant_client.QdrantClient`` (remote, ``":memory:"`` or ``path=``).
        collection: collection name.
        dim, embedder_id: what the collection holds; must match an existing one.
        create: create the collection when absent (else raise IndexError_).
        quantization: ``None``, ``"scalar"`` (int8) or ``"binary"``; searched with rescoring.
        oversampling: candidates fetched per hit from the quantized vectors before rescoring.
        hnsw_m, hnsw_ef_construct, hnsw_ef: HNSW build and search parameters.
        payload_indexes: ``{"field": "keyword" | "integer" | "bool"}`` indexes created with the collection.
        on_disk: keep original vectors on disk (memory-mapped) on the server.
    """

    def __init__(
        self,
        client: Any,
        collection: str,
        *,
        dim: int,
        embedder_id: str,
        create: bool = True,
        quantization: str | None = None,
        oversampling: float = 3.0,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 100,
        hnsw_ef: int = 128,
        payload_indexes: Mapping[str, str] | None = None,
        on_disk: bool = False,
    ) -> None:
        from qdrant_client import models

        if quantization not in QUANTIZATIONS:
            raise IndexError_(f"quantization must be None, 'scalar' or 'binary', got {quantization!r}")
        self._models = models
        self.client = client
        self.collection = collection
        self.info = DenseIndexInfo(embedder_id, dim)
        self.quantization = quantization
        self.oversampling = oversampling
        self.hnsw_ef = hnsw_ef
        if not self._call(lambda: client.collection_exists(collection)):
            if not create:
                raise IndexError_(f"qdrant collection {collection!r} does not exist (create=False)")
            self._create(quantization, hnsw_m, hnsw_ef_construct, payload_indexes or {}, on_disk)
        read_info(client, collection, self._call).check(
            embedder_id, dim, where=f"qdrant collection {collection!r}"
        )

    def _create(
        self,
        quantization: str | None,
        m: int,
        ef_construct: int,
        payload_indexes: Mapping[str, str],
        on_disk: bool,
    ) -> None:
        models = self._models
        quant: Any = None
        if quantization == "scalar":
            quant = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(
                    type=models.ScalarType.INT8, quantile=0.99, always_ram=True
                )
            )
        elif quantization == "binary":
            quant = models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
        self._call(
            lambda: self.client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(
                    size=self.dim, distance=models.Distance.COSINE, on_disk=on_disk
                ),
                hnsw_config=models.HnswConfigDiff(m=m, ef_construct=ef_construct),
                quantization_config=quant,
                metadata={"embedder_id": self.embedder_id, "dim": self.dim, "kind": "polymodal-dense"},
            )
        )
        schema = {
            "keyword": models.PayloadSchemaType.KEYWORD,
            "integer": models.PayloadSchemaType.INTEGER,
            "bool": models.PayloadSchemaType.BOOL,
        }
        for key, kind in {ID_KEY: "keyword", **dict(payload_indexes)}.items():
            if kind not in schema:
                raise IndexError_(f"payload index {key!r}: kind must be one of {sorted(schema)}")
            with warnings.catch_warnings():  # local mode ignores payload indexes and says so
                warnings.simplefilter("ignore", UserWarning)
                self._call(partial(self.client.create_payload_index, self.collection, key, schema[kind]))

    @classmethod
    def from_url(cls, spec: str, **kwargs: Any) -> QdrantDenseIndex:
        """Open ``"<url>/<collection>"``, ``":memory:/<collection>"`` or ``"path=<dir>/<collection>"``."""
        client, collection = _client_for(spec)
        return cls(client, collection, **kwargs)

    # -- identity ------------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector dimension of the collection."""
        return self.info.dim

    @property
    def embedder_id(self) -> str:
        """Embedder that produced the vectors."""
        return self.info.embedder_id

    def _call(self, fn: Callable[[], T]) -> T:
        """Run a client call, translating qdrant-client / transport exceptions into :class:`StoreError`."""
        return _translated(self.collection, fn)

    # -- writes --------------------------------------------------------------------------------------------

    def add(
        self,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        payloads: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Upsert points (the original id is stored in the payload under ``_polymodal_id``)."""
        matrix = normalize_rows(as_matrix(vectors, self.dim, what="add"), what="add")
        plain = check_add_args(ids, cast(Sequence[Any], matrix), payloads)
        for payload in plain:
            if ID_KEY in payload:
                raise IndexError_(f"add: payload key {ID_KEY!r} is reserved")
        points = [
            self._models.PointStruct(
                id=qdrant_point_id(pid), vector=row.tolist(), payload={**payload, ID_KEY: pid}
            )
            for pid, row, payload in zip(ids, matrix, plain, strict=True)
        ]
        for start in range(0, len(points), 256):
            batch = points[start : start + 256]
            self._call(partial(self.client.upsert, self.collection, points=batch, wait=True))

    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id (unknown ids are ignored)."""
        if isinstance(ids, str):
            raise IndexError_("ids must be a sequence of strings, not one string")
        if not ids:
            return
        selector = self._models.PointIdsList(points=[qdrant_point_id(i) for i in ids])
        self._call(lambda: self.client.delete(self.collection, points_selector=selector, wait=True))

    def flush(self) -> None:
        """Nothing to do: every write waited for the server's acknowledgement."""

    def close(self) -> None:
        """Close the client connection."""
        self._call(self.client.close)

    # -- reads ---------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._call(lambda: self.client.count(self.collection, exact=True)).count)

    def ids(self) -> set[str]:
        """Every point id (scrolls the collection)."""
        found: set[str] = set()
        offset = None
        while True:
            page, offset = self._call(
                partial(
                    self.client.scroll,
                    self.collection,
                    limit=1024,
                    offset=offset,
                    with_payload=[ID_KEY],
                    with_vectors=False,
                )
            )
            found.update(str(point.payload[ID_KEY]) for point in page)
            if offset is None:
                return found

    def _retrieve(self, ids: Sequence[str], *, with_vectors: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for start in range(0, len(ids), 256):
            chunk = [qdrant_point_id(i) for i in ids[start : start + 256]]
            points = self._call(
                partial(
                    self.client.retrieve,
                    self.collection,
                    ids=chunk,
                    with_payload=True,
                    with_vectors=with_vectors,
                )
            )
            for point in points:
                out[str(point.payload[ID_KEY])] = point
        return out

    def vectors(self, ids: Sequence[str]) -> tuple[list[str], FloatArray]:
        """The stored normalised vectors of those ``ids`` that exist, in the order given."""
        points = self._retrieve(ids, with_vectors=True)
        found = [i for i in ids if i in points]
        if not found:
            return [], np.zeros((0, self.dim), dtype=np.float32)
        return found, np.asarray([points[i].vector for i in found], dtype=np.float32)

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The payloads of those ``ids`` that exist."""
        return {pid: _user_payload(p.payload) for pid, p in self._retrieve(ids, with_vectors=False).items()}

    def _filter(self, filter: PayloadFilter | None) -> Any:
        conditions = check_filter(filter)
        if not conditions:
            return None
        models = self._models
        must = [
            models.FieldCondition(
                key=key,
                match=models.MatchValue(value=value) if op == "eq" else models.MatchAny(any=list(value)),
            )
            for key, (op, value) in conditions.items()
        ]
        return models.Filter(must=must)

    def search(
        self, query: npt.ArrayLike, k: int = 10, *, filter: PayloadFilter | None = None
    ) -> list[DenseHit]:
        """The ``k`` nearest points by cosine similarity, best first, restricted by ``filter``."""
        q = normalize_rows(as_matrix(query, self.dim, what="query"), what="query")
        if q.shape[0] != 1:
            raise IndexError_(f"query: expected one vector, got {q.shape[0]}")
        flt = self._filter(filter)
        if k <= 0:
            return []
        models = self._models
        quant = (
            models.QuantizationSearchParams(rescore=True, oversampling=self.oversampling)
            if self.quantization
            else None
        )
        params = models.SearchParams(hnsw_ef=max(self.hnsw_ef, k), quantization=quant)
        with warnings.catch_warnings():  # local mode says it searches exactly; a server applies the params
            warnings.filterwarnings("ignore", message="Local mode performs exact", category=UserWarning)
            response = self._call(
                lambda: self.client.query_points(
                    self.collection,
                    query=q[0].tolist(),
                    query_filter=flt,
                    limit=k,
                    search_params=params,
                    with_payload=True,
                )
            )
        return [
            DenseHit(str(point.payload[ID_KEY]), float(point.score), _user_payload(point.payload))
            for point in response.points
        ]

    def __repr__(self) -> str:
        return f"QdrantDenseIndex({self.collection!r}, dim={self.dim})"


def _user_payload(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (payload or {}).items() if k != ID_KEY}


def _translated(collection: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except IndexError_:
        raise
    except Exception as exc:  # the one translation point for this backend
        raise StoreError(f"qdrant collection {collection!r}: {type(exc).__name__}: {exc}") from exc


def _client_for(spec: str) -> tuple[Any, str]:
    from qdrant_client import QdrantClient

    location, _, collection = spec.rpartition("/")
    if not location or not collection:
        raise IndexError_(f"qdrant index spec {spec!r}: expected <url>/<collection>")
    if location == ":memory:":
        return QdrantClient(":memory:"), collection
    if location.startswith("path="):
        return _translated(collection, lambda: QdrantClient(path=location[len("path=") :])), collection
    return QdrantClient(url=location), collection


def read_info(
    client: Any, collection: str, call: Callable[[Callable[[], Any]], Any] | None = None
) -> DenseIndexInfo:
    """The embedder id and dimension recorded in a collection's metadata."""
    run = call or (lambda fn: _translated(collection, fn))
    info = run(lambda: client.get_collection(collection))
    metadata = getattr(info.config, "metadata", None) or {}
    vectors = info.config.params.vectors
    if metadata.get("kind") != "polymodal-dense" or isinstance(vectors, dict):
        raise IndexError_(f"qdrant collection {collection!r} is not a polymodal dense index")
    return DenseIndexInfo(str(metadata["embedder_id"]), int(vectors.size))


def read_qdrant_info(spec: str) -> DenseIndexInfo:
    """:func:`read_info` from an index spec string (see :meth:`QdrantDenseIndex.from_url`)."""
    client, collection = _client_for(spec)
    try:
        if not _translated(collection, lambda: client.collection_exists(collection)):
            raise IndexError_(f"qdrant collection {collection!r} does not exist")
        return read_info(client, collection)
    finally:
        client.close()


__all__ = ["QUANTIZATIONS", "QdrantDenseIndex", "read_info", "read_qdrant_info"]
