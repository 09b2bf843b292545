"""The extraction result cache: SQLite (WAL), one row per (content, model, schema, prompt, options) key."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from polymodal.errors import StoreError


class ResultCache:
    """Finished extraction records keyed by :func:`~polymodal.pipelines.extract_batch.cache_key`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, status TEXT NOT NULL, "
                "record TEXT NOT NULL, updated REAL NOT NULL)"
            )
            self._db.commit()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the extraction cache: {exc}") from exc

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached record for ``key``, or None."""
        with self._lock:
            row = self._db.execute("SELECT record FROM records WHERE key = ?", (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store a finished record (committed before returning)."""
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO records (key, status, record, updated) VALUES (?, ?, ?, ?)",
                    (key, record["status"], json.dumps(record, ensure_ascii=False), time.time()),
                )
                self._db.commit()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot write the extraction cache: {exc}") from exc

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


__all__ = ["ResultCache"]
