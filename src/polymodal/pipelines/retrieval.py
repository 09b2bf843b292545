"""Visual document retrieval: PDFs and images -> page embeddings in a late-interaction index -> ranked pages.

Three lines::

    from polymodal.pipelines.retrieval import ingest, search
    ingest(["docs/"], "my-index")                       # offline default model, resumable, idempotent
    hits = search("how do I set the axis range?", "my-index", k=5)

An index directory holds ``retrieval.json`` (model, dimension, mode), ``manifest.sqlite`` (what is done),
``vectors/`` (the embedded engine; or a Qdrant collection named in the config), ``pages.sqlite`` (page
texts + BM25) and ``thumbnails/<point id>.png``. Ingestion follows the manifest protocol
(:mod:`polymodal.index.manifest`): a page is marked done only after the vector index and the page store are
durable, so a killed run resumes where it stopped and an unchanged file costs zero embedding calls.

Answers with page citations: :func:`polymodal.pipelines._retrieval_ask.ask` (re-exported here).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from polymodal.backends.embedding import MultiVectorEmbedder
from polymodal.errors import ConfigError, IndexError_, InputError, PolymodalError
from polymodal.index import Manifest, MultiVectorIndex, PayloadFilter, open_multivector_index
from polymodal.media.document import Document, Page, iter_sources
from polymodal.media.limits import DEFAULT_LIMITS, Limits
from polymodal.pipelines._retrieval_models import DEFAULT_INDEX_DIR, DEFAULT_MODEL, load_retriever
from polymodal.pipelines._retrieval_store import PageTextStore, reciprocal_rank_fusion

CONFIG_FILE = "retrieval.json"
THUMBNAIL_PIXELS = 120_000
#: Candidates taken from each ranking before fusion in hybrid mode (times k, at least this many).
FUSION_DEPTH = 50
ProgressCallback = Callable[[str, int], None]


@dataclass(frozen=True)
class FailedDocument:
    """A file that could not be indexed, with the reason (unreadable, encrypted, too big, embedding error)."""

    document: str
    reason: str


@dataclass
class IngestSummary:
    """What one :func:`ingest` run did."""

    documents: int = 0
    unchanged: int = 0
    pages_embedded: int = 0
    pages_skipped: int = 0
    failed: list[FailedDocument] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pages_per_second(self) -> float:
        """Embedded pages per wall-clock second."""
        return self.pages_embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for ``--json``)."""
        data = asdict(self)
        data["pages_per_second"] = round(self.pages_per_second, 3)
        return data


@dataclass(frozen=True)
class SearchHit:
    """One retrieved page: the file name as given, the 1-based page, the score and a cached thumbnail."""

    document: str
    page: int
    score: float
    thumbnail: str | None
    path: str
    point_id: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return asdict(self)

    @property
    def label(self) -> str:
        """How answers cite this page: ``report.pdf p.12``."""
        return f"{self.document} p.{self.page}"


@dataclass(frozen=True)
class RetrievalConfig:
    """What an index directory was built with (``retrieval.json``)."""

    model: str | None
    embedder_id: str
    dim: int
    hybrid: bool
    vectors: str = "vectors"

    @classmethod
    def read(cls, index_dir: Path) -> RetrievalConfig | None:
        """The saved config, or None for a new index directory."""
        path = index_dir / CONFIG_FILE
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise IndexError_(f"{path}: unreadable retrieval config: {exc}") from exc

    def write(self, index_dir: Path) -> None:
        """Save atomically."""
        index_dir.mkdir(parents=True, exist_ok=True)
        tmp = index_dir / f".{CONFIG_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, index_dir / CONFIG_FILE)


