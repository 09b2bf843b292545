"""Cross-modal search over an image library: index photos, search them by text or by image, find
near-duplicates, classify zero-shot. Works with any :class:`~polymodal.backends.embedding.DenseEmbedder` and
any :class:`~polymodal.index.dense.base.DenseIndex`.

An image index directory holds ``images.json`` (model id, embedder id, dimension, where the vectors live),
``manifest.sqlite`` (what is done, what failed and why) and ``vectors/`` (the embedded dense index) unless the
vectors live in Qdrant. Ingestion follows the manifest protocol of :mod:`polymodal.index.manifest`: an image
is marked done only after its vector is durable, so an interrupted run resumes where it stopped, an unchanged
file costs nothing the second time, and an unreadable file is recorded with its reason while the run
continues::

    from polymodal.pipelines.crossmodal import ImageLibrary

    with ImageLibrary("photos.idx", "siglip:/models/siglip2-base-patch16-224") as library:
        library.index(["~/Pictures"])
        for hit in library.search("a red bicycle in the snow", k=5):
            print(hit.score, hit.path)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from polymodal.backends.embedding import DenseEmbedder
from polymodal.errors import BackendError, ConfigError, IndexError_, InputError, PolymodalError, StoreError
from polymodal.index import Manifest, PayloadFilter
from polymodal.index.dense import DenseHit, DenseIndex, open_dense_index
from polymodal.media.document import IMAGE_SUFFIXES, iter_sources
from polymodal.media.image import Image
from polymodal.media.limits import DEFAULT_LIMITS, Limits

CONFIG_FILE = "images.json"
#: ``(done, total)`` after each image; ingestion and reindexing report through it.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ImageHit:
    """One search result: the image path, its cosine similarity to the query and the stored payload."""

    path: str
    score: float
    id: str
    payload: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_hit(cls, hit: DenseHit) -> ImageHit:
        """Wrap an index hit (the payload carries the path)."""
        return cls(str(hit.payload.get("path", "")), hit.score, hit.id, hit.payload)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``path``, ``score``, ``id``, ``width``, ``height``)."""
        return {
            "path": self.path,
            "score": round(self.score, 6),
            "id": self.id,
            "width": self.payload.get("width"),
            "height": self.payload.get("height"),
        }


@dataclass(frozen=True)
class DuplicateGroup:
    """Near-duplicate images: ``paths[0]`` represents the group, ``scores[i]`` its cosine to ``paths[i]``."""

    paths: list[str]
    scores: list[float]


@dataclass(frozen=True)
class Classification:
    """Zero-shot labels of one image, best first: ``(label, cosine score, probability)``."""

    path: str
    labels: list[tuple[str, float, float]]

    @property
    def best(self) -> str:
        """The most likely label."""
        return self.labels[0][0]


