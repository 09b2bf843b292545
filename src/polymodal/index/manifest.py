"""The ingestion manifest: a SQLite (WAL) record of every document and item (page or image) ingested.

The manifest is the source of truth for *what is done*; the index holds the vectors. The protocol that keeps
them in agreement (zero pages lost, duplicated or phantom, even after ``kill -9``)::

    manifest = Manifest(index_dir / "manifest.sqlite")
    plan = manifest.plan("report.pdf", content_hash, page_count)   # what to embed, what to delete
    index.delete(plan.delete)                                      # old points of a changed file
    for item in plan.todo:                                         # only pages not already done
        index.add([item.point_id], [vectors], [{"document": ..., "page": item.number}])
    index.flush()                                                  # durable first ...
    manifest.confirm_deleted(plan.delete)
    manifest.mark_done([item.point_id for item in plan.todo])      # ... then recorded as done

    for gone in manifest.removed(documents_present):              # --sync
        index.delete(manifest.forget(gone)); index.flush(); manifest.confirm_deleted(...)

* A point id is :func:`point_id` ``(content_hash, number)``: a UUID string (valid in Qdrant too), so
re-ingesting
  an unchanged file plans nothing and costs zero embedding calls; a crash before ``mark_done`` only means the
  page is embedded again and upserted under the same id (no duplicate).
* ``number`` is 1-based (a page number, or the position of an image in a collection). ``kind`` says what the
  items are (``"page"``, ``"image"``...), so the cross-modal image index uses the same manifest.
* One manifest may be opened by several processes; writes take SQLite's write lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from polymodal.errors import StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    document     TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    content_hash TEXT,
    item_count   INTEGER,
    status       TEXT NOT NULL,          -- active | failed | removed
    reason       TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    document     TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    number       INTEGER NOT NULL,
    point_id     TEXT NOT NULL,
    status       TEXT NOT NULL,          -- pending | done | failed | stale
    reason       TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (document, content_hash, number)
);
CREATE INDEX IF NOT EXISTS items_point ON items(point_id);
CREATE INDEX IF NOT EXISTS items_status ON items(status);
"""

PENDING, DONE, FAILED, STALE = "pending", "done", "failed", "stale"