class RetrievalIndex:
    """An open retrieval index directory: config, manifest, vector index, page store and the embedder."""

    def __init__(
        self,
        index_dir: str | Path,
        embedder: MultiVectorEmbedder | str | None = None,
        *,
        hybrid: bool | None = None,
        vectors: str | None = None,
        create: bool = True,
    ) -> None:
        self.dir = Path(index_dir)
        saved = RetrievalConfig.read(self.dir)
        if saved is None and not create:
            raise ConfigError(f"{self.dir} is not a polymodal index", hint="build one with `polymodal index`")
        self.embedder, model_id, default_hybrid = _resolve_embedder(embedder, saved)
        if saved is not None:
            if saved.embedder_id != self.embedder.id or saved.dim != self.embedder.dim:
                raise ConfigError(
                    f"{self.dir} was built with {saved.model or saved.embedder_id} ({saved.dim}-d), not "
                    f"{model_id or self.embedder.id} ({self.embedder.dim}-d)",
                    hint=f"pass --model {saved.model} or use another --index directory"
                    if saved.model
                    else "use another --index directory",
                )
            self.config = saved
        else:
            use_hybrid = default_hybrid if hybrid is None else hybrid
            self.config = RetrievalConfig(
                model_id, self.embedder.id, self.embedder.dim, use_hybrid, vectors or "vectors"
            )
            self.config.write(self.dir)
        location = self.config.vectors
        target = location if location.startswith("qdrant:") else self.dir / location
        self.vectors: MultiVectorIndex = open_multivector_index(
            target, dim=self.config.dim, embedder_id=self.config.embedder_id
        )
        self.manifest = Manifest(self.dir / "manifest.sqlite")
        self.pages = PageTextStore(self.dir / "pages.sqlite")
        self.thumbnails = self.dir / "thumbnails"
        self.thumbnails.mkdir(exist_ok=True)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Flush and close everything. Idempotent."""
        self.vectors.close()
        self.manifest.close()
        self.pages.close()

    def __enter__(self) -> RetrievalIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- ingestion ----------------------------------------------------------------------------------------

    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        sync: bool = False,
        batch_size: int = 8,
        limits: Limits = DEFAULT_LIMITS,
        on_progress: ProgressCallback | None = None,
    ) -> IngestSummary:
        """Index every supported file under ``paths``; see :func:`ingest`."""
        started = time.monotonic()
        summary = IngestSummary()
        self._finish_interrupted_deletions()
        sources = _named_sources(paths)
        summary.documents = len(sources)
        for key, name in sources:
            if on_progress:
                on_progress(name, 0)
            try:
                self._ingest_document(key, name, summary, batch_size, limits, on_progress)
            except InputError as exc:
                self.manifest.mark_failed(
                    key, exc.reason if exc.limit is None else f"{exc.reason} ({exc.limit})"
                )
                summary.failed.append(FailedDocument(name, str(exc)))
        if sync:
            present = {key for key, _ in sources}
            for gone in self.manifest.removed(present):
                self._delete_points(self.manifest.forget(gone))
                summary.removed.append(gone)
        summary.seconds = time.monotonic() - started
        return summary

    def _ingest_document(
        self,
        key: str,
        name: str,
        summary: IngestSummary,
        batch_size: int,
        limits: Limits,
        on_progress: ProgressCallback | None,
    ) -> None:
        document = Document.open(key, limits=limits, name=name)
        plan = self.manifest.plan(key, document.content_hash, document.page_count)
        summary.pages_skipped += plan.already_done
        if plan.up_to_date:
            summary.unchanged += 1
            return
        if plan.delete:
            self._delete_points(plan.delete)
        todo = {item.number: item.point_id for item in plan.todo}
        if not todo:
            return
        batch: list[Page] = []
        pixels = getattr(self.embedder, "page_max_pixels", None)
        for page in document.iter_pages(max_pixels=pixels):
            if page.number in todo:
                batch.append(page)
            if len(batch) == batch_size:
                self._embed_and_store(key, name, batch, todo, summary, on_progress)
                batch = []
        if batch:
            self._embed_and_store(key, name, batch, todo, summary, on_progress)

    def _embed_and_store(
        self,
        key: str,
        name: str,
        pages: Sequence[Page],
        todo: dict[int, str],
        summary: IngestSummary,
        on_progress: ProgressCallback | None,
    ) -> None:
        ids = [todo[page.number] for page in pages]
        try:
            texts, vectors = _embed(self.embedder, pages)
        except PolymodalError as exc:
            if isinstance(exc, InputError):
                raise
            self.manifest.mark_failed(key, f"embedding failed: {exc}", point_ids=ids)
            summary.failed.append(FailedDocument(name, f"pages {pages[0].number}-{pages[-1].number}: {exc}"))
            return
        payloads = [{"document": name, "page": page.number, "path": key} for page in pages]
        for point_id, page in zip(ids, pages, strict=True):
            self._write_thumbnail(point_id, page)
        self.vectors.add(ids, vectors, payloads)
        self.pages.upsert(ids, texts, payloads)
        self.vectors.flush()  # durable first, then recorded as done
        self.manifest.mark_done(ids)
        summary.pages_embedded += len(ids)
        if on_progress:
            on_progress(name, len(ids))

    def _write_thumbnail(self, point_id: str, page: Page) -> None:
        target = self.thumbnails / f"{point_id}.png"
        if target.exists():
            return
        encoded = page.image.encode("PNG", max_pixels=THUMBNAIL_PIXELS)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(encoded.data)
        os.replace(tmp, target)

    def _delete_points(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        self.vectors.delete(ids)
        self.pages.delete(ids)
        self.vectors.flush()
        for point_id in ids:
            (self.thumbnails / f"{point_id}.png").unlink(missing_ok=True)
        self.manifest.confirm_deleted(ids)

    def _finish_interrupted_deletions(self) -> None:
        self._delete_points(self.manifest.pending_deletions())

    # -- search -------------------------------------------------------------------------------------------

    def search(self, query: str, k: int = 10, *, filter: PayloadFilter | None = None) -> list[SearchHit]:
        """The ``k`` best pages for ``query``; hybrid indexes fuse MaxSim and BM25 rankings (RRF)."""
        if k <= 0:
            return []
        query_vectors = self.embedder.embed_queries([query])[0]
        if not self.config.hybrid:
            hits = self.vectors.search(query_vectors, k=k, filter=filter)
            return [self._hit(h.id, h.score, h.payload) for h in hits]
        depth = max(k * 4, FUSION_DEPTH)
        dense = self.vectors.search(query_vectors, k=depth, filter=filter)
        lexical = self.pages.search(query, depth, filter=filter)
        payloads = {h.id: h.payload for h in lexical} | {h.id: h.payload for h in dense}
        fused = reciprocal_rank_fusion([[h.id for h in dense], [h.id for h in lexical]])
        return [self._hit(point_id, score, payloads[point_id]) for point_id, score in fused[:k]]

    def _hit(self, point_id: str, score: float, payload: dict[str, Any]) -> SearchHit:
        thumbnail = self.thumbnails / f"{point_id}.png"
        return SearchHit(
            document=str(payload.get("document", "")),
            page=int(payload.get("page", 0)),
            score=float(score),
            thumbnail=str(thumbnail) if thumbnail.exists() else None,
            path=str(payload.get("path", "")),
            point_id=point_id,
        )

    def page_text(self, point_id: str) -> str | None:
        """The text stored for a retrieved page (text layer or OCR)."""
        return self.pages.text(point_id)


def _resolve_embedder(
    embedder: MultiVectorEmbedder | str | None, saved: RetrievalConfig | None
) -> tuple[MultiVectorEmbedder, str | None, bool]:
    if embedder is None or isinstance(embedder, str):
        model_id = embedder or (saved.model if saved is not None else None) or DEFAULT_MODEL
        if saved is not None and saved.model is None and embedder is None:
            raise ConfigError(
                f"this index was built with a custom embedder ({saved.embedder_id})",
                hint="pass the same embedder object",
            )
        choice = load_retriever(model_id)
        return choice.embedder, choice.model_id, choice.hybrid
    return embedder, None, False


def _embed(embedder: MultiVectorEmbedder, pages: Sequence[Page]) -> tuple[list[str], list[Any]]:
    from polymodal.backends.sentence import TextPageEmbedder

    if isinstance(embedder, TextPageEmbedder):
        texts = embedder.page_texts(pages)
        return texts, list(embedder.embed_page_texts(texts))
    return [page.text or "" for page in pages], list(embedder.embed_pages(pages))


def _named_sources(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[str, str]]:
    """``(key, name)`` per file: key = absolute path (the manifest's id), name = the file name as given
    (relative to a folder argument, so ``docs/`` yields ``a.pdf`` and ``sub/b.pdf``)."""
    named: dict[str, str] = {}
    for raw in paths:
        root = Path(raw)
        for file in iter_sources([root]):
            key = str(file.resolve())
            name = file.relative_to(root).as_posix() if root.is_dir() else file.name
            named.setdefault(key, name)
    return list(named.items())


def ingest(
    paths: Iterable[str | os.PathLike[str]],
    index_dir: str | Path = DEFAULT_INDEX_DIR,
    embedder: MultiVectorEmbedder | str | None = None,
    *,
    sync: bool = False,
    hybrid: bool | None = None,
    vectors: str | None = None,
    batch_size: int = 8,
    limits: Limits = DEFAULT_LIMITS,
    on_progress: ProgressCallback | None = None,
) -> IngestSummary:
    """Index PDFs and images (files or folders) into ``index_dir``.

    ``embedder``: a retrieval model id (see :mod:`polymodal.pipelines._retrieval_models`; default ``minilm``)
    or any :class:`MultiVectorEmbedder`. Resumable and idempotent: unchanged files cost zero embedding calls,
    changed files are replaced, unreadable / encrypted / oversized files are recorded with the reason and
    skipped, and ``sync=True`` removes files no longer among ``paths``. ``vectors``: where vectors live for
    a new index (``"qdrant:http://host:6333/collection"``; default the embedded engine under ``index_dir``).
    ``on_progress(document, pages_done)`` is called as pages are stored.
    """
    with RetrievalIndex(index_dir, embedder, hybrid=hybrid, vectors=vectors) as index:
        return index.ingest(paths, sync=sync, batch_size=batch_size, limits=limits, on_progress=on_progress)


def search(
    query: str,
    index_dir: str | Path = DEFAULT_INDEX_DIR,
    embedder: MultiVectorEmbedder | str | None = None,
    *,
    k: int = 10,
    filter: PayloadFilter | None = None,
) -> list[SearchHit]:
    """The ``k`` best pages for ``query`` (embedder defaults to the one the index was built with)."""
    with RetrievalIndex(index_dir, embedder, create=False) as index:
        return index.search(query, k, filter=filter)


__all__ = [
    "DEFAULT_INDEX_DIR",
    "FailedDocument",
    "IngestSummary",
    "RetrievalConfig",
    "RetrievalIndex",
    "SearchHit",
    "ingest",
    "search",
]

# Answers with page citations live in their own module; re-exported here for the three-line API.
from polymodal.pipelines._retrieval_ask import Answer, Citation, ask, ask_async  # noqa: E402

__all__ += ["Answer", "Citation", "ask", "ask_async"]
