"""ElevenLabs streaming text-to-speech over its ``stream-input`` WebSocket.

Wire protocol (ElevenLabs' documented input-streaming API): connect to
``wss://api.elevenlabs.io/v1/text-to-speech/{voice_id}/stream-input?model_id=...&output_format=pcm_16000``
with an ``xi-api-key`` header; send the "beginning of stream" message ``{"text": " ", "voice_settings": {...},
"generation_config": {"chunk_length_schedule": [...]}}``, then text as it arrives, and ``{"text": ""}`` to end
the input. The server answers with ``{"audio": BASE64_PCM16, "alignment": {"chars", "charStartTimesMs",
"charDurationsMs"}, ...}`` messages and finally ``{"isFinal": true}``. Errors arrive as ``{"message", "error",
"code"}`` followed by a close (1008 for policy errors such as ``input_timeout_exceeded`` or
``quota_exceeded``); a refused handshake is an HTTP status with ``{"detail": {"status", "message"}}``.

Text is sent a sentence at a time with ``flush: true`` (so the first sentence is voiced as soon as it is
complete, not when ElevenLabs' chunk schedule fills); each :class:`TTSChunk` carries the characters the
alignment says start in it, so an interrupted reply knows what was actually spoken.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from polymodal.backends import _ws
from polymodal.backends._retry import RetryPolicy, call_with_retries
from polymodal.backends.speech import SentenceSplitter, TTSChunk, TTSOptions, WordTiming, iterate_text
from polymodal.errors import BackendError, ConfigError, ErrorCategory

if TYPE_CHECKING:
    from polymodal.config import Settings
    from polymodal.media.audio import Audio

PROVIDER = "elevenlabs"
DEFAULT_URL = "wss://api.elevenlabs.io"
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)

#: In-band error codes -> categories (anything else falls back to the close code).
_ERROR_CATEGORIES = {
    "invalid_api_key": ErrorCategory.AUTH,
    "unauthorized": ErrorCategory.AUTH,
    "quota_exceeded": ErrorCategory.QUOTA,
    "payment_required": ErrorCategory.QUOTA,
    "input_timeout_exceeded": ErrorCategory.TIMEOUT,
    "too_many_concurrent_requests": ErrorCategory.RATE_LIMIT,
    "rate_limit_exceeded": ErrorCategory.RATE_LIMIT,
    "voice_not_found": ErrorCategory.NOT_FOUND,
    "model_not_found": ErrorCategory.NOT_FOUND,
    "system_busy": ErrorCategory.OVERLOADED,
}


class _ServerError(Exception):
    """An in-band ``{"message", "error", "code"}`` message."""

    def __init__(self, message: dict[str, Any]) -> None:
        error = message.get("error")
        if isinstance(error, dict):
            self.code = str(error.get("status") or error.get("code") or "")
            self.text = str(error.get("message") or message.get("message") or error)
        else:
            self.code = str(error or "")
            self.text = str(message.get("message") or error or message)
        super().__init__(f"{self.code}: {self.text}")


def _translate(exc: BaseException, model: str) -> BackendError:
    """The one place ElevenLabs failures become BackendErrors."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, _ServerError):
        category = _ERROR_CATEGORIES.get(exc.code, ErrorCategory.INVALID_REQUEST)
        return BackendError(f"{exc.code}: {exc.text}", category=category, provider=PROVIDER, model=model)
    if isinstance(exc, ConnectionClosed):
        code, reason = _ws.close_info(exc)
        category = _ERROR_CATEGORIES.get(reason, _ws.category_for_close(code))
        return BackendError(
            f"stream closed ({code}{' ' + reason if reason else ''})",
            category=category,
            provider=PROVIDER,
            model=model,
        )
    if isinstance(exc, ValueError | KeyError | TypeError | binascii.Error):
        return BackendError(
            f"malformed message: {type(exc).__name__}: {exc}",
            category=ErrorCategory.MALFORMED_RESPONSE,
            provider=PROVIDER,
            model=model,
        )
    return _ws.handshake_error(exc, provider=PROVIDER, model=model, normalize_body=_error_body)


