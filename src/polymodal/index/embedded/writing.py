"""Writing segments of the embedded engine: encoding points under the codebook, re-encoding and merging."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from polymodal.index.embedded.codec import Codebook
from polymodal.index.embedded.segment import Segment, build_pq_arrays, ranges_index
from polymodal.index.embedded.storage import TokenColumns, write_segment_dir

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
_ENCODE_CHUNK = 1 << 20  # tokens re-encoded per step
_MERGE_ROWS = 1_000  # points copied per step when merging
_TOKEN_KEYS = ("vectors", "cids", "codes", "residuals", "scales")  # per-token arrays a segment may hold


@dataclass
class SegmentWriter:
    """Writes immutable segments into ``path``: raw float16 before a codebook exists, codes and the re-rank
    store ``store`` (``"int8"`` / ``"float16"`` / ``"none"``) after."""

    path: Path
    codebook: Codebook | None
    store: str

    def encode(self, stacked: F32) -> dict[str, np.ndarray]:
        """Per-token arrays of ``stacked`` under the current codebook: codes and the re-rank store."""
        assert self.codebook is not None
        cids, codes = self.codebook.encode(stacked)
        parts: dict[str, np.ndarray] = {"cids": cids, "codes": codes}
        if self.store == "int8":
            parts["residuals"], parts["scales"] = self.codebook.encode_int8(stacked, cids)
        elif self.store == "float16":
            parts["vectors"] = stacked.astype(np.float16)
        return parts

    def write_pq(
        self, name: str, ids: list[str], payloads: list[dict[str, Any]], lengths: I64, columns: TokenColumns
    ) -> None:
        """Write a compressed segment of ``lengths`` points from their per-token ``columns`` (see
        :meth:`encode`)."""
        assert self.codebook is not None
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        arrays = build_pq_arrays(offsets, np.asarray(columns["cids"]), self.codebook.n_centroids)
        write_segment_dir(self.path, name, arrays, {"ids": ids, "payloads": payloads}, columns.files())

    def write_new(
        self, name: str, ids: list[str], matrices: list[F32], payloads: list[dict[str, Any]]
    ) -> None:
        """Write new points: float16 before a codebook exists, compressed after."""
        lengths = np.array([m.shape[0] for m in matrices], dtype=np.int64)
        if self.codebook is None:
            offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
            vectors = np.concatenate(matrices).astype(np.float16)
            write_segment_dir(
                self.path, name, {"offsets": offsets, "vectors": vectors}, {"ids": ids, "payloads": payloads}
            )
            return
        columns = TokenColumns(self.path, int(lengths.sum()))
        try:
            columns.append(self.encode(np.concatenate(matrices)))
            self.write_pq(name, ids, payloads, lengths, columns)
        finally:
            columns.remove()

    def reencode(self, segments: list[Segment], previous: Codebook | None, name: str) -> None:
        """Write the live points of ``segments`` (encoded with ``previous``) into ``name`` under the current
        codebook, about ``_ENCODE_CHUNK`` tokens in memory at a time."""
        ids, payloads, lengths = _live_points(segments)
        columns = TokenColumns(self.path, int(lengths.sum()))
        try:
            for segment in segments:
                rows = np.flatnonzero(segment.live)
                sizes = (segment.offsets[rows + 1] - segment.offsets[rows]).astype(np.int64)
                done = 0
                while done < len(rows):
                    stop = done + max(1, int(np.searchsorted(np.cumsum(sizes[done:]), _ENCODE_CHUNK)))
                    chunk = np.concatenate([segment.vectors_of(int(r), previous) for r in rows[done:stop]])
                    columns.append(self.encode(chunk))
                    done = stop
            self.write_pq(name, ids, payloads, lengths, columns)
        finally:
            columns.remove()

    def merge_smallest(
        self, segments: list[Segment], count: int, counter: int
    ) -> tuple[tuple[str, str], list[Segment]]:
        """Write the live rows of the ``count`` smallest segments (of one kind) into one new segment, a
        bounded number of tokens in memory at a time."""
        kind = "pq" if self.codebook is not None else "raw"
        same = sorted((s for s in segments if s.kind == kind), key=lambda s: s.n_tokens)
        chosen = same[: max(count, 2)]
        name = f"seg-{counter:06d}"
        ids, payloads, lengths = _live_points(chosen)
        columns = TokenColumns(self.path, int(lengths.sum()))
        try:
            for segment in chosen:
                rows = np.flatnonzero(segment.live)
                keys = [key for key in _TOKEN_KEYS if key in segment.arrays]
                for first in range(0, len(rows), _MERGE_ROWS):
                    batch = rows[first : first + _MERGE_ROWS]
                    tokens = ranges_index(segment.offsets[batch], segment.offsets[batch + 1])
                    columns.append({key: np.asarray(segment.arrays[key][tokens]) for key in keys})
            if kind == "raw":
                offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
                write_segment_dir(
                    self.path, name, {"offsets": offsets}, {"ids": ids, "payloads": payloads}, columns.files()
                )
            else:
                self.write_pq(name, ids, payloads, lengths, columns)
        finally:
            columns.remove()
        rest = [s for s in segments if s not in chosen]
        return (name, kind), rest


def _live_points(segments: list[Segment]) -> tuple[list[str], list[dict[str, Any]], I64]:
    """Ids, payloads and token counts of the live points of ``segments``, in order."""
    ids: list[str] = []
    payloads: list[dict[str, Any]] = []
    lengths: list[I64] = []
    for segment in segments:
        rows = np.flatnonzero(segment.live)
        ids += [segment.ids[r] for r in rows]
        payloads += [segment.payloads[r] for r in rows]
        lengths.append((segment.offsets[rows + 1] - segment.offsets[rows]).astype(np.int64))
    return ids, payloads, np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
