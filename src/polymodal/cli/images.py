"""CLI for cross-modal image search: ``polymodal images index | search | dedup | classify | reindex``.

No business logic here: each command parses options, calls :mod:`polymodal.pipelines.crossmodal` and prints
(a table, ``--json`` for scripts, or ``--html out.html`` for a gallery). The lead's app mounts ``images_app``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from polymodal.errors import PolymodalError

images_app = typer.Typer(
    help="Search images by text or by image, find duplicates, classify.", no_args_is_help=True
)
_out = Console()
_err = Console(stderr=True)

IndexOption = Annotated[Path, typer.Option("--index", help="Image index directory.")]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", help="Embedder id, e.g. siglip:/models/siglip2-base-patch16-224 (default: the index's)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
HtmlOption = Annotated[Path | None, typer.Option("--html", help="Also write a static HTML gallery here.")]
DEFAULT_INDEX = Path("polymodal-images")


def _fail(exc: PolymodalError) -> typer.Exit:
    _err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


def _progress(description: str, *, enabled: bool) -> Progress:
    return Progress(
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_err,
        disable=not enabled,
    )


def _print_summary(summary: Any, as_json: bool) -> None:
    data = {
        "found": summary.found,
        "indexed": summary.indexed,
        "unchanged": summary.unchanged,
        "failed": [{"path": p, "reason": r} for p, r in summary.failed],
        "removed": summary.removed,
        "seconds": round(summary.seconds, 2),
    }
    if as_json:
        _out.print_json(json.dumps(data))
        return
    _out.print(
        f"{summary.indexed} indexed, {summary.unchanged} unchanged, {len(summary.failed)} failed "
        f"of {summary.found} files in {summary.seconds:.1f}s"
    )
    for path, reason in summary.failed:
        _err.print(f"[yellow]skipped[/yellow] {path}: {reason}")


@images_app.command("index")
def index_command(
    paths: Annotated[list[Path], typer.Argument(help="Images or folders (searched recursively).")],
    index: IndexOption = DEFAULT_INDEX,
    model: ModelOption = None,
    vectors: Annotated[
        str,
        typer.Option(
            "--vectors", help="Vector store of a new index: 'vectors' (embedded) or qdrant:URL/NAME."
        ),
    ] = "vectors",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    sync: Annotated[bool, typer.Option("--sync", help="Remove indexed images whose files are gone.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Index images (resumable; unchanged files are skipped, unreadable ones recorded and skipped)."""
    from polymodal.config import get_settings
    from polymodal.pipelines.crossmodal import ImageLibrary

    try:
        with (
            ImageLibrary(index, model, vectors=vectors) as library,
            _progress("indexing", enabled=not as_json) as bar,
        ):
            task = bar.add_task("indexing", total=None)
            summary = library.index(
                paths,
                batch_size=batch_size,
                limits=get_settings().limits(),
                sync=sync,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except PolymodalError as exc:
        raise _fail(exc) from exc
    _print_summary(summary, as_json)


@images_app.command("search")
def search_command(
    text: Annotated[str | None, typer.Argument(help="What to look for, in words.")] = None,
    image: Annotated[
        Path | None, typer.Option("--image", help="Search with this image instead of text.")
    ] = None,
    index: IndexOption = DEFAULT_INDEX,
    model: ModelOption = None,
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="How many hits.")] = 10,
    as_json: JsonOption = False,
    html: HtmlOption = None,
) -> None:
    """Find the images closest to a text or to an image."""
    from polymodal.pipelines.crossmodal import ImageLibrary

    if (text is None) == (image is None):
        raise typer.BadParameter("give either TEXT or --image FILE")
    try:
        with ImageLibrary(index, model, create=False, read_only=True) as library:
            hits = library.search(text, k) if text is not None else library.search_image(image, k)  # type: ignore[arg-type]
    except PolymodalError as exc:
        raise _fail(exc) from exc
    query = text if text is not None else f"image {image}"
    if html is not None:
        from polymodal.pipelines._gallery import GalleryItem, GallerySection, write_gallery

        items = [GalleryItem(h.path, h.score, f"#{n}") for n, h in enumerate(hits, 1)]
        write_gallery(html, f"Search: {query}", [GallerySection(query, items)])
    if as_json:
        _out.print_json(json.dumps([h.as_dict() for h in hits]))
        return
    table = Table("rank", "score", "path", title=f"top {len(hits)} for {query!r}")
    for n, hit in enumerate(hits, 1):
        table.add_row(str(n), f"{hit.score:.4f}", hit.path)
    _out.print(table)


