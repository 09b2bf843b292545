"""Batch extraction: many documents, bounded concurrency, a rate limit, a progress bar, resumable.

Every input ends as exactly one record, in ``results.jsonl`` (accepted) or ``rejects.jsonl`` (rejected, with
reasons). Finished documents are cached by content hash (with the model, schema, prompt and options), so a
second run over the same folder makes no provider call for them. Unreadable inputs and transient provider
failures are rejected but not cached: they are tried again next run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from polymodal.backends.base import ChatModel, Completion, Delta, GenerateOptions, OutputSchema
from polymodal.backends.messages import Message
from polymodal.config import Settings, get_settings
from polymodal.errors import BackendError, ErrorCategory, InputError
from polymodal.media.document import iter_sources
from polymodal.media.limits import Limits
from polymodal.pipelines._extract_cache import ResultCache
from polymodal.pipelines._progress import BatchProgress
from polymodal.pipelines.extract import (
    PROMPT_VERSION,
    ExtractionResult,
    ExtractOptions,
    close_if_owned,
    extract_pages,
    model_id,
    render_pages,
    resolve_model,
)

#: Errors after which every further call would fail the same way: the batch stops calling the model.
FATAL_CATEGORIES = frozenset(
    {ErrorCategory.AUTH, ErrorCategory.PERMISSION, ErrorCategory.QUOTA, ErrorCategory.NOT_FOUND}
)


class RateLimiter:
    """At most ``rate`` calls per second, evenly spaced (``None`` = unlimited)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 0.0 if not rate else 1.0 / rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        """Sleep until the next call may start."""
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class _RateLimitedModel:
    """A ChatModel proxy that waits for the limiter before every call (each re-ask counts)."""

    def __init__(self, inner: ChatModel, limiter: RateLimiter) -> None:
        self.inner = inner
        self.limiter = limiter
        self.provider = inner.provider
        self.model = inner.model
        self.capabilities = inner.capabilities

    async def generate(
        self,
        messages: Sequence[Message],
        schema: OutputSchema | type[BaseModel] | dict[str, Any] | None = None,
        options: GenerateOptions | None = None,
    ) -> Completion:
        await self.limiter.wait()
        return await self.inner.generate(messages, schema, options)

    async def stream(
        self, messages: Sequence[Message], options: GenerateOptions | None = None
    ) -> AsyncIterator[Delta]:
        await self.limiter.wait()
        async for delta in self.inner.stream(messages, options):
            yield delta


@dataclass
class BatchSummary:
    """What a batch run did."""

    total: int = 0
    accepted: int = 0
    rejected: int = 0
    cached: int = 0
    model_calls_made: bool = False
    seconds: float = 0.0
    results_path: Path | None = None
    rejects_path: Path | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pages_per_s(self) -> float:
        """Documents' pages processed per second of wall time."""
        pages = sum(int(r.get("pages") or 0) for r in self.records)
        return pages / self.seconds if self.seconds else 0.0


def hash_file(path: Path, limits: Limits) -> str:
    """sha256 of a file, refusing files over ``limits.max_bytes`` (raises InputError)."""
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise InputError(str(path), f"file is {size} bytes", limit=f"max_bytes={limits.max_bytes}")
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError as exc:
        raise InputError(str(path), f"cannot read file: {exc.strerror or exc}") from exc


