"""On-disk files of the embedded engine and the atomic write helpers (write, fsync, rename, fsync dir).

Layout of an index directory::

    meta.json            the commit point: settings, codebook file, live segments and their tombstones
    LOCK                 writer lock (see _lock.py)
    codebook-<n>.npz     centroids + residual buckets (trained at a threshold, retrained as the index grows)
    seg-<n>/             immutable segments, each written to a temp dir, fsync-ed, then renamed into place
        points.json      ids and payloads, in row order
        offsets.npy      int64 (n_points + 1,): token range of each point
        raw:  vectors.npy            float16 (n_tokens, dim)          (before a codebook exists)
        pq:   cids.npy, codes.npy    centroid ids, packed residuals    (after)
              residuals.npy, scales.npy              int8 residuals + per-token scale (re-rank store, int8)
              vectors.npy                            float16 originals (re-rank store, float16)
              page_cids_offsets.npy, page_cids.npy   distinct centroids of each point (CSR)
              ivf_offsets.npy, ivf_points.npy        centroid -> points inverted lists (CSR)

    .columns-<id>.tmp/   per-token arrays of a segment being written (see TokenColumns), moved into it

Files not referenced by ``meta.json`` are leftovers of an interrupted write and are removed on the next write.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
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
    directory: Path,
    name: str,
    arrays: dict[str, np.ndarray],
    points: dict[str, Any],
    files: Mapping[str, Path] | None = None,
) -> None:
    """Write a segment's files into a temp dir, fsync each, then rename it to ``name`` and fsync the
    parent. ``files`` are ``.npy`` files already written in ``directory`` (see :class:`TokenColumns`),
    moved into the segment under their keys."""
    final = directory / name
    tmp = directory / f".{name}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        for key, array in arrays.items():
            with open(tmp / f"{key}.npy", "wb") as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
        for key, path in (files or {}).items():
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(path, tmp / f"{key}.npy")
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


class RowFile:
    """The rows of a 2-d ``.npy`` file, read with ``pread`` into fresh buffers.

    Re-rank stores are read this way instead of memory-mapped: what a search reads then lives in the page
    cache, not in the process's resident set, so a long-running server's RSS stays flat however many pages
    its searches have touched.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
                self.offset = handle.tell()
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: unreadable index file: {exc}") from exc
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read_ranges(self, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        """Rows ``starts[i]:stops[i]`` for every i, concatenated (adjacent ranges are read in one call)."""
        lengths = np.asarray(stops, dtype=np.int64) - np.asarray(starts, dtype=np.int64)
        out = np.empty((int(lengths.sum()), *self.shape[1:]), dtype=self.dtype)
        buffer = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        merged: list[list[int]] = []
        for start, stop in zip(np.asarray(starts).tolist(), np.asarray(stops).tolist(), strict=True):
            if merged and merged[-1][1] == start:
                merged[-1][1] = stop
            elif stop > start:
                merged.append([start, stop])
        fd = os.open(self.path, os.O_RDONLY)
        try:
            position = 0
            for start, stop in merged:
                size = (stop - start) * self.row_bytes
                got = os.preadv(
                    fd, [buffer[position : position + size]], self.offset + start * self.row_bytes
                )
                if got != size:
                    raise StoreError(f"{self.path}: truncated index file (wanted {size} bytes, got {got})")
                position += size
        except OSError as exc:
            raise StoreError(f"{self.path}: unreadable index file: {exc}") from exc
        finally:
            os.close(fd)
        return out


class TokenColumns:
    """The per-token arrays of a segment being written (codes, re-rank store...), filled a chunk at a time
    into ``.npy`` files of a scratch directory inside the index directory.

    Re-encoding or merging millions of tokens thus holds one chunk in memory, not the whole segment, and
    :func:`write_segment_dir` moves the files into the segment instead of copying them. The scratch
    directory is removed by :meth:`remove` (or, after a crash, as a stale ``.tmp`` by the next write).
    """

    def __init__(self, directory: Path, n_tokens: int) -> None:
        self.n_tokens = n_tokens
        self.root = directory / f".columns-{uuid.uuid4().hex}.tmp"
        self.root.mkdir()
        self._columns: dict[str, np.memmap] = {}  # type: ignore[type-arg]
        self._filled: dict[str, int] = {}

    def append(self, parts: Mapping[str, np.ndarray]) -> None:
        """Append the next tokens of every column (each part holds the same number of rows)."""
        for key, part in parts.items():
            if key not in self._columns:
                self._columns[key] = np.lib.format.open_memmap(
                    self.root / f"{key}.npy",
                    mode="w+",
                    dtype=part.dtype,
                    shape=(self.n_tokens, *part.shape[1:]),
                )
                self._filled[key] = 0
            start = self._filled[key]
            self._columns[key][start : start + len(part)] = part
            self._filled[key] = start + len(part)

    def __getitem__(self, key: str) -> np.ndarray:
        """A column as written so far (memory-mapped)."""
        return self._columns[key]

    def files(self) -> dict[str, Path]:
        """Flush every column and give its file; every column must hold all ``n_tokens`` rows."""
        short = {key: filled for key, filled in self._filled.items() if filled != self.n_tokens}
        if short:
            raise StoreError(f"{self.root}: columns not filled to {self.n_tokens} tokens: {short}")
        for column in self._columns.values():
            column.flush()
        return {key: self.root / f"{key}.npy" for key in self._columns}

    def remove(self) -> None:
        """Drop the scratch directory (and whatever was not moved out of it)."""
        self._columns.clear()
        shutil.rmtree(self.root, ignore_errors=True)


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