@dataclass
class IndexSummary:
    """What one :meth:`ImageLibrary.index` run did."""

    found: int = 0
    indexed: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class LibraryConfig:
    """``images.json``: which model built the index and where its vectors are."""

    model: str
    embedder_id: str
    dim: int
    vectors: str = "vectors"

    @classmethod
    def read(cls, directory: Path) -> LibraryConfig | None:
        """The saved config, or None when ``directory`` is not an image index."""
        try:
            data = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StoreError(f"{directory / CONFIG_FILE}: unreadable: {exc}") from exc
        return cls(
            str(data["model"]),
            str(data["embedder_id"]),
            int(data["dim"]),
            str(data.get("vectors", "vectors")),
        )

    def write(self, directory: Path) -> None:
        """Save atomically."""
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{CONFIG_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        os.replace(tmp, directory / CONFIG_FILE)


def load_dense_embedder(model_id: str) -> DenseEmbedder:
    """The embedder a model id names: ``siglip:``, ``siglip2:``, ``clip:`` or ``openai-embeddings:``."""
    from polymodal.backends.registry import parse_model_id

    spec = parse_model_id(model_id)
    if spec.provider in ("siglip", "siglip2", "clip"):
        from polymodal.backends.siglip import create_embedder

        return create_embedder(spec)
    if spec.provider == "openai-embeddings":
        from polymodal.backends.openai_embeddings import create_embedder as create_remote
        from polymodal.config import get_settings

        # its ``dim`` is a lazily probed property, which mypy does not count as the protocol's attribute
        return cast(DenseEmbedder, create_remote(spec, get_settings()))
    raise ConfigError(
        f"no dense image/text embedder for provider {spec.provider!r} in {model_id!r}",
        hint="use siglip:/path/to/checkpoint, clip:/path/to/checkpoint or openai-embeddings:MODEL@URL",
    )


class ImageLibrary:
    """An image index directory opened with its embedder (see the module docstring).

    Args:
        index_dir: the directory (created when ``create``).
        embedder: a DenseEmbedder, a model id, or None to load the model the index was built with.
        vectors: for a new index, where the vectors live: ``"vectors"`` (embedded, inside the directory) or
            a Qdrant spec such as ``"qdrant:http://host:6333/photos"``.
        create: create the index when absent.
        read_only: open the vectors without taking the writer lock (search, dedup, classify).
    """

    def __init__(
        self,
        index_dir: str | Path,
        embedder: DenseEmbedder | str | None = None,
        *,
        vectors: str = "vectors",
        create: bool = True,
        read_only: bool = False,
        **index_options: Any,
    ) -> None:
        self.dir = Path(index_dir)
        saved = LibraryConfig.read(self.dir)
        if saved is None and (not create or read_only):
            raise ConfigError(
                f"{self.dir} is not an image index", hint="build one with `polymodal images index`"
            )
        if embedder is None:
            if saved is None:
                raise ConfigError(
                    "a new image index needs a model", hint="pass --model siglip:/path/to/checkpoint"
                )
            embedder = saved.model
        model_id = embedder if isinstance(embedder, str) else embedder.id
        if saved is not None and isinstance(embedder, str) and embedder == saved.model:
            model_id = saved.model
        self.embedder: DenseEmbedder = (
            load_dense_embedder(embedder) if isinstance(embedder, str) else embedder
        )
        if saved is None:
            saved = LibraryConfig(model_id, self.embedder.id, self.embedder.dim, vectors)
            saved.write(self.dir)
        elif saved.embedder_id != self.embedder.id or saved.dim != self.embedder.dim:
            raise IndexError_(
                f"{self.dir} was built with {saved.embedder_id} ({saved.dim}-d), not {self.embedder.id} "
                f"({self.embedder.dim}-d): search it with --model {saved.model}, or rebuild it with "
                f"`polymodal images reindex {self.dir} --model ...`"
            )
        self.config = saved
        target = saved.vectors if saved.vectors.startswith("qdrant:") else self.dir / saved.vectors
        if read_only and not saved.vectors.startswith("qdrant:"):
            index_options["read_only"] = True
        self.vectors: DenseIndex = open_dense_index(
            target, dim=saved.dim, embedder_id=saved.embedder_id, **index_options
        )
        self.manifest = Manifest(self.dir / "manifest.sqlite")

    def close(self) -> None:
        """Flush and close the vectors and the manifest. Idempotent."""
        self.vectors.close()
        self.manifest.close()

    def __enter__(self) -> ImageLibrary:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- ingestion -----------------------------------------------------------------------------------------

    def index(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        batch_size: int = 16,
        limits: Limits = DEFAULT_LIMITS,
        sync: bool = False,
        progress: ProgressCallback | None = None,
    ) -> IndexSummary:
        """Index every image under ``paths`` (folders recursively); resumable, idempotent, never stops on a
        bad file (it is recorded in the manifest and in the summary). ``sync`` also removes images whose
        files are gone."""
        started = time.monotonic()
        given = [Path(p).expanduser() for p in paths]
        files = [f for f in iter_sources(given) if f.suffix.lower() in IMAGE_SUFFIXES or f in given]
        summary = IndexSummary(found=len(files))
        self._finish_interrupted_deletions()
        pending: list[tuple[str, str, Image]] = []  # (document, point id, image)
        for number, path in enumerate(files, 1):
            document = str(path.resolve())
            try:
                self._plan_one(document, limits, pending, summary)
            except (InputError, StoreError) as exc:
                self.manifest.mark_failed(document, _reason(exc))
                summary.failed.append((document, _reason(exc)))
            if len(pending) >= batch_size:
                self._embed_and_store(pending, summary)
                pending = []
            if progress is not None:
                progress(number, len(files))
        if pending:
            self._embed_and_store(pending, summary)
        if sync:
            for gone in self.manifest.removed({str(f.resolve()) for f in files}):
                self._delete_points(self.manifest.forget(gone))
                summary.removed.append(gone)
        summary.seconds = time.monotonic() - started
        return summary

    def _plan_one(
        self, document: str, limits: Limits, pending: list[tuple[str, str, Image]], summary: IndexSummary
    ) -> None:
        from polymodal.index.manifest import content_hash_of

        plan = self.manifest.plan(document, content_hash_of(document), 1, kind="image")
        if plan.delete:
            self._delete_points(list(plan.delete))
        if not plan.todo:
            summary.unchanged += 1
            return
        image = Image.from_path(document, limits=limits)
        pending.append((document, plan.todo[0].point_id, image))

    def _embed_and_store(self, batch: list[tuple[str, str, Image]], summary: IndexSummary) -> None:
        try:
            vectors = self.embedder.embed_images([image for _, _, image in batch])
            good = batch
        except (InputError, BackendError) as exc:
            if isinstance(exc, BackendError) and not exc.is_permanent:
                raise
            good, rows = [], []  # isolate the bad image(s): embed one by one
            for item in batch:
                try:
                    rows.append(self.embedder.embed_images([item[2]])[0])
                    good.append(item)
                except (InputError, BackendError) as one:
                    if isinstance(one, BackendError) and not one.is_permanent:
                        raise
                    self.manifest.mark_failed(item[0], _reason(one))  # retried on the next run
                    summary.failed.append((item[0], _reason(one)))
            vectors = np.asarray(rows, dtype=np.float32).reshape(len(rows), self.config.dim)
        if not good:
            return
        payloads = [
            {"path": doc, "name": Path(doc).name, "width": im.width, "height": im.height}
            for doc, _, im in good
        ]
        self.vectors.add([pid for _, pid, _ in good], vectors, payloads)
        self.vectors.flush()
        self.manifest.mark_done([pid for _, pid, _ in good])
        summary.indexed += len(good)

    def _delete_points(self, ids: Sequence[str]) -> None:
        if ids:
            self.vectors.delete(list(ids))
            self.vectors.flush()
            self.manifest.confirm_deleted(ids)

    def _finish_interrupted_deletions(self) -> None:
        self._delete_points(self.manifest.pending_deletions())

    # -- queries -------------------------------------------------------------------------------------------

    def search(self, text: str, k: int = 10, *, filter: PayloadFilter | None = None) -> list[ImageHit]:
        """Images best matching a text (any language the model reads), best first."""
        query = self.embedder.embed_texts([text])[0]
        return [ImageHit.from_hit(h) for h in self.vectors.search(query, k, filter=filter)]

    def search_image(
        self, image: Image | str | os.PathLike[str], k: int = 10, *, filter: PayloadFilter | None = None
    ) -> list[ImageHit]:
        """Images most similar to an image (a path or an :class:`~polymodal.media.image.Image`)."""
        query = self.embedder.embed_images([Image.open(image)])[0]
        return [ImageHit.from_hit(h) for h in self.vectors.search(query, k, filter=filter)]

    def dedup(self, threshold: float = 0.95, *, neighbours: int = 10) -> list[DuplicateGroup]:
        """Groups of near-duplicate images (cosine >= ``threshold``, linked transitively), largest first."""
        if not -1.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be within -1..1, got {threshold}")
        ids = sorted(self.vectors.ids())
        parent = {i: i for i in ids}

        def root(x: str) -> str:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        best: dict[tuple[str, str], float] = {}
        for start in range(0, len(ids), 256):
            found, matrix = self.vectors.vectors(ids[start : start + 256])
            for pid, row in zip(found, matrix, strict=True):
                for hit in self.vectors.search(row, neighbours + 1):
                    if hit.id != pid and hit.score >= threshold and hit.id in parent:
                        best[(min(pid, hit.id), max(pid, hit.id))] = hit.score
                        parent[root(pid)] = root(hit.id)
        members: dict[str, list[str]] = {}
        for pid in ids:
            members.setdefault(root(pid), []).append(pid)
        groups = [sorted(m) for m in members.values() if len(m) > 1]
        paths = self.vectors.payloads([pid for g in groups for pid in g])
        out = []
        for group in groups:
            _, matrix = self.vectors.vectors(group)
            scores = (matrix @ matrix[0]).tolist()
            out.append(
                DuplicateGroup([str(paths[p].get("path", p)) for p in group], [round(s, 6) for s in scores])
            )
        return sorted(out, key=lambda g: (-len(g.paths), g.paths[0]))

    def classify(
        self,
        labels: Sequence[str],
        images: Sequence[Image | str | os.PathLike[str]] | None = None,
        *,
        template: str = "a photo of {}.",
        top: int | None = None,
    ) -> list[Classification]:
        """Zero-shot labels for ``images`` (default: every indexed image), from ``template`` prompts.

        Probabilities use the model's own calibration when it has one (SigLIP's sigmoid, CLIP's softmax).
        """
        clean = [label.strip() for label in labels if label.strip()]
        if not clean:
            raise ConfigError("classify needs at least one label", hint="--labels cat,dog,car")
        text = self.embedder.embed_texts([template.format(label) for label in clean])
        if images is None:
            ids = sorted(self.vectors.ids())
            found, matrix = self.vectors.vectors(ids)
            payloads = self.vectors.payloads(found)
            names = [str(payloads[i].get("path", i)) for i in found]
        else:
            opened = [Image.open(i) for i in images]
            matrix = self.embedder.embed_images(opened)
            names = [im.name for im in opened]
        scores = matrix @ text.T
        to_probability = getattr(self.embedder, "similarity_to_probability", None)
        probs = to_probability(scores) if callable(to_probability) else _softmax(scores * 100.0)
        out = []
        for name, row, prob in zip(names, scores, probs, strict=True):
            order = np.argsort(-row, kind="stable")[: top or len(clean)]
            out.append(
                Classification(
                    name, [(clean[j], round(float(row[j]), 6), round(float(prob[j]), 6)) for j in order]
                )
            )
        return out

    # -- maintenance ---------------------------------------------------------------------------------------

    def failures(self) -> list[tuple[str, str]]:
        """Images the manifest records as failed, with the reason."""
        return [(d.document, d.reason or "") for d in self.manifest.documents() if d.status == "failed"]


def reindex(
    index_dir: str | Path,
    embedder: DenseEmbedder | str | None = None,
    *,
    batch_size: int = 16,
    limits: Limits = DEFAULT_LIMITS,
    progress: ProgressCallback | None = None,
    **index_options: Any,
) -> IndexSummary:
    """Rebuild an embedded image index from its source files (with another model, or new engine settings).

    The new index is built beside the old one and swapped in only when complete; the old one keeps serving
    searches meanwhile, and an interrupted rebuild leaves it untouched.
    """
    directory = Path(index_dir)
    saved = LibraryConfig.read(directory)
    if saved is None:
        raise ConfigError(
            f"{directory} is not an image index", hint="build one with `polymodal images index`"
        )
    if saved.vectors.startswith("qdrant:"):
        raise ConfigError(
            "reindex rebuilds embedded indexes", hint="index into a new Qdrant collection instead"
        )
    with Manifest(directory / "manifest.sqlite") as manifest:
        sources = [d.document for d in manifest.documents() if d.status != "removed"]
    staging = directory.with_name(directory.name + ".reindex")
    shutil.rmtree(staging, ignore_errors=True)
    with ImageLibrary(staging, embedder or saved.model, **index_options) as fresh:
        summary = fresh.index(
            [s for s in sources if Path(s).exists()], batch_size=batch_size, limits=limits, progress=progress
        )
        summary.failed.extend((s, "file no longer exists") for s in sources if not Path(s).exists())
    retired = directory.with_name(directory.name + ".old")
    shutil.rmtree(retired, ignore_errors=True)
    os.replace(directory, retired)
    os.replace(staging, directory)
    shutil.rmtree(retired, ignore_errors=True)
    return summary


def _reason(exc: PolymodalError) -> str:
    if isinstance(exc, InputError):
        return exc.reason if exc.limit is None else f"{exc.reason} (limit: {exc.limit})"
    return str(exc)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float32)


__all__ = [
    "Classification",
    "DuplicateGroup",
    "ImageHit",
    "ImageLibrary",
    "IndexSummary",
    "LibraryConfig",
    "load_dense_embedder",
    "reindex",
]
