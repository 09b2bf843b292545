"""Shared WebSocket pieces for streaming speech backends (Deepgram, ElevenLabs, OpenAI Realtime).

Each adapter keeps its own single ``_translate(exc) -> BackendError``; the helpers here make every provider
classify a failed handshake (an HTTP status), an unreachable host or a timeout the same way, and convert
between the float32 PCM of :mod:`polymodal.backends.speech` and the PCM16 bytes the providers speak.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from polymodal.backends import _http
from polymodal.backends.speech import PCM
from polymodal.errors import BackendError, ErrorCategory

#: Largest message accepted from a provider (audio chunks arrive base64-encoded in JSON).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def to_pcm16(pcm: PCM) -> bytes:
    """Float32 samples in [-1, 1] -> little-endian signed 16-bit bytes (clipped, rounded)."""
    clipped = np.clip(np.asarray(pcm, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def from_pcm16(data: bytes) -> PCM:
    """Little-endian signed 16-bit bytes -> float32 samples in [-1, 1) (a trailing odd byte is dropped)."""
    usable = len(data) - (len(data) % 2)
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0


async def open_socket(url: str, headers: Mapping[str, str], *, open_timeout: float) -> ClientConnection:
    """Open a client WebSocket (foreign exceptions propagate: the adapter's ``_translate`` maps them)."""
    return await connect(
        url,
        additional_headers=dict(headers),
        open_timeout=open_timeout,
        max_size=MAX_MESSAGE_BYTES,
        compression=None,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=5,
    )


def handshake_error(
    exc: BaseException,
    *,
    provider: str,
    model: str,
    normalize_body: Callable[[object], object] | None = None,
) -> BackendError:
    """Classify a failure to open a WebSocket (HTTP status, timeout, unreachable host, bad URL).

    ``normalize_body`` reshapes a provider's own error body into the ``{"error": {"message", "code"}}`` form
    the shared HTTP helpers read.
    """
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, InvalidStatus):
        response = exc.response
        body = _http.parse_json_body(bytes(response.body or b""))
        if normalize_body is not None:
            body = normalize_body(body)
        return _http.status_error(
            provider, model, response.status_code, headers=dict(response.headers.raw_items()), body=body
        )
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return BackendError(
            "WebSocket handshake timed out", category=ErrorCategory.TIMEOUT, provider=provider, model=model
        )
    if isinstance(exc, InvalidURI):
        return BackendError(
            f"invalid WebSocket URL: {exc}",
            category=ErrorCategory.INVALID_REQUEST,
            provider=provider,
            model=model,
        )
    if isinstance(exc, OSError | InvalidHandshake):
        return BackendError(
            f"cannot open WebSocket: {exc}", category=ErrorCategory.CONNECTION, provider=provider, model=model
        )
    return BackendError(
        f"{type(exc).__name__}: {exc}", category=ErrorCategory.UNAVAILABLE, provider=provider, model=model
    )


def close_info(exc: ConnectionClosed) -> tuple[int | None, str]:
    """The close code and reason the server sent (None when the connection dropped without a close frame)."""
    if exc.rcvd is not None:
        return exc.rcvd.code, exc.rcvd.reason
    return None, ""


def category_for_close(code: int | None) -> ErrorCategory:
    """A default category for a WebSocket close code (adapters refine it with the provider's reason text)."""
    if code is None or code == 1006:
        return ErrorCategory.CONNECTION
    if code in (1002, 1003, 1007, 1008, 1009):
        return ErrorCategory.INVALID_REQUEST
    if code == 1013:
        return ErrorCategory.OVERLOADED
    if code in (1011, 1012, 1014):
        return ErrorCategory.SERVER
    if code in (4001, 4003):
        return ErrorCategory.AUTH
    return ErrorCategory.SERVER


__all__ = [
    "MAX_MESSAGE_BYTES",
    "category_for_close",
    "close_info",
    "from_pcm16",
    "handshake_error",
    "open_socket",
    "to_pcm16",
]
