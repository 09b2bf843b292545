"""The multi-vector protocol on Qdrant: a server or cluster for scale-out, or qdrant-client's local mode.

Each point has two named vectors: ``tokens`` (a multivector compared with MAX_SIM, optionally
binary-quantized)
and ``pooled`` (the mean of the tokens). Search prefetches ``prefetch`` candidates with the pooled vector and
re-ranks them by MaxSim (``first_stage="pooled"``), or runs MaxSim over every point (``first_stage="none"``).
Point ids may be any string: they are mapped to UUIDs and the original id is kept in the payload.
Foreign exceptions are translated here, in :meth:`QdrantMultiVectorIndex._call`, and nowhere else.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from polymodal.errors import IndexError_, StoreError
from polymodal.index.base import MultiVectorHit, PayloadFilter, as_matrix, check_add_args, check_filter

T = TypeVar("T")
ID_KEY = "_polymodal_id"
TOKENS, POOLED = "tokens", "pooled"
_ID_NAMESPACE = uuid.UUID("5b0c7e1e-3f53-4c55-9d0a-6f1f3a2b9c11")


def qdrant_point_id(point_id: str) -> str:
    """The Qdrant id (a UUID string) of a polymodal point id."""
    try:
        return str(uuid.UUID(point_id))
    except ValueError:
        return str(uuid.uuid5(_ID_NAMESPACE, point_id))


class QdrantMultiVectorIndex:
    """:class:`~polymodal.index.base.MultiVectorIndex` on a Qdrant collection (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        collection: str,
        *,
        dim: int,
        embedder_id: str,
        create: bool = True,
        first_stage: str = "pooled",
        prefetch: int = 200,
        quantization: str | None = None,
        payload_indexes: Mapping[str, str] | None = None,
        on_disk: bool = False,
    ) -> None:
        from qdrant_client import models

        if first_stage not in ("pooled", "none"):
            raise IndexError_(f"first_stage must be 'pooled' or 'none', got {first_stage!r}")
        if quantization not in (None, "binary"):
            raise IndexError_(f"quantization must be None or 'binary', got {quantization!r}")
        self._models = models
        self.client = client
        self.collection = collection
        self._dim = dim
        self._embedder_id = embedder_id
        self.first_stage = first_stage
        self.prefetch = prefetch
        exists = self._call(lambda: client.collection_exists(collection))
        if not exists:
            if not create:
                raise IndexError_(f"qdrant collection {collection!r} does not exist (create=False)")
            quant = (
                models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
                if quantization == "binary"
                else None
            )
            vectors = {
                TOKENS: models.VectorParams(
                    size=dim,
                    distance=models.Distance.DOT,
                    multivector_config=models.MultiVectorConfig(
                        comparator=models.MultiVectorComparator.MAX_SIM
                    ),
                    quantization_config=quant,
                    on_disk=on_disk,
                ),
                POOLED: models.VectorParams(size=dim, distance=models.Distance.DOT),
            }
            self._call(
                lambda: client.create_collection(
                    collection,
                    vectors_config=vectors,
                    metadata={"embedder_id": embedder_id, "dim": dim},
                )
            )
            schema = {
                "keyword": models.PayloadSchemaType.KEYWORD,
                "integer": models.PayloadSchemaType.INTEGER,
            }
            for key, kind in {ID_KEY: "keyword", **dict(payload_indexes or {})}.items():
                if kind not in schema:
                    raise IndexError_(f"payload index {key!r}: kind must be 'keyword' or 'integer'")
                with warnings.catch_warnings():  # local mode ignores payload indexes and says so
                    warnings.simplefilter("ignore", UserWarning)
                    field_schema = schema[kind]
                    self._call(
                        lambda k=key, s=field_schema: client.create_payload_index(collection, k, s)  # type: ignore[misc]
                    )
        self._check_identity()

    @classmethod
    def from_url(cls, spec: str, **kwargs: Any) -> QdrantMultiVectorIndex:
        """Open from ``"<url>/<collection>"``, ``":memory:/<collection>"`` or
        ``"path=<dir>/<collection>"``."""
        from qdrant_client import QdrantClient

        location, _, collection = spec.rpartition("/")
        if not location or not collection:
            raise IndexError_(f"qdrant index spec {spec!r}: expected <url>/<collection>")
        if location == ":memory:":
            client = QdrantClient(":memory:")
        elif location.startswith("path="):
            client = QdrantClient(path=location[len("path=") :])
        else:
            client = QdrantClient(url=location)
        return cls(client, collection, **kwargs)

    # -- identity -

    @property
    def dim(self) -> int:
        """Vector dimension of the collection."""
        return self._dim

    @property
    def embedder_id(self) -> str:
        """Embedder that produced the vectors."""
        return self._embedder_id

    def _check_identity(self) -> None:
        info = self._call(lambda: self.client.get_collection(self.collection))
        metadata = getattr(info.config, "metadata", None) or {}
        vectors = info.config.params.vectors
        if not isinstance(vectors, dict) or TOKENS not in vectors:
            raise IndexError_(f"qdrant collection {self.collection!r} was not created by polymodal")
        stored_dim = int(vectors[TOKENS].size)
        if stored_dim != self._dim:
            raise IndexError_(
                f"qdrant collection {self.collection!r} holds {stored_dim}-d vectors, not {self._dim}-d"
            )
        stored = metadata.get("embedder_id")
        if stored is not None and stored != self._embedder_id:
            raise IndexError_(
                f"qdrant collection {self.collection!r} was built with embedder {stored!r},"
                f" not {self._embedder_id!r}"
            )

    def _call(self, fn: Callable[[], T]) -> T:
        """Run a client call, translating qdrant-client / transport exceptions into :class:`StoreError`."""
        try:
            return fn()
        except IndexError_:
            raise
        except Exception as exc:  # the one translation point for this backend
            raise StoreError(f"qdrant collection {self.collection!r}: {type(exc).__name__}: {exc}") from exc

    # -- writes -

    def add(
        self,
        ids: Sequence[str],
        vectors: Sequence[npt.ArrayLike],
        payloads: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Upsert points (acknowledged by the server before returning)."""
        plain = check_add_args(ids, vectors, payloads)
        points = []
        for pid, raw, payload in zip(ids, vectors, plain, strict=True):
            if ID_KEY in payload:
                raise IndexError_(f"add {pid!r}: payload key {ID_KEY!r} is reserved")
            matrix = as_matrix(raw, self._dim, what=f"add {pid!r}")
            points.append(
                self._models.PointStruct(
                    id=qdrant_point_id(pid),
                    vector={TOKENS: matrix.tolist(), POOLED: matrix.mean(axis=0).tolist()},
                    payload={**payload, ID_KEY: pid},
                )
            )
        if points:
            self._call(lambda: self.client.upsert(self.collection, points=points, wait=True))

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

    # -- reads -

    def __len__(self) -> int:
        return int(self._call(lambda: self.client.count(self.collection, exact=True)).count)

    def ids(self) -> set[str]:
        """Every point id (scrolls the collection)."""
        found: set[str] = set()
        offset = None
        while True:
            page, offset = self._call(
                lambda o=offset: self.client.scroll(  # type: ignore[misc]
                    self.collection, limit=1024, offset=o, with_payload=[ID_KEY], with_vectors=False
                )
            )
            found.update(str(point.payload[ID_KEY]) for point in page)
            if offset is None:
                return found

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
    ) -> list[MultiVectorHit]:
        """The ``k`` best points by MaxSim (after a pooled-vector prefetch when ``first_stage="pooled"``)."""
        q = as_matrix(query, self._dim, what="query")
        flt = self._filter(filter)
        if k <= 0:
            return []
        models = self._models
        prefetch = None
        if self.first_stage == "pooled":
            prefetch = models.Prefetch(
                query=q.mean(axis=0).tolist(), using=POOLED, limit=max(self.prefetch, k), filter=flt
            )
        response = self._call(
            lambda: self.client.query_points(
                self.collection,
                query=q.tolist(),
                using=TOKENS,
                prefetch=prefetch,
                query_filter=flt,
                limit=k,
                with_payload=True,
            )
        )
        hits = []
        for point in response.points:
            payload = dict(point.payload or {})
            pid = str(payload.pop(ID_KEY))
            hits.append(MultiVectorHit(pid, float(point.score), payload))
        return hits

    def search_many(
        self, queries: Sequence[npt.ArrayLike], k: int = 10, *, filter: PayloadFilter | None = None
    ) -> list[list[MultiVectorHit]]:
        """:meth:`search` for each query."""
        return [self.search(np.asarray(query, dtype=np.float32), k, filter=filter) for query in queries]

    def __repr__(self) -> str:
        return f"QdrantMultiVectorIndex({self.collection!r}, dim={self._dim})"


__all__ = ["QdrantMultiVectorIndex", "qdrant_point_id"]