@images_app.command("dedup")
def dedup_command(
    index: IndexOption = DEFAULT_INDEX,
    threshold: Annotated[
        float, typer.Option("--threshold", min=-1.0, max=1.0, help="Cosine similarity.")
    ] = 0.95,
    model: ModelOption = None,
    as_json: JsonOption = False,
    html: HtmlOption = None,
) -> None:
    """Groups of near-duplicate images (similarity at or above the threshold)."""
    from polymodal.pipelines.crossmodal import ImageLibrary

    try:
        with ImageLibrary(index, model, create=False, read_only=True) as library:
            groups = library.dedup(threshold)
    except PolymodalError as exc:
        raise _fail(exc) from exc
    if html is not None:
        from polymodal.pipelines._gallery import GalleryItem, GallerySection, write_gallery

        sections = [
            GallerySection(
                f"group {n} ({len(g.paths)} images)",
                [GalleryItem(p, s) for p, s in zip(g.paths, g.scores, strict=True)],
            )
            for n, g in enumerate(groups, 1)
        ]
        write_gallery(html, f"Near-duplicates (threshold {threshold})", sections)
    if as_json:
        _out.print_json(json.dumps([{"paths": g.paths, "scores": g.scores} for g in groups]))
        return
    if not groups:
        _out.print(f"no near-duplicates at threshold {threshold}")
    for n, group in enumerate(groups, 1):
        _out.print(f"[bold]group {n}[/bold]")
        for path, score in zip(group.paths, group.scores, strict=True):
            _out.print(f"  {score:.4f}  {path}")


@images_app.command("classify")
def classify_command(
    labels: Annotated[str, typer.Option("--labels", help="Comma-separated labels, e.g. cat,dog,car.")],
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Images to classify (default: every indexed image).")
    ] = None,
    index: IndexOption = DEFAULT_INDEX,
    model: ModelOption = None,
    template: Annotated[
        str, typer.Option("--template", help="Prompt per label; {} is the label.")
    ] = "a photo of {}.",
    as_json: JsonOption = False,
    html: HtmlOption = None,
) -> None:
    """Zero-shot classification against a list of labels."""
    from polymodal.pipelines.crossmodal import ImageLibrary

    if "{}" not in template:
        raise typer.BadParameter("the template must contain {} where the label goes", param_hint="--template")
    try:
        with ImageLibrary(index, model, create=False, read_only=True) as library:
            results = library.classify(labels.split(","), list(paths) if paths else None, template=template)
    except PolymodalError as exc:
        raise _fail(exc) from exc
    if html is not None:
        from polymodal.pipelines._gallery import GalleryItem, GallerySection, write_gallery

        by_label: dict[str, list[GalleryItem]] = {}
        for result in results:
            label, score, prob = result.labels[0]
            by_label.setdefault(label, []).append(
                GalleryItem(result.path, prob, f"{label} (cos {score:.3f})")
            )
        write_gallery(
            html, "Zero-shot classification", [GallerySection(lbl, items) for lbl, items in by_label.items()]
        )
    if as_json:
        data = [
            {
                "path": r.path,
                "label": r.best,
                "labels": [{"label": lbl, "score": s, "probability": p} for lbl, s, p in r.labels],
            }
            for r in results
        ]
        _out.print_json(json.dumps(data))
        return
    table = Table("path", "label", "probability", "runner-up")
    for r in results:
        runner = r.labels[1][0] if len(r.labels) > 1 else ""
        table.add_row(r.path, r.best, f"{r.labels[0][2]:.3f}", runner)
    _out.print(table)


@images_app.command("reindex")
def reindex_command(
    index: IndexOption = DEFAULT_INDEX,
    model: ModelOption = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    as_json: JsonOption = False,
) -> None:
    """Rebuild the index from its source images (e.g. with another --model); swapped in when complete."""
    from polymodal.config import get_settings
    from polymodal.pipelines.crossmodal import reindex

    try:
        with _progress("reindexing", enabled=not as_json) as bar:
            task = bar.add_task("reindexing", total=None)
            summary = reindex(
                index,
                model,
                batch_size=batch_size,
                limits=get_settings().limits(),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except PolymodalError as exc:
        raise _fail(exc) from exc
    _print_summary(summary, as_json)


__all__ = ["images_app"]