def _error_body(body: object) -> object:
    """``{"detail": {"status", "message"}}`` -> the shared error shape."""
    if isinstance(body, dict) and isinstance(body.get("detail"), dict):
        detail = body["detail"]
        return {"error": {"message": detail.get("message", ""), "code": detail.get("status", "")}}
    return body


@dataclass(frozen=True)
class VoiceSettings:
    """ElevenLabs voice settings sent in the first message."""

    stability: float = 0.5
    similarity_boost: float = 0.8
    style: float = 0.0
    use_speaker_boost: bool = True

    def to_wire(self, speed: float) -> dict[str, Any]:
        """The ``voice_settings`` object."""
        return {
            "stability": self.stability,
            "similarity_boost": self.similarity_boost,
            "style": self.style,
            "use_speaker_boost": self.use_speaker_boost,
            "speed": speed,
        }


def _chunk(message: dict[str, Any], rate: int) -> TTSChunk | None:
    """An audio message -> TTSChunk (None for a message without audio)."""
    audio = message.get("audio")
    if not audio:
        return None
    pcm = _ws.from_pcm16(base64.b64decode(audio, validate=True))
    alignment = message.get("alignment") or message.get("normalizedAlignment") or {}
    chars = [str(c) for c in alignment.get("chars") or ()]
    starts = [float(t) for t in alignment.get("charStartTimesMs") or ()]
    durations = [float(t) for t in alignment.get("charDurationsMs") or ()]
    return TTSChunk(pcm=pcm, sample_rate=rate, text="".join(chars), words=_words(chars, starts, durations))


def _words(chars: list[str], starts: list[float], durations: list[float]) -> tuple[WordTiming, ...]:
    """Group character timings (ms) into word timings in seconds, relative to the chunk's start."""
    words: list[WordTiming] = []
    current, begin, end = "", 0.0, 0.0
    for char, start, duration in zip(chars, starts, durations, strict=False):
        if char.isspace():
            if current:
                words.append(WordTiming(current, begin / 1000, end / 1000))
            current = ""
            continue
        if not current:
            begin = start
        current += char
        end = start + duration
    if current:
        words.append(WordTiming(current, begin / 1000, end / 1000))
    return tuple(words)