def cache_key(content_hash: str, chat: ChatModel, schema: type[BaseModel], options: ExtractOptions) -> str:
    """Everything that determines an extraction's outcome, hashed."""
    parts = {
        "content": content_hash,
        "model": model_id(chat),
        "schema": schema.model_json_schema(),
        "prompt": PROMPT_VERSION,
        "reasks": options.max_reasks,
        "evidence": options.evidence,
        "instructions": options.instructions,
        "max_tokens": options.generate.max_tokens,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _rejected(source: str, error: Exception, *, retryable: bool, model: str = "") -> dict[str, Any]:
    return ExtractionResult(
        source=source, status="rejected", errors=[str(error)], model=model, retryable=retryable
    ).to_json()


class _Run:
    """State of one batch run, shared by its workers."""

    def __init__(
        self,
        chat: ChatModel,
        schema: type[BaseModel],
        cache: ResultCache,
        limits: Limits,
        options: ExtractOptions,
        retry_rejects: bool,
    ) -> None:
        self.chat = chat
        self.schema = schema
        self.cache = cache
        self.limits = limits
        self.options = options
        self.retry_rejects = retry_rejects
        self.fatal: BackendError | None = None
        self.cached = 0
        self.called = False

    async def one(self, path: Path) -> dict[str, Any]:
        source = str(path)
        try:
            content_hash = await asyncio.to_thread(hash_file, path, self.limits)
        except InputError as exc:
            return _rejected(source, exc, retryable=True)
        key = cache_key(content_hash, self.chat, self.schema, self.options)
        hit = self.cache.get(key)
        if hit is not None and (hit["status"] == "accepted" or not self.retry_rejects):
            self.cached += 1
            return {**hit, "source": source}
        if self.fatal is not None:
            return _rejected(source, self.fatal, retryable=True, model=model_id(self.chat))
        caps = self.chat.capabilities
        try:
            _, pages = await asyncio.to_thread(
                render_pages, path, self.limits, caps.max_image_pixels, caps.max_images
            )
        except InputError as exc:
            return _rejected(source, exc, retryable=True)
        try:
            self.called = True
            result = await extract_pages(
                pages, self.schema, self.chat, source=source, content_hash=content_hash, options=self.options
            )
        except BackendError as exc:
            if exc.category in FATAL_CATEGORIES:
                self.fatal = exc
            return _rejected(source, exc, retryable=True, model=model_id(self.chat))
        record = result.to_json()
        self.cache.put(key, record)
        return record


async def aextract_many(
    sources: Iterable[str | os.PathLike[str]],
    schema: type[BaseModel],
    model: str | ChatModel | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    concurrency: int = 4,
    rate_limit: float | None = None,
    retry_rejects: bool = False,
    settings: Settings | None = None,
    limits: Limits | None = None,
    options: ExtractOptions | None = None,
    progress: bool | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> BatchSummary:
    """Extract every file (folders are expanded) with ``concurrency`` documents in flight.

    Writes ``results.jsonl`` and ``rejects.jsonl`` under ``out_dir`` (default ``./polymodal-out``) and a
    result cache beside them; ``on_record`` sees each record as it completes.
    """
    started = time.perf_counter()
    settings = settings or get_settings()
    limits = limits or settings.limits()
    options = options or ExtractOptions()
    out = Path(out_dir or "polymodal-out")
    out.mkdir(parents=True, exist_ok=True)
    paths, missing = _expand(sources)
    inner = resolve_model(model, settings)
    chat: ChatModel = _RateLimitedModel(inner, RateLimiter(rate_limit))
    run = _Run(chat, schema, ResultCache(out / "extract-cache.sqlite"), limits, options, retry_rejects)
    try:
        final = await _run_all(run, paths, missing, out, concurrency, progress, on_record)
    finally:
        run.cache.close()
        await close_if_owned(inner, model)
    accepted = sum(r["status"] == "accepted" for r in final)
    return BatchSummary(
        total=len(final),
        accepted=accepted,
        rejected=len(final) - accepted,
        cached=run.cached,
        model_calls_made=run.called,
        seconds=time.perf_counter() - started,
        results_path=out / "results.jsonl",
        rejects_path=out / "rejects.jsonl",
        records=final,
    )


async def _run_all(
    run: _Run,
    paths: list[Path],
    missing: list[dict[str, Any]],
    out: Path,
    concurrency: int,
    progress: bool | None,
    on_record: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    """Process every path with ``concurrency`` workers; write both JSONL files; records in input order."""
    records: list[dict[str, Any] | None] = [None] * len(paths)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(paths)):
        queue.put_nowait(i)
    show = sys.stderr.isatty() if progress is None else progress
    results_path, rejects_path = out / "results.jsonl", out / "rejects.jsonl"
    with (
        BatchProgress(len(paths) + len(missing), enabled=show) as bar,
        _JsonlPair(results_path, rejects_path) as sink,
    ):

        def finish(record: dict[str, Any]) -> None:
            sink.write(record)
            bar.advance(record["status"] == "accepted")
            if on_record is not None:
                on_record(record)

        for miss in missing:
            finish(miss)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                records[i] = await run.one(paths[i])
                finish(records[i])  # type: ignore[arg-type]

        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(paths) or 1)))))
    final = missing + [r for r in records if r is not None]
    _rewrite(results_path, [r for r in final if r["status"] == "accepted"])
    _rewrite(rejects_path, [r for r in final if r["status"] != "accepted"])
    return final


def _expand(sources: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Files to process, plus reject records for paths that do not exist (the run goes on)."""
    paths: list[Path] = []
    missing: list[dict[str, Any]] = []
    for source in sources:
        try:
            paths.extend(iter_sources([source]))
        except InputError as exc:
            missing.append(_rejected(str(source), exc, retryable=True))
    return paths, missing


class _JsonlPair:
    """results.jsonl + rejects.jsonl opened fresh for a run; each record is flushed as it lands."""

    def __init__(self, results: Path, rejects: Path) -> None:
        self.paths = (results, rejects)

    def __enter__(self) -> _JsonlPair:
        self.handles = [p.open("w", encoding="utf-8") for p in self.paths]
        return self

    def write(self, record: dict[str, Any]) -> None:
        handle = self.handles[0 if record["status"] == "accepted" else 1]
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.close()


def _rewrite(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace a JSONL file atomically with records in input order."""
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def extract_many(
    sources: Iterable[str | os.PathLike[str]],
    schema: type[BaseModel],
    model: str | ChatModel | None = None,
    **kwargs: Any,
) -> BatchSummary:
    """Blocking :func:`aextract_many`."""
    return asyncio.run(aextract_many(sources, schema, model, **kwargs))


__all__ = [
    "FATAL_CATEGORIES",
    "BatchSummary",
    "RateLimiter",
    "aextract_many",
    "cache_key",
    "extract_many",
    "hash_file",
]
