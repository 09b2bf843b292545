"""The ``polymodal`` command: one typer app; each command group lives in its own module."""

from __future__ import annotations

import logging
import sys

import typer

from polymodal.cli import extract as extract_cli
from polymodal.cli import retrieval as retrieval_cli
from polymodal.cli import serve as serve_cli
from polymodal.cli.images import images_app
from polymodal.cli.voice import voice_app
from polymodal.errors import ConfigError, PolymodalError

app = typer.Typer(
    name="polymodal",
    help="Multimodal systems in production: extraction, retrieval, search, voice, evals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
extract_cli.register(app)
retrieval_cli.register(app)
serve_cli.register(app)
app.add_typer(retrieval_cli.eval_app, name="eval")
app.add_typer(voice_app, name="voice")
app.add_typer(images_app, name="images")


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log retries and progress details."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def main() -> None:
    """Console entry point: polymodal errors become one clear line and an exit code, never a traceback."""
    try:
        app()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except PolymodalError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


__all__ = ["app", "main"]
