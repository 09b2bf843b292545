"""The embedded multi-vector engine: memory-mapped, compressed, no server. See docs/index.md."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from polymodal.errors import IndexError_, StoreError
from polymodal.index.base import (
    MultiVectorHit,
    PayloadFilter,
    as_matrix,
    check_add_args,
    check_filter,
    payload_matches,
)
from polymodal.index.embedded._lock import WriterLock
from polymodal.index.embedded.codec import Codebook, default_centroid_count
from polymodal.index.embedded.search import StageSizes, filter_mask, probe_centroids, staged_scores
from polymodal.index.embedded.segment import Segment, build_pq_arrays, exact_maxsim, ranges_index
from polymodal.index.embedded.storage import (
    META,
    read_meta,
    remove_unreferenced,
    write_file_atomic,
    write_meta,
    write_segment_dir,
)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
FORMAT = 1
_TRAIN_SAMPLE = 500_000


class EmbeddedMultiVectorIndex:
    """A late-interaction index in a directory: segments of compressed token vectors, searched in stages.

    Until the index holds ``min_train_tokens`` tokens, points are stored as float16 and searched exactly. At
    that point a codebook is trained on them (``n_centroids`` centroids, default ~``4 * sqrt(tokens)``) and
    every token is stored as a centroid id plus ``nbits`` bits per dimension of residual. Search then probes
    the ``nprobe`` nearest centroids of each query token, keeps ``candidates`` points by probe scores, scores
    them with all their centroids, and re-ranks the best ``rerank`` by MaxSim on the decoded vectors. With
    ``store_vectors=True`` float16 originals are kept too and the best ``exact_rerank`` are scored exactly.

    One process writes at a time (the writer lock is taken at the first write; ``lock_timeout`` seconds are
    waited for it); any number of processes read the last committed state, refreshed at each search.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        dim: int,
        embedder_id: str,
        create: bool = True,
        nbits: int = 2,
        n_centroids: int | None = None,
        min_train_tokens: int = 1 << 18,
        lock_timeout: float = 0.0,
        max_segments: int = 8,
        auto_flush_tokens: int = 1 << 21,
        nprobe: int = 8,
        candidates: int = 256,
        rerank: int = 64,
        store_vectors: bool = False,
        exact_rerank: int = 32,
    ) -> None:
        if dim <= 0:
            raise IndexError_(f"dim must be positive, got {dim}")
        self.path = Path(path)
        self._dim = dim
        self._embedder_id = embedder_id
        self.lock_timeout = lock_timeout
        self.max_segments = max(2, max_segments)
        self.auto_flush_tokens = auto_flush_tokens
        self.min_train_tokens = min_train_tokens
        self.n_centroids = n_centroids
        self.nprobe = nprobe
        self._stages = StageSizes(candidates=candidates, rerank=rerank, exact_rerank=exact_rerank)
        self._lock = WriterLock(self.path / "LOCK")
        self._closed = False
        self._pending: dict[str, tuple[F32, dict[str, Any]]] = {}
        self._tombstones: dict[str, set[int]] = {}
        self._dirty = False
        meta = read_meta(self.path) if self.path.is_dir() else None
        if meta is None:
            if not create:
                raise IndexError_(f"{self.path}: no index here (create=False)")
            if self.path.exists() and not self.path.is_dir():
                raise IndexError_(f"{self.path}: exists and is not a directory")
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock.acquire(lock_timeout)
            meta = read_meta(self.path)
            if meta is None:
                meta = {
                    "format": FORMAT,
                    "dim": dim,
                    "embedder_id": embedder_id,
                    "nbits": nbits,
                    "store_vectors": store_vectors,
                    "codebook": None,
                    "segments": [],
                    "deleted": {},
                    "next_segment": 0,
                    "generation": 0,
                    "created_at": time.time(),
                }
                write_meta(self.path, meta)
        self._check_identity(meta)
        self.nbits = int(meta["nbits"])
        self.store_vectors = bool(meta.get("store_vectors", False))
        self._load(meta)

    # -- identity -

    @property
    def dim(self) -> int:
        """Vector dimension of the index."""
        return self._dim

    @property
    def embedder_id(self) -> str:
        """Embedder that produced the vectors."""
        return self._embedder_id

    def _check_identity(self, meta: Mapping[str, Any]) -> None:
        if meta.get("format") != FORMAT:
            raise IndexError_(f"{self.path}: unknown index format {meta.get('format')!r}")
        if meta["embedder_id"] != self._embedder_id:
            raise IndexError_(
                f"{self.path}: index was built with embedder {meta['embedder_id']!r},"
                f" not {self._embedder_id!r}"
                " (re-index into a new directory to switch models)"
            )
        if int(meta["dim"]) != self._dim:
            raise IndexError_(f"{self.path}: index holds {meta['dim']}-d vectors, not {self._dim}-d")

    # -- loading -

    def _load(self, meta: dict[str, Any]) -> None:
        self._meta = meta
        self._meta_mtime = self._mtime()
        book = meta.get("codebook")
        self.codebook = Codebook.load(self.path / book) if book else None
        self.segments = [Segment.load(self.path, s["name"], s["kind"]) for s in meta["segments"]]
        self._locations: dict[str, tuple[int, int]] = {}
        for number, segment in enumerate(self.segments):
            for row in meta["deleted"].get(segment.name, []):
                segment.live[row] = False
            for row in np.flatnonzero(segment.live):
                self._locations[segment.ids[row]] = (number, int(row))

    def _mtime(self) -> float:
        try:
            return (self.path / META).stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def refresh(self) -> None:
        """Pick up what another process committed (readers only; a writer's view is always current)."""
        if self._lock.held or self._mtime() == self._meta_mtime:
            return
        for attempt in range(3):
            meta = read_meta(self.path)
            if meta is None:
                raise StoreError(f"{self.path}: index metadata disappeared")
            try:
                self._load(meta)
                return
            except StoreError:  # a segment was compacted away between reading meta and opening it
                if attempt == 2:
                    raise

    def _ensure_writer(self) -> None:
        if self._closed:
            raise IndexError_(f"{self.path}: index is closed")
        if self._lock.held:
            return
        self._lock.acquire(self.lock_timeout)
        meta = read_meta(self.path)
        if meta is None:
            raise StoreError(f"{self.path}: index metadata disappeared")
        if meta.get("generation") != self._meta.get("generation"):
            self._load(meta)

    # -- writes -

    def add(
        self,
        ids: Sequence[str],
        vectors: Sequence[npt.ArrayLike],
        payloads: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Upsert points (visible to searches at once, durable after :meth:`flush`)."""
        plain = check_add_args(ids, vectors, payloads)
        matrices = [as_matrix(v, self._dim, what=f"add {pid!r}") for pid, v in zip(ids, vectors, strict=True)]
        self._ensure_writer()
        for pid, matrix, payload in zip(ids, matrices, plain, strict=True):
            self._tombstone(pid)
            self._pending[pid] = (matrix, payload)
        self._dirty = True
        if sum(m.shape[0] for m, _ in self._pending.values()) >= self.auto_flush_tokens:
            self.flush()

    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id (unknown ids are ignored)."""
        if isinstance(ids, str):
            raise IndexError_("ids must be a sequence of strings, not one string")
        self._ensure_writer()
        for pid in ids:
            self._pending.pop(pid, None)
            self._tombstone(pid)
        self._dirty = True

    def _tombstone(self, pid: str) -> None:
        location = self._locations.pop(pid, None)
        if location is not None:
            number, row = location
            segment = self.segments[number]
            segment.live[row] = False
            self._tombstones.setdefault(segment.name, set()).add(row)

    def flush(self) -> None:
        """Commit pending writes durably (segment files fsync-ed, then ``meta.json`` atomically replaced)."""
        if not self._dirty or not self._lock.held:
            return
        meta = dict(self._meta)
        counter = int(meta["next_segment"])
        keep = [s for s in self.segments if s.live.any()]
        new_entries: list[tuple[str, str]] = []
        ids = list(self._pending)
        if ids:
            matrices = [self._pending[i][0] for i in ids]
            payloads = [self._pending[i][1] for i in ids]
            raw_tokens = sum(s.n_tokens for s in keep if s.kind == "raw")
            pending_tokens = sum(m.shape[0] for m in matrices)
            if self.codebook is None and raw_tokens + pending_tokens >= self.min_train_tokens:
                meta["codebook"] = self._train(keep, matrices, counter)
                counter += 1
                raws = [s for s in keep if s.kind == "raw"]
                keep = [s for s in keep if s.kind != "raw"]
                for segment in raws:  # re-store every exact point compressed
                    rows = np.flatnonzero(segment.live)
                    ids += [segment.ids[r] for r in rows]
                    payloads += [segment.payloads[r] for r in rows]
                    matrices += [segment.vectors_of(int(r), None) for r in rows]
            name = f"seg-{counter:06d}"
            counter += 1
            self._write_new_segment(name, ids, matrices, payloads)
            new_entries.append((name, "pq" if self.codebook is not None else "raw"))
        mergeable = sum(s.kind == ("pq" if self.codebook is not None else "raw") for s in keep)
        if len(keep) + len(new_entries) > self.max_segments and mergeable >= 2:
            merged, keep = self._merge_smallest(
                keep, len(keep) + len(new_entries) - self.max_segments // 2, counter
            )
            counter += 1
            new_entries.append(merged)
        self._commit(meta, keep, new_entries, counter)

    def optimize(self) -> None:
        """Merge every segment into one and drop deleted rows (faster searches; rewrites the index)."""
        self._ensure_writer()
        self.flush()
        keep = [s for s in self.segments if s.live.any()]
        if len(keep) <= 1 and not any((~s.live).any() for s in keep):
            return
        counter = int(self._meta["next_segment"])
        merged, rest = self._merge_smallest(keep, len(keep), counter)
        self._commit(dict(self._meta), rest, [merged], counter + 1)

    def _train(self, keep: list[Segment], matrices: list[F32], counter: int) -> str:
        rng = np.random.default_rng(counter)
        pool = list(matrices)
        for segment in keep:
            if segment.kind == "raw":
                pool += [segment.vectors_of(int(r), None) for r in np.flatnonzero(segment.live)]
        total = sum(m.shape[0] for m in pool)
        share = min(1.0, _TRAIN_SAMPLE / max(total, 1))
        sample = np.concatenate([m[rng.random(m.shape[0]) < share] if share < 1.0 else m for m in pool])
        k = self.n_centroids or default_centroid_count(total)
        self.codebook = Codebook.train(sample, nbits=self.nbits, n_centroids=k, seed=counter)
        name = f"codebook-{counter:06d}.npz"
        tmp = self.path / f".{name}.tmp"
        self.codebook.save(tmp)
        write_file_atomic(self.path / name, tmp.read_bytes())
        tmp.unlink()
        return name

    def _write_new_segment(
        self, name: str, ids: list[str], matrices: list[F32], payloads: list[dict[str, Any]]
    ) -> None:
        lengths = np.array([m.shape[0] for m in matrices], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        points = {"ids": ids, "payloads": payloads}
        arrays: dict[str, np.ndarray]
        if self.codebook is None:
            arrays = {"offsets": offsets, "vectors": np.concatenate(matrices).astype(np.float16)}
        else:
            stacked = np.concatenate(matrices)
            cids, codes = self.codebook.encode(stacked)
            arrays = build_pq_arrays(offsets, cids, codes, self.codebook.n_centroids)
            if self.store_vectors:
                arrays["vectors"] = stacked.astype(np.float16)
        write_segment_dir(self.path, name, arrays, points)

    def _merge_smallest(
        self, segments: list[Segment], count: int, counter: int
    ) -> tuple[tuple[str, str], list[Segment]]:
        """Write the live rows of the ``count`` smallest segments (of one kind) into one new segment."""
        kind = "pq" if self.codebook is not None else "raw"
        same = sorted((s for s in segments if s.kind == kind), key=lambda s: s.n_tokens)
        chosen = same[: max(count, 2)]
        name = f"seg-{counter:06d}"
        ids: list[str] = []
        payloads: list[dict[str, Any]] = []
        lengths: list[I64] = []
        token_parts: dict[str, list[np.ndarray]] = {}
        for segment in chosen:
            rows = np.flatnonzero(segment.live)
            ids += [segment.ids[r] for r in rows]
            payloads += [segment.payloads[r] for r in rows]
            starts, stops = segment.offsets[rows], segment.offsets[rows + 1]
            lengths.append(stops - starts)
            tokens = ranges_index(starts, stops)
            keys = ["vectors"] if kind == "raw" else ["cids", "codes"]
            if kind == "pq" and "vectors" in segment.arrays:
                keys.append("vectors")
            for key in keys:
                token_parts.setdefault(key, []).append(np.asarray(segment.arrays[key])[tokens])
        length_array = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        offsets = np.concatenate(([0], np.cumsum(length_array))).astype(np.int64)
        joined = {key: np.concatenate(parts) for key, parts in token_parts.items()}
        if kind == "raw":
            arrays = {"offsets": offsets, "vectors": joined["vectors"]}
        else:
            assert self.codebook is not None
            arrays = build_pq_arrays(offsets, joined["cids"], joined["codes"], self.codebook.n_centroids)
            if "vectors" in joined:
                arrays["vectors"] = joined["vectors"]
        write_segment_dir(self.path, name, arrays, {"ids": ids, "payloads": payloads})
        rest = [s for s in segments if s not in chosen]
        return (name, kind), rest

    def _commit(
        self, meta: dict[str, Any], keep: list[Segment], new_entries: list[tuple[str, str]], counter: int
    ) -> None:
        deleted = {s.name: [int(r) for r in np.flatnonzero(~s.live)] for s in keep}
        meta["segments"] = [{"name": s.name, "kind": s.kind} for s in keep] + [
            {"name": name, "kind": kind} for name, kind in new_entries
        ]
        meta["deleted"] = {name: rows for name, rows in deleted.items() if rows}
        meta["next_segment"] = counter
        meta["generation"] = int(meta["generation"]) + 1
        write_meta(self.path, meta)
        referenced = {s["name"] for s in meta["segments"]} | (
            {meta["codebook"]} if meta["codebook"] else set()
        )
        remove_unreferenced(self.path, referenced)
        self._pending.clear()
        self._tombstones.clear()
        self._dirty = False
        self._load(meta)

    # -- reads -

    def __len__(self) -> int:
        return len(self._locations) + len(self._pending)

    def ids(self) -> set[str]:
        """Ids of all live points (committed and pending)."""
        self.refresh()
        return set(self._locations) | set(self._pending)

    def get_payload(self, point_id: str) -> dict[str, Any] | None:
        """The payload of a point, or None when it does not exist."""
        if point_id in self._pending:
            return dict(self._pending[point_id][1])
        location = self._locations.get(point_id)
        return None if location is None else dict(self.segments[location[0]].payloads[location[1]])

    def search_many(
        self, queries: Sequence[npt.ArrayLike], k: int = 10, *, filter: PayloadFilter | None = None
    ) -> list[list[MultiVectorHit]]:
        """:meth:`search` for each query."""
        return [self.search(query, k, filter=filter) for query in queries]

    def search(
        self, query: npt.ArrayLike, k: int = 10, *, filter: PayloadFilter | None = None
    ) -> list[MultiVectorHit]:
        """The ``k`` best points by MaxSim (exact on float16 segments, staged on compressed ones)."""
        if self._closed:
            raise IndexError_(f"{self.path}: index is closed")
        q = as_matrix(query, self._dim, what="query")
        conditions = check_filter(filter)
        if k <= 0:
            return []
        self.refresh()
        found: list[tuple[float, str, dict[str, Any]]] = []
        if self._pending:
            pending = [(i, m, p) for i, (m, p) in self._pending.items() if payload_matches(p, conditions)]
            for pid, matrix, payload in pending:
                found.append((float((matrix @ q.T).max(axis=0).sum()), pid, payload))
        centroid_scores_t: F32 | None = None
        probes: tuple[I64, F32] | None = None
        for segment in self.segments:
            eligible = segment.live & filter_mask(segment, conditions)
            rows = np.flatnonzero(eligible)
            if len(rows) == 0:
                continue
            if segment.kind == "raw":
                scores = segment.exact_scores(rows, q)
            else:
                assert self.codebook is not None
                if centroid_scores_t is None:
                    centroid_scores_t = self.codebook.centroids @ q.T
                    probes = probe_centroids(centroid_scores_t, self.nprobe)
                assert probes is not None
                rows, scores = staged_scores(
                    segment, rows, eligible, q, self.codebook, centroid_scores_t, probes, k, self._stages
                )
            best = np.argsort(-scores, kind="stable")[:k]
            found += [(float(scores[i]), segment.ids[rows[i]], segment.payloads[rows[i]]) for i in best]
        found.sort(key=lambda item: (-item[0], item[1]))
        return [MultiVectorHit(pid, score, dict(payload)) for score, pid, payload in found[:k]]

    # -- lifecycle -

    def close(self) -> None:
        """Flush pending writes and release the writer lock. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._lock.release()
            self._closed = True

    def __enter__(self) -> EmbeddedMultiVectorIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddedMultiVectorIndex({str(self.path)!r}, dim={self._dim}, points={len(self)})"


__all__ = ["EmbeddedMultiVectorIndex", "exact_maxsim"]
