"""The embedded dense engine: a compressed candidate structure with exact float32 rescoring, no server.

Layout of an index directory::

    dense.json       identity (embedder id, dim, metric) and engine settings
    points.sqlite    id <-> integer key, payloads (JSON); the source of truth for which points are live
    vectors.f32      normalised float32 originals, row ``key``; memory-mapped for rescoring, never read whole
    cells.npz        engine "ivf-pq" (default): faiss inverted file over 4-bit PQ codes (see _ann.py)
    graph.usearch    engine "hnsw": usearch HNSW graph over int8 vectors
    LOCK             one writer at a time (``fcntl.flock``)

The candidate structure is a cache of the originals: rebuilt from vectors.f32 when missing or torn, and (the
inverted file) retrained as the index outgrows what it was trained on. Search asks it for
``max(k * rescore, rescore_min)`` candidates, rescores them with the exact float32 cosine and returns the best
``k``; compressed codes keep memory far below the raw vectors (docs/benchmarks/dense.md) while rescoring
recovers the recall compression loses. A selective filter (at most ``exact_filter_limit`` matching points) is
answered by an exact scan of the matching rows, a broad one inside the structure. An index smaller than
``exact_below`` points is scanned exactly.
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
from polymodal.index.dense._ann import CandidateStructure, HnswCandidates, IvfPqCandidates
from polymodal.index.dense._store import connect, exact_top, filter_sql, rescore, write_atomic
from polymodal.index.dense.base import DenseHit, DenseIndexInfo, normalize_rows
from polymodal.index.embedded._lock import WriterLock

FORMAT = 1
META, POINTS, VECTORS, LOCK = "dense.json", "points.sqlite", "vectors.f32", "LOCK"
#: The candidate structure's file, per engine.
STRUCTURE_FILES = {"ivf-pq": "cells.npz", "hnsw": "graph.usearch"}
#: flush() also saves the candidate structure once this many changes (or a quarter of the index) are unsaved.
SAVE_EVERY = 50_000
#: Rows inserted into the candidate structure per step (bounds the float32 copy made from the memory map).
ADD_CHUNK = 50_000
I64 = npt.NDArray[np.int64]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EngineSettings:
    """Tuning of the embedded engine (stored in ``dense.json``; search-time values may be changed on open).

    Attributes:
        engine: candidate structure: ``"ivf-pq"`` (default: faiss inverted file over 4-bit product codes, one
            bit per dimension, trained once the index holds ``exact_below`` points) or ``"hnsw"`` (usearch
            graph).
        nprobe: ivf-pq cells scanned per query.
        quantization: hnsw vector type: ``"i8"`` (default), ``"f16"`` or ``"f32"``.
        connectivity: HNSW links per node (``M``).
        expansion_add: HNSW candidate list size while building (``efConstruction``).
        expansion_search: HNSW candidate list size while searching (``efSearch``); raised to the candidate
            count.
        rescore: candidates per requested hit, rescored with exact float32 cosine.
        rescore_min: least number of candidates rescored.
        exact_filter_limit: filters matching at most this many points are answered by an exact scan.
        exact_below: an index with fewer live points is searched by an exact scan (as fast as the graph at
            that size, and exact).
        threads: threads for bulk adds to the graph (0: all cores).
    """

    engine: str = "ivf-pq"
    nprobe: int = 32
    quantization: str = "i8"
    connectivity: int = 16
    expansion_add: int = 64
    expansion_search: int = 64
    rescore: int = 4
    rescore_min: int = 200
    exact_filter_limit: int = 20_000
    exact_below: int = 4096
    threads: int = 0

    def __post_init__(self) -> None:
        if self.engine not in STRUCTURE_FILES:
            raise IndexError_(f"engine must be one of {sorted(STRUCTURE_FILES)}, got {self.engine!r}")
        if self.quantization not in ("i8", "f16", "f32"):
            raise IndexError_(f"quantization must be 'i8', 'f16' or 'f32', got {self.quantization!r}")
        for name in ("nprobe", "connectivity", "expansion_add", "expansion_search", "rescore", "rescore_min"):
            if getattr(self, name) < 1:
                raise IndexError_(f"{name} must be >= 1")


class EmbeddedDenseIndex:
    """:class:`~polymodal.index.dense.base.DenseIndex` in a local directory (see the module docstring).

    Args:
        path: the index directory (created when ``create`` and absent).
        dim, embedder_id: what the index holds; must match an existing index.
        create: create the index when absent (else raise IndexError_).
        lock_timeout: seconds to wait for another writer.
        progress: called with (done, total) while a missing or stale candidate structure is rebuilt on open.
        **settings: :class:`EngineSettings` fields for a new index; for an existing one only the search-time
            fields (``nprobe``, ``expansion_search``, ``rescore``, ``rescore_min``, ``exact_filter_limit``,
            ``threads``).
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
        self._unsaved = 0  # changes not yet saved to the candidate structure's file
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
            self._ann_path = self.path / STRUCTURE_FILES[self.settings.engine]
            self._ann = self._load_ann(progress)
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
            meta = {"format": FORMAT, "engine": engine.engine, **asdict(info), "settings": asdict(engine)}
            write_atomic(self.path / META, json.dumps(meta, indent=2).encode())
            return info, engine
        try:
            meta = json.loads((self.path / META).read_text(encoding="utf-8"))
            info = DenseIndexInfo(str(meta["embedder_id"]), int(meta["dim"]), str(meta["metric"]))
            stored_settings = dict(meta["settings"])
            if meta.get("engine") == "usearch-hnsw":  # written before the engine became a setting
                stored_settings.setdefault("engine", "hnsw")
            stored = EngineSettings(**stored_settings)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{self.path / META}: unreadable index metadata: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise StoreError(f"{self.path}: dense index format {meta.get('format')!r}, expected {FORMAT}")
        info.check(embedder_id, dim, where=f"index {self.path}")
        build_time = {"engine", "quantization", "connectivity", "expansion_add"}
        if build_time & set(settings):
            changed = {k: v for k, v in settings.items() if k in build_time and getattr(stored, k) != v}
            if changed:
                raise IndexError_(
                    f"{self.path}: {sorted(changed)} are fixed when the index is built (reindex it)"
                )
        return info, EngineSettings(**{**asdict(stored), **settings})

    # -- candidate structure -------------------------------------------------------------------------------

    def _new_ann(self) -> CandidateStructure:
        s = self.settings
        if s.engine == "hnsw":
            return HnswCandidates(
                self.dim,
                quantization=s.quantization,
                connectivity=s.connectivity,
                expansion_add=s.expansion_add,
                expansion_search=s.expansion_search,
                threads=s.threads,
            )
        return IvfPqCandidates(self.dim, nprobe=s.nprobe, min_train=s.exact_below)

    def _read_ann(self) -> CandidateStructure:
        """The saved structure, or a new empty one when the file is missing, torn or foreign."""
        ann = self._new_ann()
        if self._ann_path.is_file():
            try:
                ann.load(self._ann_path)
            except IndexError_:
                ann = self._new_ann()
        return ann

    def _load_ann(self, progress: Progress | None) -> CandidateStructure:
        """Load the structure and reconcile it with the points table (the truth) after a crash."""
        live = self._keys()
        torn = live[live >= len(self._rows())]
        if len(torn) and not self.read_only:  # committed points whose vectors never reached the disk
            with self._write() as db:
                db.executemany("DELETE FROM points WHERE key = ?", [(int(k),) for k in torn])
        live = live[live < len(self._rows())]
        ann = self._read_ann()
        if ann.wants_rebuild(len(live)):
            return self._rebuild_ann(live, progress)
        held = ann.keys()
        stale = np.setdiff1d(held, live, assume_unique=True)
        if len(stale):
            ann.remove(stale)
            self._unsaved += len(stale)
        missing = np.setdiff1d(live, held, assume_unique=True)
        if len(missing) and ann.ready:
            self._add_rows(ann, missing, progress)
        return ann

    def _rebuild_ann(self, live: I64, progress: Progress | None = None) -> CandidateStructure:
        """A new structure over every live point (training the inverted file on them first)."""
        s = self.settings
        ann: CandidateStructure = (
            self._new_ann()
            if s.engine == "hnsw"
            else IvfPqCandidates.trained(self._rows(), live, nprobe=s.nprobe, min_train=s.exact_below)
        )
        self._add_rows(ann, live, progress)
        self._unsaved += 1  # an empty rebuild must still replace the saved file
        return ann

    def _add_rows(self, ann: CandidateStructure, keys: I64, progress: Progress | None) -> None:
        """Insert the originals of ``keys`` in chunks, reporting ``progress(done, total)``."""
        for start in range(0, len(keys), ADD_CHUNK):
            chunk = keys[start : start + ADD_CHUNK]
            ann.add(chunk, np.ascontiguousarray(self._rows()[chunk]))
            self._unsaved += len(chunk)
            if progress is not None:
                progress(start + len(chunk), len(keys))

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
            self._ann.remove(np.fromiter(replaced.values(), dtype=np.int64))
        if self._ann.ready:
            self._ann.add(keys, matrix)
        self._unsaved += len(keys)
        if self._ann.wants_rebuild(self._live_count()):
            self._ann = self._rebuild_ann(self._keys())

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
            self._ann.remove(np.asarray(keys, dtype=np.int64))
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
        if self._unsaved > max(SAVE_EVERY, len(self._ann) // 4):
            self._save_ann()

    def _save_ann(self) -> None:
        if not self._ann.ready:  # nothing to save yet: the originals are searched exactly
            self._unsaved = 0
            return
        try:
            tmp = self._ann_path.with_name(self._ann_path.name + ".tmp")
            self._ann.save(tmp)
            os.replace(tmp, self._ann_path)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot save the candidate structure: {exc}") from exc
        self._unsaved = 0

    def close(self) -> None:
        """Flush and release the files and the writer lock. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
            if self._unsaved and not self.read_only:
                self._save_ann()
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

    def _live_count(self) -> int:
        """Live points: the structure holds them all once it is ready; before that, count the table."""
        return len(self._ann) if self._ann.ready else len(self)

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
        size = self._live_count()
        if k <= 0 or size == 0:
            return []
        wanted = min(size, max(k * self.settings.rescore, self.settings.rescore_min))
        allowed = None
        if conditions:
            allowed = self._matching_keys(conditions)
            if len(allowed) <= max(self.settings.exact_filter_limit, self.settings.exact_below):
                return self._hits(*exact_top(self._rows(), allowed, q[0], k))
        elif size < self.settings.exact_below or not self._ann.ready:
            return self._hits(*exact_top(self._rows(), self._keys(), q[0], k))
        candidates = self._ann.candidates(q[0], wanted, allowed) if self._ann.ready else None
        if candidates is None or (allowed is not None and len(candidates) < k):
            return self._hits(*exact_top(self._rows(), self._keys() if allowed is None else allowed, q[0], k))
        return self._hits(*rescore(self._rows(), candidates, q[0], k))

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