class ElevenLabsTTS:
    """ElevenLabs input-streaming synthesis as a :class:`~polymodal.backends.speech.TTS`.

    Args:
        api_key: an ElevenLabs API key (sent as the ``xi-api-key`` header).
        voice_id: default voice (``TTSOptions.voice`` overrides it per call).
        model: ``eleven_flash_v2_5`` (lowest latency), ``eleven_turbo_v2_5``, ...
        sample_rate: one of ElevenLabs' PCM rates; audio arrives as ``pcm_{sample_rate}``.
        chunk_length_schedule: characters buffered before ElevenLabs starts generating (it also starts on
            every ``flush``).
        inactivity_timeout: seconds the server waits for text before closing the stream (max 180).
    """

    provider = PROVIDER

    def __init__(
        self,
        api_key: str,
        voice_id: str,
        model: str = "eleven_flash_v2_5",
        *,
        base_url: str = DEFAULT_URL,
        sample_rate: int = 16_000,
        voice_settings: VoiceSettings | None = None,
        chunk_length_schedule: tuple[int, ...] = (50, 120, 160, 290),
        inactivity_timeout: int = 20,
        open_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("ElevenLabs needs an API key", hint="set ELEVENLABS_API_KEY")
        if sample_rate not in PCM_RATES:
            raise ConfigError(
                f"ElevenLabs has no PCM output at {sample_rate} Hz", hint=f"use one of {PCM_RATES}"
            )
        self.model = model
        self.voice_id = voice_id
        self.sample_rate = sample_rate
        self.voice_settings = voice_settings or VoiceSettings()
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._schedule = list(chunk_length_schedule)
        self._inactivity_timeout = inactivity_timeout
        self._open_timeout = open_timeout
        self._retry = retry or RetryPolicy(max_attempts=3, total_timeout=30.0)

    def url(self, voice_id: str) -> str:
        """The ``stream-input`` URL for a voice."""
        query = {
            "model_id": self.model,
            "output_format": f"pcm_{self.sample_rate}",
            "inactivity_timeout": str(self._inactivity_timeout),
            "sync_alignment": "true",
        }
        return (
            f"{self._base_url}/v1/text-to-speech/{quote(voice_id, safe='')}/stream-input?{urlencode(query)}"
        )

    async def _connect(self, voice_id: str) -> ClientConnection:
        async def attempt() -> ClientConnection:
            try:
                return await _ws.open_socket(
                    self.url(voice_id), {"xi-api-key": self._api_key}, open_timeout=self._open_timeout
                )
            except Exception as exc:
                raise _translate(exc, self.model) from exc

        return await call_with_retries(attempt, self._retry)

    async def stream(
        self, text: AsyncIterable[str], options: TTSOptions | None = None
    ) -> AsyncIterator[TTSChunk]:
        """Speak streamed text; closing this iterator closes the socket at once (barge-in)."""
        opts = options or TTSOptions()
        ws = await self._connect(opts.voice or self.voice_id)
        writer = asyncio.create_task(self._write(ws, text, opts), name="elevenlabs-writer")
        failure: BaseException | None = None
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue
                message = json.loads(raw)
                if message.get("error") or ("message" in message and "audio" not in message):
                    raise _ServerError(message)
                chunk = _chunk(message, self.sample_rate)
                if chunk is not None and len(chunk.pcm):
                    yield chunk
                if message.get("isFinal"):
                    break
            await asyncio.wait({writer}, timeout=1.0)
            failure = writer.exception() if writer.done() and not writer.cancelled() else None
        except ConnectionClosed as exc:
            raise _translate(exc, self.model) from exc
        except (BackendError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise _translate(exc, self.model) from exc
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), timeout=1.0)
        if failure is not None:
            raise failure  # the text source failed (e.g. the LLM stream): not an ElevenLabs error

    async def _write(self, ws: ClientConnection, text: AsyncIterable[str], opts: TTSOptions) -> None:
        """BOS, then one flushed message per completed sentence, then EOS.

        If the text source fails, the socket is closed so the reader stops; the failure is re-raised there.
        """
        try:
            await self._send_all(ws, text, opts)
        except ConnectionClosed:
            return  # the reader reports why the server closed
        except BaseException:
            with contextlib.suppress(Exception):
                await ws.close()
            raise

    async def _send_all(self, ws: ClientConnection, text: AsyncIterable[str], opts: TTSOptions) -> None:
        await ws.send(
            json.dumps(
                {
                    "text": " ",
                    "voice_settings": self.voice_settings.to_wire(opts.speed),
                    "generation_config": {"chunk_length_schedule": self._schedule},
                }
            )
        )
        splitter = SentenceSplitter(min_chars=1)
        async for delta in text:
            for sentence in splitter.push(delta):
                await ws.send(json.dumps({"text": sentence, "flush": True}))
        for rest in splitter.flush():
            piece = rest if rest[-1:].isspace() else rest + " "
            await ws.send(json.dumps({"text": piece, "flush": True}))
        await ws.send(json.dumps({"text": ""}))

    async def synthesize(self, text: str, options: TTSOptions | None = None) -> Audio:
        """Speak a complete text; all chunks joined into one clip."""
        from polymodal.media.audio import Audio

        pieces = [chunk.pcm async for chunk in self.stream(iterate_text(text), options)]
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return Audio(pcm, self.sample_rate, source=f"elevenlabs:{self.voice_id}")

    async def aclose(self) -> None:
        """Each stream owns its socket; nothing is held between calls."""


def create(
    settings: Settings, voice_id: str, model: str = "eleven_flash_v2_5", **kwargs: Any
) -> ElevenLabsTTS:
    """Build from settings (``ELEVENLABS_API_KEY``, optional ``POLYMODAL_ELEVENLABS_URL``)."""
    key = settings.secret("elevenlabs_api_key") or ""
    return ElevenLabsTTS(key, voice_id, model, base_url=settings.elevenlabs_url, **kwargs)


__all__ = ["ElevenLabsTTS", "VoiceSettings", "create"]
