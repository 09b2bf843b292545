"""CLI for visual document retrieval: ``index``, ``search``, ``ask`` and ``eval retrieval``.

No business logic here: each command parses options, calls :mod:`polymodal.pipelines.retrieval` and prints.
The lead's app mounts these with :func:`register` and ``eval_app`` (as ``polymodal eval``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from polymodal.errors import PolymodalError

DEFAULT_INDEX = Path("polymodal-index")
eval_app = typer.Typer(help="Evaluate pipelines against labelled data.", no_args_is_help=True)
_out = Console()
_err = Console(stderr=True)

IndexOption = Annotated[Path, typer.Option("--index", help="Index directory.")]


def _fail(exc: PolymodalError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def parse_filters(values: list[str] | None) -> dict[str, Any] | None:
    """``["document=a.pdf", "page=3"]`` -> ``{"document": "a.pdf", "page": 3}`` (digits become ints)."""
    if not values:
        return None
    result: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--filter")
        result[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value
    return result


def index_command(
    paths: Annotated[list[Path], typer.Argument(help="PDFs, images or folders to index.")],
    index: IndexOption = DEFAULT_INDEX,
    model: Annotated[
        str | None, typer.Option("--model", help="Retrieval model id (default: minilm, offline).")
    ] = None,
    sync: Annotated[bool, typer.Option("--sync", help="Remove indexed files no longer among PATHS.")] = False,
    vectors: Annotated[
        str | None, typer.Option("--vectors", help="Vector store of a new index, e.g. qdrant:URL/collection.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Index PDFs and images page by page (resumable; unchanged files are skipped)."""
    from polymodal.config import get_settings
    from polymodal.pipelines.retrieval import ingest

    limits = get_settings().limits()
    started = time.monotonic()
    pages = 0
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:.0f} pages"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=_err,
        disable=as_json,
        transient=False,
    ) as progress:
        task = progress.add_task("indexing", total=None, rate="")

        def on_progress(document: str, done: int) -> None:
            nonlocal pages
            pages += done
            rate = pages / max(time.monotonic() - started, 1e-9)
            progress.update(task, description=document, advance=done, rate=f"{rate:.2f} pages/s")

        try:
            summary = ingest(
                paths,
                index,
                model,
                sync=sync,
                vectors=vectors,
                batch_size=batch_size,
                limits=limits,
                on_progress=on_progress,
            )
        except PolymodalError as exc:
            raise _fail(exc) from exc
        progress.update(task, description="done")
    if as_json:
        _out.print_json(json.dumps(summary.to_dict()))
        return
    typer.echo(
        f"{summary.documents} documents: {summary.pages_embedded} pages embedded "
        f"({summary.pages_per_second:.2f} pages/s), {summary.pages_skipped} already indexed, "
        f"{summary.unchanged} unchanged, {len(summary.failed)} failed, {len(summary.removed)} removed "
        f"in {summary.seconds:.1f} s"
    )
    for failure in summary.failed:
        typer.echo(f"skipped {failure.document}: {failure.reason}", err=True)


def search_command(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    index: IndexOption = DEFAULT_INDEX,
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="How many pages.")] = 5,
    filters: Annotated[
        list[str] | None, typer.Option("--filter", help="KEY=VALUE payload filter (repeatable).")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Override the index's model.")] = None,
    explain: Annotated[
        Path | None,
        typer.Option("--explain", help="Write a similarity map PNG of the top hit (visual models)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as a JSON list.")] = False,
) -> None:
    """Find the pages that best match a query."""
    from polymodal.pipelines.retrieval import RetrievalIndex

    try:
        with RetrievalIndex(index, model, create=False) as opened:
            hits = opened.search(query, k, filter=parse_filters(filters))
            if explain is not None and hits:
                from polymodal.pipelines._retrieval_explain import explain_hit

                explain_hit(query, hits[0], opened.embedder, explain)
    except PolymodalError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps([hit.to_dict() for hit in hits], indent=2))
        return
    table = Table("score", "document", "page", "thumbnail")
    for hit in hits:
        table.add_row(f"{hit.score:.4f}", hit.document, str(hit.page), hit.thumbnail or "")
    _out.print(table)
    if explain is not None and hits:
        typer.echo(f"similarity map of {hits[0].label}: {explain}")


def ask_command(
    question: Annotated[str, typer.Argument(help="The question.")],
    index: IndexOption = DEFAULT_INDEX,
    model: Annotated[
        str | None, typer.Option("--model", help="Chat model id (default from settings).")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="Pages to show the model.")] = 3,
    filters: Annotated[list[str] | None, typer.Option("--filter", help="KEY=VALUE payload filter.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print answer and citations as JSON.")] = False,
) -> None:
    """Answer a question from the indexed pages, citing them like [report.pdf p.12]."""
    from polymodal.backends.registry import load_chat_model
    from polymodal.config import get_settings
    from polymodal.pipelines.retrieval import ask

    settings = get_settings()
    try:
        chat = load_chat_model(model or settings.default_model, settings)
        answer = ask(question, chat, index, k=k, filter=parse_filters(filters))
    except PolymodalError as exc:
        raise _fail(exc) from exc
    if as_json:
        payload = {
            "answer": answer.answer,
            "answerable": answer.answerable,
            "citations": [{"document": c.document, "page": c.page} for c in answer.citations],
            "pages": [hit.to_dict() for hit in answer.pages],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(answer.answer)
    if answer.citations:
        typer.echo("sources: " + ", ".join(f"[{c.label}]" for c in answer.citations))


@eval_app.command("retrieval")
def eval_retrieval_command(
    queries: Annotated[
        Path, typer.Option("--queries", help="JSONL {query, document, page} or ViDoRe queries.")
    ],
    index: IndexOption = DEFAULT_INDEX,
    qrels: Annotated[
        Path | None, typer.Option("--qrels", help="ViDoRe qrels (query-id, corpus-id, score).")
    ] = None,
    corpus: Annotated[
        Path | None, typer.Option("--corpus", help="ViDoRe corpus-id -> document/page map.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Override the index's model.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
) -> None:
    """nDCG@5/10, recall@1/5/10 and MRR@10 of an index on labelled queries."""
    from polymodal.pipelines.retrieval import RetrievalIndex
    from polymodal.pipelines.retrieval_eval import evaluate, load_queries

    try:
        labelled = load_queries(queries, qrels=qrels, corpus=corpus)
        with RetrievalIndex(index, model, create=False) as opened:
            report = evaluate(
                labelled,
                lambda q, k: [(h.document, h.page) for h in opened.search(q, k)],
                recall_ks=(1, 5, 10),
            )
    except PolymodalError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
        return
    table = Table("metric", "value")
    for key, value in report.to_dict().items():
        table.add_row(key, f"{value}")
    _out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``index``, ``search`` and ``ask`` to ``app`` (``eval_app`` is mounted separately)."""
    app.command("index")(index_command)
    app.command("search")(search_command)
    app.command("ask")(ask_command)


__all__ = ["eval_app", "parse_filters", "register"]
