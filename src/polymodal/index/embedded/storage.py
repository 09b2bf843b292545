"""On-disk files of the embedded engine and the atomic write helpers (write, fsync, rename, fsync dir).

Layout of an index directory::

    meta.json            the commit point: settings, codebook file, live segments and their tombstones
    LOCK                 writer lock (see _lock.py)
    codebook-<n>.npz     centroids + residual buckets (written once, when the index is first trained)
    seg-<n>/             immutable segments, each written to a temp dir, fsync-ed, then renamed into place
        points.json      ids and payloads, in row order
        offsets.npy      int64 (n_points + 1,): token range of each point
        raw:  vectors.npy            float16 (n_tokens, dim)          (before a codebook exists)
        pq:   cids.npy, codes.npy    centroid ids, packed residuals    (after)
              page_cids_offsets.npy, page_cids.npy   distinct centroids of each point (CSR)
              ivf_offsets.npy, ivf_points.npy        centroid -> points inverted lists (CSR)

Files not referenced by ``meta.json`` are leftovers of an interrupted write and are removed on the next write.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from polymodal.errors import StoreError

META = "meta.json"


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames inside it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_meta(directory: Path) -> dict[str, Any] | None:
    """The committed metadata, or None when the directory holds no index."""
    path = directory / META
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable index metadata: {exc}") from exc


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Publish new metadata atomically (the commit point of every write)."""
    write_file_atomic(directory / META, json.dumps(meta, separators=(",", ":")).encode())


def write_segment_dir(
    directory: Path, name: str, arrays: dict[str, np.ndarray], points: dict[str, Any]
) -> None:
    """Write a segment's files into a temp dir, fsync each, then rename it to ``name`` and fsync the
    parent."""
    final = directory / name
    tmp = directory / f".{name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        for key, array in arrays.items():
            with open(tmp / f"{key}.npy", "wb") as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
        with open(tmp / "points.json", "wb") as handle:
            handle.write(json.dumps(points, separators=(",", ":")).encode())
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(tmp)
        if final.exists():  # a leftover of an interrupted write that was never committed
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_array(path: Path) -> np.ndarray:
    """Memory-map a ``.npy`` file read-only."""
    try:
        array: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
        return array
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable index file: {exc}") from exc


def load_points(segment_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Ids and payloads of a segment."""
    path = segment_dir / "points.json"
    try:
        data = json.loads(path.read_text())
        return list(data["ids"]), list(data["payloads"])
    except (OSError, ValueError, KeyError) as exc:
        raise StoreError(f"{path}: unreadable index file: {exc}") from exc


def remove_unreferenced(directory: Path, keep: set[str]) -> None:
    """Delete segment dirs, codebooks and temp files that ``meta.json`` does not reference."""
    for entry in directory.iterdir():
        name = entry.name
        stale = name.endswith(".tmp") or (
            (name.startswith("seg-") or name.startswith("codebook-")) and name not in keep
        )
        if not stale:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
