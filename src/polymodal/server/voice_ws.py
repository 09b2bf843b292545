"""The voice WebSocket endpoint: one voice loop per browser session, with hard limits.

Wire protocol (browser <-> server), all JSON text frames except audio:

* client -> server, first frame: ``{"type": "start", "format": "pcm_s16le", "sample_rate": 16000,
  "channels": 1}``; then binary frames of little-endian 16-bit mono PCM at that rate; optionally
  ``{"type": "played", "ms": 1234}`` (how much reply audio the page has actually played, for barge-in
  truncation), ``{"type": "ping", "t": ...}`` and ``{"type": "stop"}``.
* server -> client: ``{"type": "ready", ...}``, binary frames of reply audio (PCM16 mono at the rate announced
  in the preceding ``{"type": "audio_format", "sample_rate": N}``), ``transcript`` (``final`` true/false),
  ``reply_start`` (a new reply: playback position restarts), ``reply_text`` deltas, ``interrupt`` (stop
  playback now), ``latency`` (one record per turn), ``pong`` and
  ``error``.

Every limit breach closes the socket with a specific code (see :class:`CloseCode`) and a reason that says
which limit was hit, so a client can tell "server busy" from "your audio is malformed".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, Response

from polymodal.config import Settings

log = logging.getLogger("polymodal.server.voice")


class CloseCode(IntEnum):
    """WebSocket close codes the voice endpoint uses (RFC 6455 where one fits, 4xxx for the rest)."""

    NORMAL = 1000
    PROTOCOL = 1002
    UNSUPPORTED_AUDIO = 1003
    INVALID_AUDIO = 1007
    POLICY = 1008
    FRAME_TOO_BIG = 1009
    INTERNAL = 1011
    BUSY = 1013
    IDLE_TIMEOUT = 4408


@dataclass(frozen=True)
class VoiceServerLimits:
    """Bounds on what one voice server accepts.

    Attributes:
        max_sessions: concurrent sessions; one more is accepted and closed at once with ``BUSY`` (1013).
        max_frame_bytes: largest inbound frame (audio or JSON); larger closes with 1009.
        idle_timeout: seconds without any inbound frame before the session closes with 4408.
        sample_rate: the only input sample rate accepted in the ``start`` frame.
        max_session_seconds: wall-clock cap on one session.
        inbound_queue_frames: audio frames buffered between the socket and a slow loop (backpressure beyond).
    """

    max_sessions: int = 8
    max_frame_bytes: int = 64 * 1024
    idle_timeout: float = 30.0
    sample_rate: int = 16_000
    max_session_seconds: float = 3600.0
    inbound_queue_frames: int = 256


class VoiceChannel:
    """One browser session as the voice loop sees it: audio in, typed events and audio out."""

    def __init__(self, websocket: WebSocket, session_id: str, sample_rate: int, queue_frames: int) -> None:
        self.session_id = session_id
        self.sample_rate = sample_rate
        self.played_ms = 0.0
        self.played_at = time.monotonic()
        self._ws = websocket
        self._inbound: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=queue_frames)
        self._send_lock = asyncio.Lock()
        self._out_rate: int | None = None
        self._closed = False
        self.frames_in = 0
        self.bytes_in = 0

    async def audio(self) -> AsyncIterator[bytes]:
        """Inbound PCM16 mono chunks at :attr:`sample_rate`, until the client stops or leaves."""
        while True:
            chunk = await self._inbound.get()
            if chunk is None:
                return
            yield chunk

    async def send_audio(self, pcm16: bytes, sample_rate: int) -> None:
        """Send reply audio (PCM16 mono); announces the rate whenever it changes."""
        if not pcm16:
            return
        if sample_rate != self._out_rate:
            await self.send_event({"type": "audio_format", "format": "pcm_s16le", "sample_rate": sample_rate})
            self._out_rate = sample_rate
        await self._send(lambda: self._ws.send_bytes(pcm16))

    async def send_reply_start(self) -> None:
        """Tell the page a new reply begins (its playback position for ``played`` restarts at 0)."""
        self.played_ms = 0.0
        self.played_at = time.monotonic()
        await self.send_event({"type": "reply_start"})

    async def send_transcript(self, text: str, *, final: bool) -> None:
        """Show what the user said (partial or final)."""
        await self.send_event({"type": "transcript", "text": text, "final": final})

    async def send_reply_text(self, delta: str) -> None:
        """Show the agent's reply as it is generated."""
        await self.send_event({"type": "reply_text", "delta": delta})

    async def send_interrupt(self) -> None:
        """Tell the page to stop playback now (the user barged in)."""
        await self.send_event({"type": "interrupt"})

    async def send_latency(self, record: Mapping[str, Any]) -> None:
        """Send one turn's latency trace record."""
        await self.send_event({"type": "latency", "turn": dict(record)})

    async def send_event(self, event: Mapping[str, Any]) -> None:
        """Send one JSON event; silently dropped once the socket is closed."""
        text = json.dumps(event, separators=(",", ":"))
        await self._send(lambda: self._ws.send_text(text))

    async def _send(self, op: Callable[[], Awaitable[None]]) -> None:
        if self._closed:
            return
        async with self._send_lock:
            try:
                await op()
            except (WebSocketDisconnect, RuntimeError, OSError):  # the client is gone: stop sending
                self._closed = True

    async def _push(self, chunk: bytes | None) -> None:
        await self._inbound.put(chunk)

    def _end_input(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._inbound.put_nowait(None)


#: Runs the voice loop for one session until ``channel.audio()`` ends; built per session by the app.
SessionRunner = Callable[[VoiceChannel], Awaitable[None]]


class _Refused(Exception):
    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class SessionRegistry:
    """Counts live sessions against ``max_sessions`` (single event loop: no lock needed)."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.live: set[str] = set()
        self.total = 0
        self.refused = 0

    def try_enter(self, session_id: str) -> bool:
        """Register a session; False when the server is full."""
        if len(self.live) >= self.max_sessions:
            self.refused += 1
            return False
        self.live.add(session_id)
        self.total += 1
        return True

    def leave(self, session_id: str) -> None:
        """Forget a finished session."""
        self.live.discard(session_id)


def _parse_start(text: str | None, limits: VoiceServerLimits) -> int:
    if text is None:
        raise _Refused(CloseCode.POLICY, "first frame must be a JSON start message, not audio")
    try:
        start = json.loads(text)
    except ValueError as exc:
        raise _Refused(CloseCode.POLICY, "start message is not valid JSON") from exc
    if not isinstance(start, dict) or start.get("type") != "start":
        raise _Refused(CloseCode.POLICY, 'first message must be {"type": "start", ...}')
    fmt = start.get("format", "pcm_s16le")
    channels = start.get("channels", 1)
    rate = start.get("sample_rate")
    if fmt != "pcm_s16le" or channels != 1:
        raise _Refused(
            CloseCode.UNSUPPORTED_AUDIO,
            f"unsupported audio {fmt!r} x{channels}; send pcm_s16le mono",
        )
    if rate != limits.sample_rate:
        raise _Refused(
            CloseCode.UNSUPPORTED_AUDIO,
            f"sample_rate {rate!r} not accepted (limit: {limits.sample_rate} Hz)",
        )
    return limits.sample_rate


def _loop_outcome(loop_task: asyncio.Task[None]) -> tuple[CloseCode, str]:
    """How to close once the session's loop has ended by itself."""
    failed = not loop_task.cancelled() and loop_task.exception() is not None
    return (CloseCode.INTERNAL, "voice loop failed") if failed else (CloseCode.NORMAL, "done")


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.close(code=code, reason=reason[:120])


class VoiceEndpoint:
    """The per-app state and the WebSocket handler behind ``/voice/ws``."""

    def __init__(self, runner: SessionRunner, limits: VoiceServerLimits) -> None:
        self.runner = runner
        self.limits = limits
        self.registry = SessionRegistry(limits.max_sessions)

    async def handle(self, websocket: WebSocket) -> None:
        """Accept, enforce limits, run one loop, and always clean up."""
        await websocket.accept()
        session_id = uuid.uuid4().hex[:12]
        if not self.registry.try_enter(session_id):
            await _close(
                websocket, CloseCode.BUSY, f"server busy (limit: {self.limits.max_sessions} sessions)"
            )
            return
        try:
            await self._serve(websocket, session_id)
        finally:
            self.registry.leave(session_id)

    async def _serve(self, websocket: WebSocket, session_id: str) -> None:
        limits = self.limits
        try:
            first = await self._receive(websocket)
            if first is None:
                return
            rate = _parse_start(first.get("text"), limits)
        except _Refused as refused:
            await _close(websocket, refused.code, refused.reason)
            return
        channel = VoiceChannel(websocket, session_id, rate, limits.inbound_queue_frames)
        await channel.send_event(
            {
                "type": "ready",
                "session_id": session_id,
                "sample_rate": rate,
                "max_frame_bytes": limits.max_frame_bytes,
            }
        )
        loop_task = asyncio.create_task(self._run_loop(channel), name=f"voice-loop-{session_id}")
        pump = asyncio.create_task(self._pump(websocket, channel, loop_task), name=f"voice-pump-{session_id}")
        loop_task.add_done_callback(lambda _: pump.cancel())  # the loop ended: stop reading the socket
        code, reason = CloseCode.NORMAL, "bye"
        try:
            async with asyncio.timeout(limits.max_session_seconds):
                code, reason = await pump
        except TimeoutError:
            code, reason = CloseCode.POLICY, f"session too long (limit: {limits.max_session_seconds:g} s)"
        except _Refused as refused:
            code, reason = refused.code, refused.reason
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the server is shutting down, not the loop ending
            code, reason = _loop_outcome(loop_task)
        finally:
            if not pump.done():
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
            channel._end_input()
            if code != CloseCode.NORMAL or not loop_task.done():
                loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop_task
            channel._closed = True
            await _close(websocket, code, reason)
            log.info(
                "voice session %s closed: %d %s (%d frames in)", session_id, code, reason, channel.frames_in
            )

    async def _run_loop(self, channel: VoiceChannel) -> None:
        try:
            await self.runner(channel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("voice loop failed in session %s", channel.session_id)
            await channel.send_event({"type": "error", "message": f"{type(exc).__name__}: {exc}"})
            raise

    async def _pump(
        self, websocket: WebSocket, channel: VoiceChannel, loop_task: asyncio.Task[None]
    ) -> tuple[CloseCode, str]:
        """Feed inbound frames to the channel until the client leaves or stops, or the loop ends.

        The loop's end also cancels this task; the check below covers a cancellation lost in a race with an
        arriving frame (``asyncio.wait_for`` in Python 3.11 returns the frame and drops the cancel).
        """
        while True:
            if loop_task.done():
                return _loop_outcome(loop_task)
            message = await self._receive(websocket)
            if message is None:
                return CloseCode.NORMAL, "client left"
            data = message.get("bytes")
            if data is not None:
                if len(data) % 2:
                    raise _Refused(
                        CloseCode.INVALID_AUDIO, f"audio frame of {len(data)} bytes is not whole PCM16"
                    )
                if data:
                    channel.frames_in += 1
                    channel.bytes_in += len(data)
                    await self._feed(channel, data, loop_task)
                continue
            if await self._control(channel, message.get("text") or ""):
                await self._feed(channel, None, loop_task)  # the loop must see the end of its input
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.shield(loop_task)
                return CloseCode.NORMAL, "stopped"

    @staticmethod
    async def _feed(channel: VoiceChannel, item: bytes | None, loop_task: asyncio.Task[None]) -> None:
        """Queue inbound audio; when the queue is full, wait for room (backpressure) unless the loop ended."""
        try:
            channel._inbound.put_nowait(item)
            return
        except asyncio.QueueFull:
            pass
        put = asyncio.ensure_future(channel._push(item))
        done, _ = await asyncio.wait({put, loop_task}, return_when=asyncio.FIRST_COMPLETED)
        if put not in done:
            put.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await put

    async def _control(self, channel: VoiceChannel, text: str) -> bool:
        """Handle one JSON control frame; True when the client asked to stop."""
        try:
            event = json.loads(text)
        except ValueError as exc:
            raise _Refused(CloseCode.POLICY, "control frame is not valid JSON") from exc
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "stop":
            return True
        if kind == "played":
            ms = event.get("ms")
            if isinstance(ms, int | float) and ms >= 0:
                channel.played_ms = float(ms)
                channel.played_at = time.monotonic()
        elif kind == "ping":
            await channel.send_event({"type": "pong", "t": event.get("t")})
        elif kind == "start":
            raise _Refused(CloseCode.POLICY, "session already started")
        else:
            raise _Refused(CloseCode.POLICY, f"unknown control message type {kind!r}")
        return False

    async def _receive(self, websocket: WebSocket) -> dict[str, Any] | None:
        """One inbound frame within the idle timeout and size limit; None when the client has gone."""
        try:
            async with asyncio.timeout(self.limits.idle_timeout):
                message = await websocket.receive()
        except TimeoutError as exc:
            raise _Refused(
                CloseCode.IDLE_TIMEOUT, f"idle for {self.limits.idle_timeout:g} s (limit: idle_timeout)"
            ) from exc
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message.get("type") == "websocket.disconnect":
            return None
        payload = message.get("bytes")
        size = len(payload) if payload is not None else len((message.get("text") or "").encode())
        if size > self.limits.max_frame_bytes:
            raise _Refused(
                CloseCode.FRAME_TOO_BIG,
                f"frame of {size} bytes (limit: {self.limits.max_frame_bytes} bytes)",
            )
        return dict(message)


def _asset(name: str) -> str:
    return resources.files("polymodal.server").joinpath("static", name).read_text(encoding="utf-8")


def voice_router(
    runner: SessionRunner, limits: VoiceServerLimits | None = None, *, prefix: str = "/voice"
) -> APIRouter:
    """A router with the voice page (``GET {prefix}``), its AudioWorklet and WebSocket (``{prefix}/ws``)."""
    endpoint = VoiceEndpoint(runner, limits or VoiceServerLimits())
    router = APIRouter(prefix=prefix, tags=["voice"])
    page = _asset("voice.html").replace("__SAMPLE_RATE__", str(endpoint.limits.sample_rate))

    @router.get("", response_class=HTMLResponse, include_in_schema=False)
    async def voice_page() -> HTMLResponse:
        return HTMLResponse(page)

    @router.get("/worklet.js", include_in_schema=False)
    async def voice_worklet() -> Response:
        return Response(_asset("voice-worklet.js"), media_type="text/javascript")

    @router.websocket("/ws")
    async def voice_socket(websocket: WebSocket) -> None:
        await endpoint.handle(websocket)

    router.voice_endpoint = endpoint  # type: ignore[attr-defined]
    return router


def create_voice_app(
    settings: Settings | None,
    loop_factory: SessionRunner,
    limits: VoiceServerLimits | None = None,
) -> FastAPI:
    """A standalone FastAPI app serving the voice page and WebSocket (``polymodal voice serve``).

    ``loop_factory(channel)`` builds and runs the voice loop for one session; it returns when the channel's
    audio ends. ``settings`` is accepted for symmetry with the main app factory (the loop factory is where
    models are chosen).
    """
    del settings
    app = FastAPI(title="polymodal voice", docs_url=None, redoc_url=None)
    router = voice_router(loop_factory, limits)
    app.include_router(router)
    app.state.voice_endpoint = router.voice_endpoint  # type: ignore[attr-defined]

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse('<meta http-equiv="refresh" content="0; url=/voice">')

    return app


__all__ = [
    "CloseCode",
    "SessionRegistry",
    "SessionRunner",
    "VoiceChannel",
    "VoiceEndpoint",
    "VoiceServerLimits",
    "create_voice_app",
    "voice_router",
]
