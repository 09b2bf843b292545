"""``polymodal extract``: documents -> validated JSON records (no business logic here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from polymodal.config import get_settings
from polymodal.pipelines.extract import ExtractOptions
from polymodal.pipelines.extract_batch import extract_many
from polymodal.schemas import resolve_schema


def extract_command(
    paths: list[Path] = typer.Argument(..., help="Files or folders (PDF, PNG, JPEG, WebP, TIFF, GIF, BMP)."),
    schema: str = typer.Option(
        ..., "--schema", "-s", help="invoice | receipt | module:Class | file.py:Class"
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model id, e.g. openai:gpt-5 (default: offline)."
    ),
    out: Path = typer.Option(
        Path("polymodal-out"), "--out", "-o", help="Where results.jsonl/rejects.jsonl go."
    ),
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, max=256, help="Documents in flight."),
    rate_limit: float | None = typer.Option(
        None, "--rate-limit", min=0.01, help="Max model calls per second."
    ),
    max_reasks: int = typer.Option(2, "--max-reasks", min=0, max=10, help="Re-asks with validation errors."),
    retry_rejects: bool = typer.Option(False, "--retry-rejects", help="Redo documents rejected last time."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON record per input on stdout."),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Show a progress bar on a terminal."
    ),
) -> None:
    """Extract each document into the schema; exit 0 if all were accepted, 1 if any was rejected."""
    settings = get_settings()
    model_class = resolve_schema(schema)

    def show(record: dict[str, Any]) -> None:
        if as_json:
            typer.echo(json.dumps(record, ensure_ascii=False))

    summary = extract_many(
        paths,
        model_class,
        model or settings.default_model,
        out_dir=out,
        concurrency=concurrency,
        rate_limit=rate_limit,
        retry_rejects=retry_rejects,
        settings=settings,
        options=ExtractOptions(max_reasks=max_reasks),
        progress=progress and sys.stderr.isatty(),
        on_record=show,
    )
    if not as_json:
        for record in summary.records:
            mark = "ok " if record["status"] == "accepted" else "REJECTED "
            detail = (
                json.dumps(record["data"], ensure_ascii=False)
                if record["data"]
                else "; ".join(record["errors"])
            )
            typer.echo(f"{mark}{record['source']}: {detail}")
    typer.echo(
        f"{summary.accepted} accepted, {summary.rejected} rejected ({summary.cached} from cache) in "
        f"{summary.seconds:.1f}s -> {summary.results_path}, {summary.rejects_path}",
        err=True,
    )
    raise typer.Exit(0 if summary.rejected == 0 else 1)


def register(app: typer.Typer) -> None:
    """Add ``extract`` to the root app."""
    app.command("extract")(extract_command)


__all__ = ["extract_command", "register"]