def point_id(content_hash: str, number: int) -> str:
    """The index point id of item ``number`` (1-based) of content ``content_hash``: a deterministic UUID
    string."""
    digest = hashlib.sha256(f"{content_hash}:{number}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def content_hash_of(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes (the ``content_hash`` callers pass to :meth:`Manifest.plan`)."""
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                sha.update(block)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read to hash it: {exc}") from exc
    return sha.hexdigest()


@dataclass(frozen=True)
class PlannedItem:
    """An item (page/image) that still has to be embedded and added to the index."""

    number: int
    point_id: str


@dataclass(frozen=True)
class Plan:
    """What :meth:`Manifest.plan` decided for one document.

    ``todo``: items to embed and add (pending, failed or never seen). ``delete``: point ids to delete from the
    index (the pages of an older version of the file), to be confirmed with :meth:`Manifest.confirm_deleted`.
    ``already_done``: how many items are done and skipped.
    """

    document: str
    content_hash: str
    todo: tuple[PlannedItem, ...]
    delete: tuple[str, ...]
    already_done: int

    @property
    def up_to_date(self) -> bool:
        """True when nothing has to be embedded or deleted."""
        return not self.todo and not self.delete


@dataclass(frozen=True)
class DocumentRecord:
    """One document as the manifest knows it."""

    document: str
    kind: str
    content_hash: str | None
    item_count: int | None
    status: str
    reason: str | None
    done: int
    failed: int
    updated_at: float


@dataclass(frozen=True)
class ManifestStats:
    """Counts over the whole manifest."""

    documents: int
    failed_documents: int
    items: int
    done: int
    pending: int
    failed: int
    stale: int


class Manifest:
    """SQLite (WAL) record of documents and their items; see the module docstring for the protocol."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open manifest: {exc}") from exc

    # -- context management ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database connection. Idempotent."""
        self._db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: manifest write failed: {exc}") from exc

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            return list(self._db.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: manifest read failed: {exc}") from exc

    # -- ingestion ------------------------------------------------------------------------------------------

    def plan(self, document: str, content_hash: str, item_count: int, *, kind: str = "page") -> Plan:
        """Record ``document`` at ``content_hash`` with ``item_count`` items and say what is left to do.

        Done items with the same hash are skipped; items of another hash (the file changed) become stale and
        their point ids are listed in ``Plan.delete`` unless another live item shares the point.
        """
        if item_count < 0:
            raise StoreError(f"{document}: negative item count {item_count}")
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO documents(document, kind, content_hash, item_count, status, reason, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, 'active', NULL, ?, ?) ON CONFLICT(document) DO UPDATE SET"
                " kind=excluded.kind, content_hash=excluded.content_hash, item_count=excluded.item_count,"
                " status='active', reason=NULL, updated_at=excluded.updated_at",
                (document, kind, content_hash, item_count, now, now),
            )
            db.execute(
                "UPDATE items SET status=?, updated_at=? WHERE document=? AND (content_hash<>? OR number>?)",
                (STALE, now, document, content_hash, item_count),
            )
            existing = {
                int(number): str(status)
                for number, status in db.execute(
                    "SELECT number, status FROM items WHERE document=? AND content_hash=?",
                    (document, content_hash),
                )
            }
            todo: list[PlannedItem] = []
            done = 0
            for number in range(1, item_count + 1):
                status = existing.get(number)
                if status == DONE:
                    done += 1
                    continue
                pid = point_id(content_hash, number)
                todo.append(PlannedItem(number, pid))
                if status is None:
                    db.execute(
                        "INSERT INTO items VALUES (?, ?, ?, ?, ?, NULL, ?, ?)",
                        (document, content_hash, number, pid, PENDING, now, now),
                    )
                elif status != PENDING:
                    db.execute(
                        "UPDATE items SET status=?, reason=NULL, updated_at=? WHERE document=? AND"
                        " content_hash=? AND number=?",
                        (PENDING, now, document, content_hash, number),
                    )
            delete = self._deletable(db, document)
        return Plan(document, content_hash, tuple(todo), tuple(delete), done)

    @staticmethod
    def _deletable(db: sqlite3.Connection, document: str | None) -> list[str]:
        """Stale point ids (of ``document`` or all) that no live item shares."""
        where = "s.status='stale'" + (" AND s.document=?" if document is not None else "")
        rows = db.execute(
            f"SELECT DISTINCT s.point_id FROM items s WHERE {where} AND NOT EXISTS (SELECT 1 FROM items l"
            " WHERE l.point_id=s.point_id AND l.status<>'stale') ORDER BY s.point_id",
            (document,) if document is not None else (),
        )
        return [str(row[0]) for row in rows]

    def mark_done(self, point_ids: Iterable[str]) -> int:
        """Record items as done. Call only after ``index.flush()`` returned. Returns how many rows changed."""
        now = time.time()
        changed = 0
        with self._write() as db:
            for pid in point_ids:
                cursor = db.execute(
                    "UPDATE items SET status=?, reason=NULL, updated_at=? WHERE point_id=? AND status<>?",
                    (DONE, now, pid, STALE),
                )
                changed += cursor.rowcount
        return changed

    def mark_failed(self, document: str, reason: str, *, point_ids: Iterable[str] | None = None) -> None:
        """Record a failure: of the whole document (unreadable, encrypted, too big...) or of some of its
        items."""
        now = time.time()
        with self._write() as db:
            if point_ids is None:
                db.execute(
                    "INSERT INTO documents(document, kind, content_hash, item_count, status, reason,"
                    " created_at, updated_at) VALUES (?, 'page', NULL, NULL, 'failed', ?, ?, ?)"
                    " ON CONFLICT(document) DO UPDATE SET status='failed', reason=excluded.reason,"
                    " updated_at=excluded.updated_at",
                    (document, reason, now, now),
                )
                return
            for pid in point_ids:
                db.execute(
                    "UPDATE items SET status=?, reason=?, updated_at=? WHERE document=? AND point_id=?"
                    " AND status<>?",
                    (FAILED, reason, now, document, pid, STALE),
                )

    # -- removal (--sync) -----------------------------------------------------------------------------------

    def removed(self, documents_present: Iterable[str]) -> list[str]:
        """Documents the manifest records (not yet removed) that are not in ``documents_present``."""
        present = set(documents_present)
        rows = self._read("SELECT document FROM documents WHERE status<>'removed' ORDER BY document")
        return [str(row[0]) for row in rows if row[0] not in present]

    def forget(self, document: str) -> list[str]:
        """Mark every item of ``document`` stale; return the point ids to delete from the index."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "UPDATE documents SET status='removed', updated_at=? WHERE document=?", (now, document)
            )
            db.execute("UPDATE items SET status=?, updated_at=? WHERE document=?", (STALE, now, document))
            return self._deletable(db, document)

    def pending_deletions(self) -> list[str]:
        """Stale point ids not yet confirmed deleted (left by an interrupted run): delete them, then
        confirm."""
        with self._write() as db:
            return self._deletable(db, None)

    def confirm_deleted(self, point_ids: Iterable[str]) -> None:
        """Drop stale rows whose points were deleted from the index (call after ``index.flush()``)."""
        with self._write() as db:
            for pid in point_ids:
                db.execute("DELETE FROM items WHERE point_id=? AND status=?", (pid, STALE))
            db.execute(
                "DELETE FROM documents WHERE status='removed' AND NOT EXISTS"
                " (SELECT 1 FROM items WHERE items.document=documents.document)"
            )

    # -- queries --------------------------------------------------------------------------------------------

    def done_ids(self) -> set[str]:
        """Point ids of every done item (what the index must contain)."""
        return {str(row[0]) for row in self._read("SELECT point_id FROM items WHERE status='done'")}

    def known_ids(self) -> set[str]:
        """Point ids of every item the manifest has planned and not confirmed deleted (any status)."""
        return {str(row[0]) for row in self._read("SELECT point_id FROM items")}

    def documents(self) -> list[DocumentRecord]:
        """Every recorded document with its done/failed item counts, by name."""
        rows = self._read(
            "SELECT d.document, d.kind, d.content_hash, d.item_count, d.status, d.reason, d.updated_at,"
            " COALESCE(SUM(i.status='done'), 0), COALESCE(SUM(i.status='failed'), 0) FROM documents d"
            " LEFT JOIN items i ON i.document=d.document AND i.content_hash=d.content_hash"
            " GROUP BY d.document ORDER BY d.document"
        )
        return [
            DocumentRecord(
                document=str(r[0]),
                kind=str(r[1]),
                content_hash=None if r[2] is None else str(r[2]),
                item_count=None if r[3] is None else int(str(r[3])),
                status=str(r[4]),
                reason=None if r[5] is None else str(r[5]),
                updated_at=float(str(r[6])),
                done=int(str(r[7])),
                failed=int(str(r[8])),
            )
            for r in rows
        ]

    def stats(self) -> ManifestStats:
        """Counts of documents and items by status."""
        docs = self._read(
            "SELECT COUNT(*), COALESCE(SUM(status='failed'), 0) FROM documents WHERE status<>'removed'"
        )[0]
        rows = self._read("SELECT status, COUNT(*) FROM items GROUP BY status")
        counts: dict[str, int] = {str(status): int(str(n)) for status, n in rows}

        def count(status: str) -> int:
            return counts.get(status, 0)

        return ManifestStats(
            documents=int(str(docs[0])),
            failed_documents=int(str(docs[1])),
            items=sum(counts.values()),
            done=count(DONE),
            pending=count(PENDING),
            failed=count(FAILED),
            stale=count(STALE),
        )


__all__ = [
    "DocumentRecord",
    "Manifest",
    "ManifestStats",
    "Plan",
    "PlannedItem",
    "content_hash_of",
    "point_id",
]
