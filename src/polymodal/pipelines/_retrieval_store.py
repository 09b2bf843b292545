"""Page text store of a retrieval index: each page's text (for ``ask`` and result snippets) plus a BM25 index.

SQLite FTS5 (porter stemming) keeps it durable and incremental -- pages are upserted and deleted one by one,
next to the manifest, with no rebuild. ``bm25()`` ranks lexical matches for the hybrid (dense + BM25) mode.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.errors import StoreError
from polymodal.index.base import PayloadFilter, check_filter, payload_matches

_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS pages USING fts5(
    point_id UNINDEXED, payload UNINDEXED, body, tokenize='porter unicode61'
);
"""
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class LexicalHit:
    """A BM25 match: point id, score (higher is better) and the payload stored with the page."""

    id: str
    score: float
    payload: dict[str, Any]


class PageTextStore:
    """Page texts keyed by point id, searchable with BM25."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the page text store: {exc}") from exc

    def upsert(self, ids: Sequence[str], texts: Sequence[str], payloads: Sequence[Mapping[str, Any]]) -> None:
        """Store (or replace) the text and payload of each point; durable when this returns."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for point_id, text, payload in zip(ids, texts, payloads, strict=True):
                self._db.execute("DELETE FROM pages WHERE point_id=?", (point_id,))
                self._db.execute(
                    "INSERT INTO pages(point_id, payload, body) VALUES (?, ?, ?)",
                    (point_id, json.dumps(dict(payload)), text),
                )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"{self.path}: page text write failed: {exc}") from exc

    def delete(self, ids: Iterable[str]) -> None:
        """Remove points; unknown ids are ignored."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for point_id in ids:
                self._db.execute("DELETE FROM pages WHERE point_id=?", (point_id,))
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"{self.path}: page text delete failed: {exc}") from exc

    def text(self, point_id: str) -> str | None:
        """The stored text of one page, or None."""
        row = self._db.execute("SELECT body FROM pages WHERE point_id=?", (point_id,)).fetchone()
        return None if row is None else str(row[0])

    def search(self, query: str, k: int, *, filter: PayloadFilter | None = None) -> list[LexicalHit]:
        """Best ``k`` pages by BM25 for any of the query's words (OR), restricted by ``filter``."""
        conditions = check_filter(filter)
        words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
        if not words or k <= 0:
            return []
        expression = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        limit = k if not conditions else max(k * 20, 200)
        try:
            rows = self._db.execute(
                "SELECT point_id, payload, bm25(pages) AS rank FROM pages WHERE pages MATCH ?"
                " ORDER BY rank LIMIT ?",
                (expression, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: lexical search failed: {exc}") from exc
        hits: list[LexicalHit] = []
        for point_id, payload_text, rank in rows:
            payload = json.loads(payload_text)
            if conditions and not payload_matches(payload, conditions):
                continue
            hits.append(LexicalHit(str(point_id), -float(rank), payload))  # bm25() is lower-is-better
            if len(hits) == k:
                break
        return hits

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM pages").fetchone()[0])

    def close(self) -> None:
        """Close the database. Idempotent."""
        self._db.close()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], *, k: int = 60) -> list[tuple[str, float]]:
    """Fuse ranked id lists: ``score(id) = sum 1 / (k + rank)`` (rank 1-based); best first."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, point_id in enumerate(ranking, start=1):
            scores[point_id] = scores.get(point_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


__all__ = ["LexicalHit", "PageTextStore", "reciprocal_rank_fusion"]
