"""Vector compression for the embedded engine: k-means centroids plus ``nbits`` residual codes per dimension.

A token vector ``x`` is stored as the id of a centroid ``c`` (2 bytes) and, per dimension, which of
``2**nbits``
buckets its residual ``x - c`` falls into (per-dimension quantile cut-offs; the decoded value of a bucket
is the
residual's median within it). At 128 dimensions and 2 bits that is 34 bytes per token instead of 512 (f32).

Centroids are trained hierarchically (``coarse`` cells, then ``fine`` centroids inside each cell) so that
assigning tens of millions of tokens costs two small matrix products each instead of one with every centroid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from polymodal.errors import ConfigError, IndexError_, StoreError

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
I8 = npt.NDArray[np.int8]
I64 = npt.NDArray[np.int64]

_ASSIGN_CHUNK = 65_536


POINTS_PER_CENTROID = 48  # training tokens per centroid (k-means wants >= 39)


def default_centroid_count(n_tokens: int) -> int:
    """Centroids for an index of ``n_tokens`` tokens: a power of two near ``16 * sqrt(n)`` (as PLAID) within
    4096..32768, never more than ``n / 64``. Fine centroids make the centroid stages rank well: at 1K
    ColPali-shaped pages, 3.9K centroids gave recall@10 0.945 and 13.4K gave 0.9975."""
    target = 2 ** round(math.log2(16.0 * math.sqrt(max(n_tokens, 1))))
    return int(max(1, min(32_768, max(4_096, target), n_tokens // 64)))


def _kmeans(data: F32, k: int, *, seed: int, niter: int = 12) -> F32:
    try:
        import faiss  # optional heavy import, only when training
    except ImportError as exc:
        raise ConfigError(
            "the embedded index needs faiss to train its codebook", hint="pip install faiss-cpu"
        ) from exc

    k = max(1, min(k, data.shape[0]))
    if k == data.shape[0]:
        return np.array(data, dtype=np.float32)
    kmeans = faiss.Kmeans(
        data.shape[1], k, niter=niter, seed=seed, verbose=False, max_points_per_centroid=128
    )
    kmeans.train(np.ascontiguousarray(data, dtype=np.float32))
    return np.asarray(kmeans.centroids, dtype=np.float32)


@dataclass
class Codebook:
    """Centroids (grouped in coarse cells) and residual buckets; see the module docstring."""

    coarse: F32  # (n_cells, dim)
    centroids: F32  # (n_centroids, dim), cell by cell
    cell_offsets: I64  # (n_cells + 1,): centroids of cell i are centroids[off[i]:off[i+1]]
    cutoffs: F32  # (dim, 2**nbits - 1)
    weights: F32  # (dim, 2**nbits)
    nbits: int

    def __post_init__(self) -> None:
        self.dim = int(self.centroids.shape[1])
        self.values_per_byte = 8 // self.nbits
        self.code_bytes = math.ceil(self.dim / self.values_per_byte)
        self._centroid_norms = (self.centroids**2).sum(1)
        self._coarse_norms = (self.coarse**2).sum(1)
        self._lut = self._decode_table()

    @property
    def n_centroids(self) -> int:
        """Number of (fine) centroids."""
        return int(self.centroids.shape[0])

    @property
    def cid_dtype(self) -> type[np.unsignedinteger]:  # type: ignore[type-arg]
        """Smallest unsigned type that holds a centroid id."""
        return np.uint16 if self.n_centroids <= 65_536 else np.uint32

    # -- training -

    @classmethod
    def train(cls, sample: F32, *, nbits: int = 2, n_centroids: int | None = None, seed: int = 0) -> Codebook:
        """Train on ``sample`` (tokens, dim): hierarchical k-means, then residual quantiles per dimension."""
        if nbits not in (1, 2, 4, 8):
            raise IndexError_(f"nbits must be 1, 2, 4 or 8, got {nbits}")
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        total = n_centroids or default_centroid_count(sample.shape[0])
        n_cells = 2 ** math.ceil(math.log2(total) / 2)
        per_cell = max(1, total // n_cells)
        coarse = _kmeans(sample, min(n_cells, max(1, sample.shape[0] // 40)), seed=seed)
        cells = _nearest(sample, coarse, (coarse**2).sum(1))
        parts: list[F32] = []
        offsets = [0]
        for cell in range(coarse.shape[0]):
            members = sample[cells == cell]
            # faiss wants >= 39 points per centroid; a sparse cell gets fewer centroids
            k_fine = min(per_cell, max(1, len(members) // 40))
            if len(members) == 0:
                fine = coarse[cell : cell + 1]
            elif k_fine == 1:  # one centroid is the mean (faiss would warn about too few points)
                fine = members.mean(axis=0, keepdims=True).astype(np.float32)
            else:
                fine = _kmeans(members, k_fine, seed=seed + cell + 1)
            parts.append(fine)
            offsets.append(offsets[-1] + fine.shape[0])
        centroids = np.concatenate(parts).astype(np.float32)
        book = cls(
            coarse=coarse,
            centroids=centroids,
            cell_offsets=np.asarray(offsets, dtype=np.int64),
            cutoffs=np.zeros((sample.shape[1], 2**nbits - 1), np.float32),
            weights=np.zeros((sample.shape[1], 2**nbits), np.float32),
            nbits=nbits,
        )
        residuals = sample - centroids[book.assign(sample)]
        levels = 2**nbits
        book.cutoffs = np.quantile(residuals, np.arange(1, levels) / levels, axis=0).T.astype(np.float32)
        book.weights = np.quantile(residuals, (np.arange(levels) + 0.5) / levels, axis=0).T.astype(np.float32)
        book._lut = book._decode_table()
        return book

    # -- encoding -

    def assign(self, vectors: F32) -> npt.NDArray[np.int64]:
        """Nearest centroid id of each vector (nearest coarse cell first, then nearest centroid inside it)."""
        out = np.empty(vectors.shape[0], dtype=np.int64)
        for start in range(0, vectors.shape[0], _ASSIGN_CHUNK):
            chunk = vectors[start : start + _ASSIGN_CHUNK]
            cells = _nearest(chunk, self.coarse, self._coarse_norms)
            order = np.argsort(cells, kind="stable")
            bounds = np.searchsorted(cells[order], np.arange(self.coarse.shape[0] + 1))
            result = np.empty(chunk.shape[0], dtype=np.int64)
            for cell in np.flatnonzero(np.diff(bounds)):
                rows = order[bounds[cell] : bounds[cell + 1]]
                lo, hi = int(self.cell_offsets[cell]), int(self.cell_offsets[cell + 1])
                local = _nearest(chunk[rows], self.centroids[lo:hi], self._centroid_norms[lo:hi])
                result[rows] = local + lo
            out[start : start + chunk.shape[0]] = result
        return out

    def encode(self, vectors: F32) -> tuple[npt.NDArray[np.unsignedinteger], U8]:  # type: ignore[type-arg]
        """Return (centroid ids, packed residual codes ``(n, code_bytes)``) for ``vectors``."""
        cids = self.assign(vectors)
        codes = np.empty((vectors.shape[0], self.code_bytes), dtype=np.uint8)
        for start in range(0, vectors.shape[0], _ASSIGN_CHUNK):
            stop = start + _ASSIGN_CHUNK
            residual = vectors[start:stop] - self.centroids[cids[start:stop]]
            buckets = np.zeros(residual.shape, dtype=np.uint8)
            for j in range(self.cutoffs.shape[1]):
                buckets += residual > self.cutoffs[:, j]
            codes[start:stop] = self._pack(buckets)
        return cids.astype(self.cid_dtype), codes

    def encode_int8(self, vectors: F32, cids: npt.NDArray[np.integer]) -> tuple[I8, F32]:  # type: ignore[type-arg]
        """Residuals ``vectors - centroid`` as int8 with one float32 scale per token (the re-rank store).

        A residual is about half a unit vector's length, so 8 bits of it resolve a token score to ~4e-4:
        close enough to float32 to order MaxSim near-ties (see docs/benchmarks/retrieval.md).
        """
        residuals = np.empty(vectors.shape, dtype=np.int8)
        scales = np.empty(vectors.shape[0], dtype=np.float32)
        for start in range(0, vectors.shape[0], _ASSIGN_CHUNK):
            stop = start + _ASSIGN_CHUNK
            residual = vectors[start:stop] - self.centroids[cids[start:stop]]
            scale = np.abs(residual).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            residuals[start:stop] = np.rint(residual / scale[:, None])
            scales[start:stop] = scale
        return residuals, scales

    def decode_int8(self, cids: npt.NDArray[np.integer], residuals: I8, scales: F32) -> F32:  # type: ignore[type-arg]
        """Vectors from centroid ids and int8 residuals (the inverse of :meth:`encode_int8`)."""
        vectors = residuals.astype(np.float32)
        vectors *= scales[:, None]
        vectors += self.centroids[cids]
        return vectors

    def _pack(self, buckets: U8) -> U8:
        padded_dim = self.code_bytes * self.values_per_byte
        if padded_dim != self.dim:
            buckets = np.pad(buckets, ((0, 0), (0, padded_dim - self.dim)))
        grouped = buckets.reshape(buckets.shape[0], self.code_bytes, self.values_per_byte).astype(np.uint8)
        packed = np.zeros((buckets.shape[0], self.code_bytes), dtype=np.uint8)
        for i in range(self.values_per_byte):
            packed |= grouped[:, :, i] << np.uint8(i * self.nbits)
        return packed

    def _decode_table(self) -> F32:
        """``table[b * 256 + byte]`` = the ``values_per_byte`` decoded residual values of byte position
        ``b``."""
        padded_dim = self.code_bytes * self.values_per_byte
        weights = np.zeros((padded_dim, 2**self.nbits), dtype=np.float32)
        weights[: self.dim] = self.weights
        byte = np.arange(256)
        mask = 2**self.nbits - 1
        table = np.empty((self.code_bytes, 256, self.values_per_byte), dtype=np.float32)
        for i in range(self.values_per_byte):
            bucket = (byte >> (i * self.nbits)) & mask
            dims = np.arange(self.code_bytes) * self.values_per_byte + i
            table[:, :, i] = weights[dims][:, bucket]
        return table.reshape(self.code_bytes * 256, self.values_per_byte)

    def decode_residuals(self, codes: U8) -> F32:
        """The decoded residuals ``(n, dim)`` of packed codes."""
        index = codes.astype(np.intp) + (np.arange(self.code_bytes, dtype=np.intp) * 256)
        return np.take(self._lut, index, axis=0).reshape(codes.shape[0], -1)[:, : self.dim]

    def decode(self, cids: npt.NDArray[np.integer], codes: U8) -> F32:  # type: ignore[type-arg]
        """Approximate vectors from centroid ids and residual codes."""
        vectors = self.decode_residuals(codes)
        vectors += self.centroids[cids]
        return vectors

    # -- persistence -

    def save(self, path: Path) -> None:
        """Write to ``path`` (an ``.npz``); the caller makes it atomic."""
        with open(path, "wb") as handle:
            np.savez(
                handle,
                coarse=self.coarse,
                centroids=self.centroids,
                cell_offsets=self.cell_offsets,
                cutoffs=self.cutoffs,
                weights=self.weights,
                nbits=np.asarray(self.nbits),
            )

    @classmethod
    def load(cls, path: Path) -> Codebook:
        """Read a codebook written by :meth:`save`."""
        try:
            with np.load(path) as data:
                return cls(
                    coarse=data["coarse"],
                    centroids=data["centroids"],
                    cell_offsets=data["cell_offsets"],
                    cutoffs=data["cutoffs"],
                    weights=data["weights"],
                    nbits=int(data["nbits"]),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise StoreError(f"{path}: unreadable codebook: {exc}") from exc


def _nearest(vectors: F32, centres: F32, centre_norms: F32) -> npt.NDArray[np.int64]:
    """Index of the nearest centre (L2) of each vector."""
    distances = centre_norms[None, :] - 2.0 * (vectors @ centres.T)
    return np.asarray(distances.argmin(axis=1), dtype=np.int64)
