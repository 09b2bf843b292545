"""A tiny harness for fake provider WebSocket servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response


@dataclass
class Session:
    """What one client connection sent (for assertions)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    text: list[dict[str, Any]] = field(default_factory=list)
    binary: list[bytes] = field(default_factory=list)
    close_code: int | None = None


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """An HTTP error response to a WebSocket handshake, with a JSON body like the provider's."""
    data = json.dumps(body).encode()
    all_headers = Headers(
        {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}
    )
    return Response(status, HTTPStatus(status).phrase, all_headers, data)


class FakeWsServer:
    """Base class: subclasses implement :meth:`check_handshake` and :meth:`serve_session`."""

    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self._server: Server | None = None
        self.url = ""

    def check_handshake(self, request: Request) -> Response | None:
        """Return an HTTP response to refuse the upgrade, or None to accept it."""
        return None

    async def serve_session(self, ws: ServerConnection, session: Session) -> None:
        """Speak the provider's protocol on one accepted connection."""
        raise NotImplementedError

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        return self.check_handshake(request)

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        session = Session(
            path=parts.path,
            query={k: v[-1] for k, v in parse_qs(parts.query).items()},
            headers={k.lower(): v for k, v in ws.request.headers.raw_items()},
        )
        self.sessions.append(session)
        try:
            await self.serve_session(ws, session)
        finally:
            session.close_code = ws.close_code

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeWsServer]:
        """Listen on a free loopback port for the duration of the block."""
        async with serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            max_size=None,
            compression=None,
        ) as server:
            self._server = server
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            yield self


def query_of(request: Request) -> dict[str, str]:
    """The handshake's query parameters (last value wins)."""
    return {k: v[-1] for k, v in parse_qs(urlsplit(request.path).query).items()}
