"""The HTTP service: ``create_app(settings)`` assembles the routers, API-key auth and error mapping."""

from __future__ import annotations

import secrets

from fastapi import Depends, FastAPI, HTTPException, Request

from polymodal.config import Settings, get_settings
from polymodal.server.errors import install_error_handlers
from polymodal.server.extract_router import extract_router


def _auth(settings: Settings):  # type: ignore[no-untyped-def]
    keys = [k.get_secret_value() for k in settings.server_api_keys]

    async def check(request: Request) -> None:
        if not keys:
            return
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip()
        if not any(secrets.compare_digest(token, key) for key in keys):
            raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})

    return check


def create_app(settings: Settings | None = None) -> FastAPI:
    """The polymodal service (OpenAPI at /docs)."""
    settings = settings or get_settings()
    from polymodal import __version__

    app = FastAPI(title="polymodal", version=__version__)
    install_error_handlers(app)

    @app.get("/healthz", tags=["meta"])
    async def health() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok"}

    app.include_router(extract_router(settings), dependencies=[Depends(_auth(settings))])
    return app


__all__ = ["create_app"]
