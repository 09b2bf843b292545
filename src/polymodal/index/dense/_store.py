"""Storage and exact-scoring helpers of the embedded dense engine (points table, filters, rescoring)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from polymodal.errors import IndexError_, StoreError
from polymodal.index.base import FloatArray

I64 = npt.NDArray[np.int64]

SCHEMA = """
CREATE TABLE IF NOT EXISTS points (key INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def filter_sql(conditions: Mapping[str, tuple[str, Any]]) -> tuple[str, list[Any]] | None:
    """SQL selecting the keys whose payload matches normalised conditions (see
    :func:`polymodal.index.base.check_filter`), typed like Qdrant: ``True`` matches JSON true, not 1.
    None when an empty ``in`` list makes the filter match nothing."""
    clauses, args = [], []
    for key, (op, value) in conditions.items():
        values = [value] if op == "eq" else list(value)
        if not values:
            return None
        path = _json_path(key)
        ors = []
        for v in values:
            if isinstance(v, bool):
                ors.append(f"json_type(payload, ?) = '{'true' if v else 'false'}'")
                args.append(path)
            else:
                sql_type = "integer" if isinstance(v, int) else "text"
                ors.append(f"(json_type(payload, ?) = '{sql_type}' AND json_extract(payload, ?) = ?)")
                args.extend([path, path, v])
        clauses.append("(" + " OR ".join(ors) + ")")
    return "SELECT key FROM points WHERE " + " AND ".join(clauses) + " ORDER BY key", args


def rescore(rows: FloatArray, candidates: I64, q: FloatArray, k: int) -> tuple[I64, FloatArray]:
    """The best ``k`` of ``candidates`` (row keys) by exact float32 dot product with ``q``."""
    if len(candidates) == 0:
        return candidates, np.zeros(0, dtype=np.float32)
    order = np.argsort(candidates)  # sorted reads are kinder to the page cache
    keys = candidates[order]
    scores = np.asarray(rows[keys], dtype=np.float32) @ q
    best = np.argsort(-scores, kind="stable")[:k]
    return keys[best], scores[best]


def exact_top(rows: FloatArray, allowed: I64, q: FloatArray, k: int) -> tuple[I64, FloatArray]:
    """Exact top ``k`` among the rows ``allowed`` (sorted keys), scanned in blocks."""
    if len(allowed) == 0:
        return allowed, np.zeros(0, dtype=np.float32)
    scores = np.concatenate(
        [
            np.asarray(rows[allowed[i : i + 65536]], dtype=np.float32) @ q
            for i in range(0, len(allowed), 65536)
        ]
    )
    top = min(k, len(scores))
    best = np.argpartition(-scores, top - 1)[:top]
    best = best[np.argsort(-scores[best], kind="stable")]
    return allowed[best], scores[best]


def _json_path(key: str) -> str:
    if '"' in key or "\\" in key:
        raise IndexError_(f"filter key {key!r}: double quotes and backslashes are not supported")
    return f'$."{key}"'


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating) the points table in WAL mode, fully synchronous commits."""
    try:
        db = sqlite3.connect(path, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the points table: {exc}") from exc
    return db


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file via a fsync-ed temporary and a rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


__all__ = ["SCHEMA", "connect", "exact_top", "filter_sql", "rescore", "write_atomic"]
