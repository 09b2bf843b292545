"""The embedded dense engine: an int8 HNSW graph (usearch) with exact float32 rescoring, no server.

Layout of an index directory::

    dense.json       identity (embedder id, dim, metric) and engine settings
    points.sqlite    id <-> integer key, payloads (JSON); the source of truth for which points are live
    vectors.f32      normalised float32 originals, row ``key``; memory-mapped for rescoring, never read whole
    graph.usearch    the HNSW graph over int8-quantized vectors (a cache: rebuilt from vectors.f32 if missing)
    LOCK             one writer at a time (``fcntl.flock``)

Search asks the graph for ``max(k * rescore, rescore_min)`` candidates, then rescores them with the exact
float32 cosine and returns the best ``k``. int8 keeps the graph at a quarter of the float32 bytes (peak RSS
of a 1M x 768 index stays far below twice the raw vectors, see docs/benchmarks/dense.md) while rescoring
recovers the recall quantization loses. A selective filter (at most ``exact_filter_limit`` matching points) is
answered by an exact scan of the matching rows; a broad one by over-fetching graph candidates and filtering
them. An index smaller than ``exact_below`` points is scanned exactly.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from polymodal.errors import IndexError_, StoreError
from polymodal.index.base import FloatArray, PayloadFilter, as_matrix, check_add_args, check_filter
from polymodal.index.dense._store import connect, exact_top, filter_sql, rescore, write_atomic
from polymodal.index.dense.base import DenseHit, DenseIndexInfo, normalize_rows
from polymodal.index.embedded._lock import WriterLock

FORMAT = 1
META, POINTS, VECTORS, GRAPH, LOCK = "dense.json", "points.sqlite", "vectors.f32", "graph.usearch", "LOCK"
#: flush() also saves the graph once this many changes (or a quarter of the index) are unsaved.
GRAPH_SAVE_EVERY = 50_000
I64 = npt.NDArray[np.int64]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EngineSettings:
    """Tuning of the embedded engine (stored in ``dense.json``; search-time values may be changed on open).

    Attributes:
        quantization: graph vector type: ``"i8"`` (default), ``"f16"`` or ``"f32"``.
        connectivity: HNSW links per node (``M``).
        expansion_add: candidate list size while building (``efConstruction``).
        expansion_search: candidate list size while searching (``efSearch``); raised to the candidate count.
        rescore: graph candidates per requested hit, rescored with exact float32 cosine.
        rescore_min: least number of candidates rescored.
        exact_filter_limit: filters matching at most this many points are answered by an exact scan.
        exact_below: an index with fewer live points is searched by an exact scan (as fast as the graph at
            that size, and exact).
        threads: threads for bulk adds (0: all cores).
    """

    quantization: str = "i8"
    connectivity: int = 16
    expansion_add: int = 64
    expansion_search: int = 64
    rescore: int = 4
    rescore_min: int = 40
    exact_filter_limit: int = 20_000
    exact_below: int = 4096
    threads: int = 0

    def __post_init__(self) -> None:
        if self.quantization not in ("i8", "f16", "f32"):
            raise IndexError_(f"quantization must be 'i8', 'f16' or 'f32', got {self.quantization!r}")
        for name in ("connectivity", "expansion_add", "expansion_search", "rescore", "rescore_min"):
            if getattr(self, name) < 1:
                raise IndexError_(f"{name} must be >= 1")


class EmbeddedDenseIndex:
    """:class:`~polymodal.index.dense.base.DenseIndex` in a local directory (see the module docstring).

    Args:
        path: the index directory (created when ``create`` and absent).
        dim, embedder_id: what the index holds; must match an existing index.
        create: create the index when absent (else raise IndexError_).
        lock_timeout: seconds to wait for another writer.
        progress: called with (done, total) while a missing or stale graph is rebuilt on open.
        **settings: :class:`EngineSettings` fields for a new index; for an existing one only the search-time
            fields (``expansion_search``, ``rescore``, ``rescore_min``, ``exact_filter_limit``, ``threads``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        dim: int,
        embedder_id: str,
        create: bool = True,
        lock_timeout: float = 0.0,
        read_only: bool = False,
        progress: Progress | None = None,
        **settings: Any,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._closed = False
        self._live_keys: I64 | None = None
        self._unsaved = 0  # graph changes not yet saved to graph.usearch
        exists = (self.path / META).is_file()
        if not exists and not create:
            raise IndexError_(f"{self.path}: no dense index here (create=False)")
        if read_only and not exists:
            raise IndexError_(f"{self.path}: no dense index here (read_only=True)")
        if exists:  # a wrong model is the clearer error, even while another process writes
            read_embedded_info(self.path).check(embedder_id, dim, where=f"index {self.path}")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = WriterLock(self.path / LOCK)
        if not read_only:
            self._lock.acquire(lock_timeout)
        try:
            self.info, self.settings = self._open_meta(exists, dim, embedder_id, settings)
            self._db = connect(self.path / POINTS)
            self._vectors_file = open(self.path / VECTORS, "rb" if read_only else "ab")  # noqa: SIM115
            self._rows_cache: np.memmap[Any, np.dtype[np.float32]] | None = None
            self._graph = self._load_graph(progress)
        except BaseException:
            self._lock.release()
            raise

    # -- identity ------------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector dimension of the index."""
        return self.info.dim

    @property
    def embedder_id(self) -> str:
        """Embedder that produced the vectors."""
        return self.info.embedder_id

    def _open_meta(
        self, exists: bool, dim: int, embedder_id: str, settings: Mapping[str, Any]
    ) -> tuple[DenseIndexInfo, EngineSettings]:
        if not exists:
            info = DenseIndexInfo(embedder_id, dim)
            engine = EngineSettings(**settings)
            meta = {"format": FORMAT, "engine": "usearch-hnsw", **asdict(info), "settings": asdict(engine)}
            write_atomic(self.path / META, json.dumps(meta, indent=2).encode())
            return info, engine
        try:
            meta = json.loads((self.path / META).read_text(encoding="utf-8"))
            info = DenseIndexInfo(str(meta["embedder_id"]), int(meta["dim"]), str(meta["metric"]))
            stored = EngineSettings(**meta["settings"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{self.path / META}: unreadable index metadata: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise StoreError(f"{self.path}: dense index format {meta.get('format')!r}, expected {FORMAT}")
        info.check(embedder_id, dim, where=f"index {self.path}")
        build_time = {"quantization", "connectivity", "expansion_add"}
        if build_time & set(settings):
            changed = {k: v for k, v in settings.items() if k in build_time and getattr(stored, k) != v}
            if changed:
                raise IndexError_(
                    f"{self.path}: {sorted(changed)} are fixed when the index is built (reindex it)"
                )
        return info, EngineSettings(**{**asdict(stored), **settings})

    # -- graph ---------------------------------------------------------------------------------------------

    def _new_graph(self) -> Any:
        from usearch.index import Index

        s = self.settings
        return Index(
            ndim=self.dim,
            metric="cos",
            dtype=s.quantization,
            connectivity=s.connectivity,
            expansion_add=s.expansion_add,
            expansion_search=s.expansion_search,
        )

    def _load_graph(self, progress: Progress | None) -> Any:
        """Load the graph and reconcile it with the points table (the truth) after a crash."""
        graph = self._new_graph()
        graph_path = self.path / GRAPH
        if graph_path.is_file():
            try:
                graph.load(str(graph_path))
            except (RuntimeError, ValueError, OSError):
                graph = self._new_graph()  # a torn or foreign file: rebuild from the originals
        graph.expansion_search = self.settings.expansion_search
        live = self._keys()
        torn = live[live >= len(self._rows())]
        if len(torn) and not self.read_only:  # committed points whose vectors never reached the disk
            with self._write() as db:
                db.executemany("DELETE FROM points WHERE key = ?", [(int(k),) for k in torn])
        live = live[live < len(self._rows())]
        in_graph = np.asarray(graph.keys, dtype=np.int64) if len(graph) else np.zeros(0, np.int64)
        stale = np.setdiff1d(in_graph, live, assume_unique=True)
        if len(stale):
            graph.remove(stale)
            self._unsaved += len(stale)
        missing = np.setdiff1d(live, in_graph, assume_unique=True)
        self._graph = graph
        if len(missing):
            for start in range(0, len(missing), 50_000):
                chunk = missing[start : start + 50_000]
                graph.add(chunk, np.ascontiguousarray(self._rows()[chunk]), threads=self.settings.threads)
                self._unsaved += len(chunk)
                if progress is not None:
                    progress(min(start + len(chunk), len(missing)), len(missing))
        return graph

    # -- storage helpers -----------------------------------------------------------------------------------

    def _keys(self) -> I64:
        """Live keys, sorted (cached until the next write)."""
        if self._live_keys is None:
            rows = self._db.execute("SELECT key FROM points ORDER BY key").fetchall()
            self._live_keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return self._live_keys

    def _rows(self) -> FloatArray:
        """The float32 originals, memory-mapped (re-mapped when the file has grown)."""
        count = os.path.getsize(self.path / VECTORS) // (4 * self.dim)
        if count == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._rows_cache is None or self._rows_cache.shape[0] != count:
            self._rows_cache = np.memmap(
                self.path / VECTORS, dtype=np.float32, mode="r", shape=(count, self.dim)
            )
        return self._rows_cache

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise IndexError_(f"{self.path}: index is closed")
        if self.read_only:
            raise IndexError_(f"{self.path}: index opened read-only")
        self._live_keys = None
        try:
            with self._db:
                yield self._db
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path / POINTS}: {exc}") from exc

    def _next_key(self, db: sqlite3.Connection, count: int) -> int:
        row = db.execute("SELECT value FROM counters WHERE name = 'next_key'").fetchone()
        first = int(row[0]) if row else 0
        db.execute("INSERT OR REPLACE INTO counters VALUES ('next_key', ?)", (first + count,))
        return first

    # -- writes --------------------------------------------------------------------------------------------

    def add(
        self,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        payloads: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Upsert points; row ``i`` of ``vectors`` belongs to ``ids[i]`` (normalised on the way in)."""
        matrix = as_matrix(vectors, self.dim, what="add")
        plain = check_add_args(ids, cast(Sequence[Any], matrix), payloads)
        matrix = normalize_rows(matrix, what="add")
        try:
            texts = [json.dumps(p, ensure_ascii=False, allow_nan=False) for p in plain]
        except (TypeError, ValueError) as exc:
            raise IndexError_(f"add: payloads must be JSON-serialisable: {exc}") from exc
        with self._write() as db:
            replaced = self._keys_of(db, ids)
            if replaced:
                db.executemany("DELETE FROM points WHERE key = ?", [(k,) for k in replaced.values()])
            first = self._next_key(db, len(ids))
            keys = np.arange(first, first + len(ids), dtype=np.int64)
            self._append_rows(first, matrix)
            db.executemany(
                "INSERT INTO points (key, id, payload) VALUES (?, ?, ?)",
                zip(keys.tolist(), ids, texts, strict=True),
            )
        if replaced:
            self._graph.remove(np.fromiter(replaced.values(), dtype=np.int64))
        self._graph.add(keys, matrix, threads=self.settings.threads)
        self._unsaved += len(keys)

    def _append_rows(self, first_key: int, matrix: FloatArray) -> None:
        offset = first_key * 4 * self.dim
        handle = self._vectors_file
        handle.flush()
        if handle.tell() != offset:  # a crash left rows past the last committed key: overwrite them
            os.truncate(self.path / VECTORS, offset)
            handle.seek(offset)
        handle.write(matrix.tobytes())
        handle.flush()

    def _keys_of(self, db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for key, pid in db.execute(f"SELECT key, id FROM points WHERE id IN ({marks})", chunk):
                found[str(pid)] = int(key)
        return found

    def delete(self, ids: Sequence[str]) -> None:
        """Remove points by id; unknown ids are ignored."""
        if isinstance(ids, str):
            raise IndexError_("ids must be a sequence of strings, not one string")
        with self._write() as db:
            keys = list(self._keys_of(db, ids).values())
            db.executemany("DELETE FROM points WHERE key = ?", [(k,) for k in keys])
        if keys:
            self._graph.remove(np.asarray(keys, dtype=np.int64))
            self._unsaved += len(keys)

    def flush(self) -> None:
        """Make every write durable: originals fsync-ed (points are committed by each write).

        The graph is a cache of the originals: it is saved on :meth:`close`, or here once many writes are
        unsaved, and a graph older than the points table is brought up to date on open. Saving it on every
        flush would make ingesting in small batches quadratic.
        """
        if self._closed or self.read_only:
            return
        try:
            self._vectors_file.flush()
            os.fsync(self._vectors_file.fileno())
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot persist the index: {exc}") from exc
        if self._unsaved > max(GRAPH_SAVE_EVERY, len(self._graph) // 4):
            self._save_graph()

    def _save_graph(self) -> None:
        try:
            tmp = self.path / (GRAPH + ".tmp")
            self._graph.save(str(tmp))
            os.replace(tmp, self.path / GRAPH)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot save the graph: {exc}") from exc
        self._unsaved = 0

    def close(self) -> None:
        """Flush and release the files and the writer lock. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
            if self._unsaved and not self.read_only:
                self._save_graph()
        finally:
            self._closed = True
            self._vectors_file.close()
            self._rows_cache = None
            self._db.close()
            self._lock.release()

    def __enter__(self) -> EmbeddedDenseIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reads ---------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM points").fetchone()[0])

    def ids(self) -> set[str]:
        """Ids of all live points."""
        return {str(r[0]) for r in self._db.execute("SELECT id FROM points")}

    def vectors(self, ids: Sequence[str]) -> tuple[list[str], FloatArray]:
        """The stored normalised vectors of those ``ids`` that exist, in the order given."""
        keys = self._keys_of(self._db, ids)
        found = [i for i in ids if i in keys]
        rows = self._rows()
        if not found:
            return [], np.zeros((0, self.dim), dtype=np.float32)
        return found, np.asarray(rows[np.asarray([keys[i] for i in found])], dtype=np.float32)

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The payloads of those ``ids`` that exist."""
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for pid, text in self._db.execute(f"SELECT id, payload FROM points WHERE id IN ({marks})", chunk):
                out[str(pid)] = json.loads(text)
        return out

    def search(
        self, query: npt.ArrayLike, k: int = 10, *, filter: PayloadFilter | None = None
    ) -> list[DenseHit]:
        """The ``k`` nearest points by cosine similarity, best first, restricted by ``filter``."""
        q = normalize_rows(as_matrix(query, self.dim, what="query"), what="query")
        if q.shape[0] != 1:
            raise IndexError_(f"query: expected one vector, got {q.shape[0]}")
        conditions = check_filter(filter)
        size = len(self._graph)
        if k <= 0 or size == 0:
            return []
        if conditions:
            allowed = self._matching_keys(conditions)
            if len(allowed) <= max(self.settings.exact_filter_limit, self.settings.exact_below):
                return self._hits(*exact_top(self._rows(), allowed, q[0], k))
            keys, scores = self._filtered_graph_search(q[0], k, allowed, size)
            return self._hits(keys, scores)
        if size < self.settings.exact_below:
            return self._hits(*exact_top(self._rows(), self._keys(), q[0], k))
        wanted = min(size, max(k * self.settings.rescore, self.settings.rescore_min))
        candidates = self._graph_candidates(q[0], wanted)
        return self._hits(*rescore(self._rows(), candidates, q[0], k))

    def _graph_candidates(self, q: FloatArray, count: int) -> I64:
        self._graph.expansion_search = max(self.settings.expansion_search, count)
        matches = self._graph.search(q, count)
        return np.asarray(matches.keys, dtype=np.int64)

    def _filtered_graph_search(
        self, q: FloatArray, k: int, allowed: I64, size: int
    ) -> tuple[I64, FloatArray]:
        selectivity = max(len(allowed) / size, 1e-6)
        wanted = int(min(size, max(k * self.settings.rescore, self.settings.rescore_min) / selectivity * 2))
        while True:
            candidates = self._graph_candidates(q, wanted)
            kept = candidates[np.isin(candidates, allowed, assume_unique=True)]
            if len(kept) >= k or wanted >= size:
                return rescore(self._rows(), kept, q, k)
            if wanted * 4 > size:  # the graph cannot give enough: scan the matching rows exactly
                return exact_top(self._rows(), allowed, q, k)
            wanted *= 4

    def _matching_keys(self, conditions: Mapping[str, tuple[str, Any]]) -> I64:
        query = filter_sql(conditions)
        if query is None:
            return np.zeros(0, dtype=np.int64)
        rows = self._db.execute(*query).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def _hits(self, keys: I64, scores: FloatArray) -> list[DenseHit]:
        if len(keys) == 0:
            return []
        marks = ",".join("?" * len(keys))
        found = {
            int(key): (str(pid), json.loads(text))
            for key, pid, text in self._db.execute(
                f"SELECT key, id, payload FROM points WHERE key IN ({marks})", keys.tolist()
            )
        }
        return [
            DenseHit(found[int(k)][0], float(s), found[int(k)][1])
            for k, s in zip(keys, scores, strict=True)
            if int(k) in found
        ]

    def __repr__(self) -> str:
        return f"EmbeddedDenseIndex({str(self.path)!r}, dim={self.dim}, points={len(self)})"


def read_embedded_info(path: Path) -> DenseIndexInfo:
    """The identity recorded in an embedded index directory (IndexError_ when there is none)."""
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
        return DenseIndexInfo(str(meta["embedder_id"]), int(meta["dim"]), str(meta.get("metric", "cosine")))
    except FileNotFoundError:
        raise IndexError_(f"{path}: no dense index here") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path / META}: unreadable index metadata: {exc}") from exc


__all__ = ["EmbeddedDenseIndex", "EngineSettings", "read_embedded_info"]
