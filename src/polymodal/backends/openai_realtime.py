"""The OpenAI Realtime API as a single-model voice path (speech in, speech out, one WebSocket).

Wire protocol (OpenAI's documented Realtime events): connect to ``wss://api.openai.com/v1/realtime?model=...``
with ``Authorization: Bearer KEY``; configure with ``session.update``; stream microphone audio as
``input_audio_buffer.append`` (base64 PCM16, 24 kHz mono); end a user turn with ``input_audio_buffer.commit``
and ask for an answer with ``response.create`` (or let the server's VAD do both). The answer streams back as
``response.output_audio.delta`` (``response.audio.delta`` in the beta API) with its transcript in
``response.output_audio_transcript.delta``, and ends with ``response.done``. On barge-in the client sends
``response.cancel`` and ``conversation.item.truncate`` with ``audio_end_ms`` = how much of the answer was
actually played, so the model's memory of the conversation matches what the user heard. Failures are
``error`` events (``{"type": "error", "error": {"type", "code", "message", "param", "event_id"}}``); a refused
handshake is an HTTP status with OpenAI's usual error body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from polymodal.backends import _ws
from polymodal.backends._retry import RetryPolicy, call_with_retries
from polymodal.backends.speech import PCM
from polymodal.errors import BackendError, ConfigError, ErrorCategory

if TYPE_CHECKING:
    from polymodal.config import Settings

log = logging.getLogger("polymodal.backends.openai_realtime")

PROVIDER = "openai-realtime"
DEFAULT_URL = "wss://api.openai.com/v1"
SAMPLE_RATE = 24_000

#: Error codes that only mean a race we tolerate (e.g. cancelling a response that just finished).
_BENIGN_CODES = frozenset({"response_cancel_not_active"})
_ERROR_TYPES = {
    "invalid_request_error": ErrorCategory.INVALID_REQUEST,
    "authentication_error": ErrorCategory.AUTH,
    "permission_error": ErrorCategory.PERMISSION,
    "rate_limit_error": ErrorCategory.RATE_LIMIT,
    "server_error": ErrorCategory.SERVER,
}
_ERROR_CODES = {
    "invalid_api_key": ErrorCategory.AUTH,
    "insufficient_quota": ErrorCategory.QUOTA,
    "rate_limit_exceeded": ErrorCategory.RATE_LIMIT,
    "session_expired": ErrorCategory.TIMEOUT,
}


class _ErrorEvent(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error
        self.code = str(error.get("code") or "")
        self.kind = str(error.get("type") or "")
        super().__init__(str(error.get("message") or error))


def _translate(exc: BaseException, model: str) -> BackendError:
    """The one place Realtime failures become BackendErrors."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, _ErrorEvent):
        category = _ERROR_CODES.get(exc.code) or _ERROR_TYPES.get(exc.kind, ErrorCategory.SERVER)
        label = exc.code or exc.kind
        return BackendError(f"{label}: {exc}", category=category, provider=PROVIDER, model=model)
    if isinstance(exc, ConnectionClosed):
        code, reason = _ws.close_info(exc)
        return BackendError(
            f"session closed ({code}{' ' + reason if reason else ''})",
            category=_ws.category_for_close(code),
            provider=PROVIDER,
            model=model,
        )
    if isinstance(exc, ValueError | KeyError | TypeError | binascii.Error):
        return BackendError(
            f"malformed event: {type(exc).__name__}: {exc}",
            category=ErrorCategory.MALFORMED_RESPONSE,
            provider=PROVIDER,
            model=model,
        )
    return _ws.handshake_error(exc, provider=PROVIDER, model=model)


# -- events handed to the caller -------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    """Server VAD heard the user start speaking (the caller's cue to barge in)."""

    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    """Server VAD heard the user stop speaking."""

    audio_end_ms: int


@dataclass(frozen=True)
class UserTranscript:
    """What the user said in a committed turn (input audio transcription)."""

    item_id: str
    text: str


@dataclass(frozen=True)
class AssistantAudio:
    """A piece of the spoken answer (mono float32 at 24 kHz)."""

    response_id: str
    item_id: str
    pcm: PCM
    sample_rate: int = SAMPLE_RATE


@dataclass(frozen=True)
class AssistantText:
    """A piece of the answer's transcript."""

    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True)
class ResponseDone:
    """The answer ended: ``completed``, ``cancelled`` (barge-in), ``incomplete`` or ``failed``."""

    response_id: str
    status: str
    reason: str | None = None


