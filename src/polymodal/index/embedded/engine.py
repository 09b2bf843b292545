"""The embedded multi-vector engine: memory-mapped, compressed, no server. See docs/index.md."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
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
from polymodal.index.embedded.codec import POINTS_PER_CENTROID, Codebook, default_centroid_count
from polymodal.index.embedded.search import DEFAULT_STAGES, filter_mask, probe_centroids, staged_scores
from polymodal.index.embedded.segment import Segment, exact_maxsim
from polymodal.index.embedded.storage import (
    META,
    read_meta,
    remove_unreferenced,
    write_file_atomic,
    write_meta,
)
from polymodal.index.embedded.writing import SegmentWriter

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
FORMAT = 1
_TRAIN_SAMPLE = 500_000
RETRAIN_GROWTH = 4  # retrain the codebook (and re-encode every point) when the index has grown this much
STORES = tuple(DEFAULT_STAGES)  # "int8", "none", "float16"


def rerank_store(value: bool | str) -> str:
    """Normalise ``store_vectors``: ``"int8"`` / ``"float16"`` / ``"none"`` (True = float16, False = none)."""
    if value is True or value is False:
        return "float16" if value else "none"
    if value not in STORES:
        raise IndexError_(f"store_vectors must be one of {', '.join(STORES)} (or a bool), got {value!r}")
    return str(value)


def _live_tokens(segment: Segment) -> int:
    return int(np.diff(segment.offsets)[segment.live].sum())


class EmbeddedMultiVectorIndex:
    """A late-interaction index in a directory: segments of compressed token vectors, searched in stages.

    Until the index holds ``min_train_tokens`` tokens, points are stored as float16 and searched exactly. At
    that point a codebook is trained on them (``n_centroids`` centroids, default ~``16 * sqrt(tokens)``) and
    every token is stored as a centroid id plus ``nbits`` bits per dimension of residual. Each time the index
    has grown ``RETRAIN_GROWTH`` times past what the codebook was trained on, it is retrained on a sample of
    everything and every point re-encoded from its re-rank store (a codebook trained on the first few
    hundred pages has never seen most of a large corpus); without a store it is trained once. Search probes
    the ``nprobe`` nearest centroids of each query token, keeps ``candidates`` points by probe scores, scores
    them with all their centroids, and gives the best ``rerank`` their final scores from the re-rank store
    ``store_vectors``:

    - ``"int8"`` (default): residuals to the centroid in int8 with a scale per token (132 bytes per 128-d
      token), near-exact MaxSim;
    - ``"float16"`` (or True): the originals, scored exactly (the ``exact_rerank`` best by decoded score);
    - ``"none"`` (or False): only the 2-bit codes (34 bytes per 128-d token; near-ties are reordered).

    docs/benchmarks/retrieval.md measures all three.

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
        nprobe: int = 16,
        candidates: int | None = None,
        rerank: int | None = None,
        store_vectors: bool | str = "int8",
        exact_rerank: int | None = None,
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
        stages = {"candidates": candidates, "rerank": rerank, "exact_rerank": exact_rerank}
        self._stage_overrides = {key: value for key, value in stages.items() if value is not None}
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
                    "store_vectors": rerank_store(store_vectors),
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
        self.store_vectors = rerank_store(meta.get("store_vectors", False))
        self._stages = replace(DEFAULT_STAGES[self.store_vectors], **self._stage_overrides)
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
        committed = self.codebook
        try:
            self._write_pending()
        except BaseException:  # nothing was committed: the stored points are still encoded with it
            self.codebook = committed
            raise

    def _write_pending(self) -> None:
        meta = dict(self._meta)
        counter = int(meta["next_segment"])
        keep = [s for s in self.segments if s.live.any()]
        new_entries: list[tuple[str, str]] = []
        ids = list(self._pending)
        if ids:
            matrices = [self._pending[i][0] for i in ids]
            payloads = [self._pending[i][1] for i in ids]
            live_tokens = sum(_live_tokens(s) for s in keep) + sum(m.shape[0] for m in matrices)
            if self._wants_training(live_tokens):
                previous = self.codebook  # what the stored points are encoded with
                meta["codebook"] = self._train(keep, matrices, counter, live_tokens)
                meta["trained_on"] = live_tokens
                counter += 1
                if keep:  # re-store every point under the new codebook, in one segment
                    name = f"seg-{counter:06d}"
                    counter += 1
                    self._writer().reencode(keep, previous, name)
                    new_entries.append((name, "pq"))
                keep = []
            name = f"seg-{counter:06d}"
            counter += 1
            self._writer().write_new(name, ids, matrices, payloads)
            new_entries.append((name, "pq" if self.codebook is not None else "raw"))
        mergeable = sum(s.kind == ("pq" if self.codebook is not None else "raw") for s in keep)
        if len(keep) + len(new_entries) > self.max_segments and mergeable >= 2:
            merged, keep = self._writer().merge_smallest(
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
        merged, rest = self._writer().merge_smallest(keep, len(keep), counter)
        self._commit(dict(self._meta), rest, [merged], counter + 1)

    def _writer(self) -> SegmentWriter:
        return SegmentWriter(self.path, self.codebook, self.store_vectors)

    def _wants_training(self, live_tokens: int) -> bool:
        if self.codebook is None:
            return live_tokens >= self.min_train_tokens
        if self.store_vectors == "none":  # re-encoding 2-bit codes would compound their error: train once
            return False
        trained_on = int(self._meta.get("trained_on", self.min_train_tokens))
        return live_tokens >= RETRAIN_GROWTH * max(trained_on, 1)

    def _train(self, keep: list[Segment], matrices: list[F32], counter: int, live_tokens: int) -> str:
        """Train a codebook on a sample of the pending points and of every stored point, and save it."""
        rng = np.random.default_rng(counter)
        k = self.n_centroids or default_centroid_count(live_tokens)
        share = min(1.0, max(_TRAIN_SAMPLE, POINTS_PER_CENTROID * k) / max(live_tokens, 1))
        pool = [m[rng.random(m.shape[0]) < share] if share < 1.0 else m for m in matrices]
        # single tokens, not whole points: a few hundred whole pages would hold a few hundred pages' topics
        pool += [segment.sample_tokens(share, rng, self.codebook) for segment in keep]
        sample = np.concatenate(pool)
        self.codebook = Codebook.train(sample, nbits=self.nbits, n_centroids=k, seed=counter)
        name = f"codebook-{counter:06d}.npz"
        tmp = self.path / f".{name}.tmp"
        self.codebook.save(tmp)
        write_file_atomic(self.path / name, tmp.read_bytes())
        tmp.unlink()
        return name

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
