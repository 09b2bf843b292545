"""``polymodal serve``: run the HTTP service (FastAPI + OpenAPI at /docs)."""

from __future__ import annotations

import typer

from polymodal.config import get_settings


def serve_command(
    host: str = typer.Option("127.0.0.1", help="Interface to bind; use 0.0.0.0 to serve the network."),
    port: int = typer.Option(8080, min=1, max=65535),
) -> None:
    """Serve extraction (and the other pipelines' routes) over HTTP."""
    import uvicorn

    from polymodal.server.app import create_app

    uvicorn.run(create_app(get_settings()), host=host, port=port)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command("serve")(serve_command)


__all__ = ["register", "serve_command"]