RealtimeEvent = SpeechStarted | SpeechStopped | UserTranscript | AssistantAudio | AssistantText | ResponseDone


@dataclass(frozen=True)
class Truncation:
    """What an interruption cut: the answer item and how much of its audio the user heard."""

    item_id: str
    audio_end_ms: int
    received_ms: int


class RealtimeSession:
    """One Realtime conversation. Read :meth:`events`; write audio; call :meth:`interrupt` on barge-in."""

    def __init__(self, ws: ClientConnection, model: str) -> None:
        self._ws = ws
        self.model = model
        self._active_response: str | None = None
        self._audio_item: str | None = None
        self._received_samples: dict[str, int] = {}
        self._closed = False

    async def send_audio(self, pcm: PCM) -> None:
        """Append microphone audio (mono float32 at 24 kHz)."""
        data = _ws.to_pcm16(pcm)
        if data:
            await self._send({"type": "input_audio_buffer.append", "audio": base64.b64encode(data).decode()})

    async def commit(self) -> None:
        """End the user's turn (manual turn detection)."""
        await self._send({"type": "input_audio_buffer.commit"})

    async def create_response(self, instructions: str | None = None) -> None:
        """Ask the model to answer the conversation so far."""
        event: dict[str, Any] = {"type": "response.create"}
        if instructions:
            event["response"] = {"instructions": instructions}
        await self._send(event)

    async def interrupt(self, played_ms: float) -> Truncation | None:
        """Barge-in: cancel the answer in progress and truncate it to what the user actually heard.

        ``played_ms`` is the playback position in the current answer (clamped to the audio received, which the
        server would otherwise reject). Returns None when no answer audio exists to truncate.
        """
        if self._active_response is not None:
            await self._send({"type": "response.cancel"})
        item = self._audio_item
        if item is None:
            return None
        received_ms = self._received_samples.get(item, 0) * 1000 // SAMPLE_RATE
        end_ms = int(max(0.0, min(played_ms, received_ms)))
        await self._send(
            {
                "type": "conversation.item.truncate",
                "item_id": item,
                "content_index": 0,
                "audio_end_ms": end_ms,
            }
        )
        self._audio_item = None
        return Truncation(item, end_ms, received_ms)

    async def events(self) -> AsyncIterator[RealtimeEvent]:
        """Server events as typed values until the session closes; ``error`` events raise BackendError."""
        try:
            async for raw in self._ws:
                if isinstance(raw, bytes):
                    continue
                event = self._handle(json.loads(raw))
                if event is not None:
                    yield event
        except ConnectionClosed as exc:
            if exc.rcvd is None or exc.rcvd.code != 1000:
                raise _translate(exc, self.model) from exc
        except (BackendError, GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise _translate(exc, self.model) from exc

    async def respond(self) -> AsyncIterator[RealtimeEvent]:
        """Commit the buffered audio, request an answer, and yield events until that answer is done."""
        await self.commit()
        await self.create_response()
        async for event in self.events():
            yield event
            if isinstance(event, ResponseDone):
                return

    async def aclose(self) -> None:
        """Close the WebSocket; idempotent."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), timeout=2.0)

    async def _send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", f"evt_{uuid.uuid4().hex[:16]}")
        try:
            await self._ws.send(json.dumps(event))
        except ConnectionClosed as exc:
            raise _translate(exc, self.model) from exc

    def _handle(self, event: dict[str, Any]) -> RealtimeEvent | None:
        kind = event.get("type", "")
        if kind == "error":
            error = _ErrorEvent(event.get("error") or {})
            if error.code in _BENIGN_CODES:
                log.debug("ignored realtime error: %s", error)
                return None
            raise error
        if kind in ("response.output_audio.delta", "response.audio.delta"):
            pcm = _ws.from_pcm16(base64.b64decode(event["delta"], validate=True))
            item = str(event["item_id"])
            self._audio_item = item
            self._received_samples[item] = self._received_samples.get(item, 0) + len(pcm)
            return AssistantAudio(str(event.get("response_id", "")), item, pcm)
        if kind in ("response.output_audio_transcript.delta", "response.audio_transcript.delta"):
            return AssistantText(
                str(event.get("response_id", "")), str(event.get("item_id", "")), event["delta"]
            )
        if kind == "response.created":
            self._active_response = str(event["response"]["id"])
        elif kind == "response.done":
            response = event.get("response") or {}
            self._active_response = None
            details = response.get("status_details") or {}
            return ResponseDone(
                str(response.get("id", "")), str(response.get("status", "")), details.get("reason")
            )
        elif kind == "conversation.item.input_audio_transcription.completed":
            return UserTranscript(str(event["item_id"]), str(event.get("transcript", "")).strip())
        elif kind == "input_audio_buffer.speech_started":
            return SpeechStarted(int(event.get("audio_start_ms", 0)))
        elif kind == "input_audio_buffer.speech_stopped":
            return SpeechStopped(int(event.get("audio_end_ms", 0)))
        return None


TurnDetection = Literal["server_vad", "semantic_vad"] | None


class OpenAIRealtime:
    """Connects :class:`RealtimeSession` objects to the Realtime API.

    Args:
        api_key: OpenAI API key.
        model: a realtime model (``gpt-realtime``, ``gpt-realtime-mini``...).
        voice: output voice (``marin``, ``cedar``, ``alloy``...).
        instructions: the system prompt for the conversation.
        turn_detection: ``None`` when the caller decides turns (its own VAD, then
            :meth:`RealtimeSession.commit` and :meth:`RealtimeSession.create_response`); ``"server_vad"`` or
            ``"semantic_vad"`` to let the server detect turns and answer by itself.
        transcription_model: model that transcribes the user's audio (for the live transcript).
    """

    provider = PROVIDER
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        api_key: str,
        model: str = "gpt-realtime",
        *,
        base_url: str = DEFAULT_URL,
        voice: str = "marin",
        instructions: str = "You are a helpful voice assistant. Answer briefly.",
        turn_detection: TurnDetection = None,
        transcription_model: str | None = "gpt-4o-mini-transcribe",
        open_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("the OpenAI Realtime API needs an API key", hint="set OPENAI_API_KEY")
        self.model = model
        self.voice = voice
        self.instructions = instructions
        self.turn_detection = turn_detection
        self.transcription_model = transcription_model
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._open_timeout = open_timeout
        self._retry = retry or RetryPolicy(max_attempts=3, total_timeout=30.0)

    def session_config(self) -> dict[str, Any]:
        """The ``session`` object sent in ``session.update``."""
        pcm = {"type": "audio/pcm", "rate": SAMPLE_RATE}
        audio_in: dict[str, Any] = {
            "format": pcm,
            "turn_detection": {"type": self.turn_detection} if self.turn_detection else None,
        }
        if self.transcription_model:
            audio_in["transcription"] = {"model": self.transcription_model}
        return {
            "type": "realtime",
            "model": self.model,
            "instructions": self.instructions,
            "output_modalities": ["audio"],
            "audio": {"input": audio_in, "output": {"format": pcm, "voice": self.voice}},
        }

    async def connect(self) -> RealtimeSession:
        """Open a session and configure it (retrying transient handshake failures)."""
        url = f"{self._base_url}/realtime?{urlencode({'model': self.model})}"
        headers = {"Authorization": f"Bearer {self._api_key}"}

        async def attempt() -> ClientConnection:
            try:
                return await _ws.open_socket(url, headers, open_timeout=self._open_timeout)
            except Exception as exc:
                raise _translate(exc, self.model) from exc

        ws = await call_with_retries(attempt, self._retry)
        session = RealtimeSession(ws, self.model)
        await session._send({"type": "session.update", "session": self.session_config()})
        return session


def pcm_duration_ms(pcm: PCM) -> int:
    """Milliseconds of 24 kHz audio in ``pcm``."""
    return int(len(np.asarray(pcm)) * 1000 // SAMPLE_RATE)


def create(settings: Settings, model: str = "gpt-realtime", **kwargs: Any) -> OpenAIRealtime:
    """Build from settings (``OPENAI_API_KEY``; ``OPENAI_BASE_URL`` https://... becomes wss://...)."""
    base = settings.openai_base_url
    url = base.replace("https://", "wss://").replace("http://", "ws://") if base else DEFAULT_URL
    return OpenAIRealtime(settings.secret("openai_api_key") or "", model, base_url=url, **kwargs)


__all__ = [
    "AssistantAudio",
    "AssistantText",
    "OpenAIRealtime",
    "RealtimeEvent",
    "RealtimeSession",
    "ResponseDone",
    "SpeechStarted",
    "SpeechStopped",
    "Truncation",
    "UserTranscript",
    "create",
    "pcm_duration_ms",
]
