"""Deepgram streaming speech-to-text over its ``/v1/listen`` WebSocket.

Wire protocol (Deepgram's documented live-streaming API): connect to ``wss://api.deepgram.com/v1/listen`` with
the options as query parameters (``encoding=linear16&sample_rate=16000&channels=1&model=nova-3&...``) and
``Authorization: Token KEY``; send raw audio as binary frames; receive JSON ``Results`` messages (interim ones
with ``is_final: false``, committed ones with ``is_final: true``; ``speech_final`` marks an endpoint, and
``from_finalize`` the answer to a ``Finalize``), plus ``Metadata``, ``SpeechStarted`` and ``UtteranceEnd``.
Control messages are JSON text frames: ``KeepAlive`` (sent here whenever no audio went out for a few seconds,
so a silent line is not closed with ``NET-0001``), ``Finalize`` (flush the current utterance) and
``CloseStream``. Failures arrive as a close frame whose reason carries a code such as ``DATA-0000`` (audio
that cannot be decoded) or ``NET-0000``/``NET-0001`` (timeouts); a refused handshake is a plain HTTP status.

Batch :meth:`DeepgramSTT.transcribe` rides the same socket: the clip is streamed, then ``CloseStream`` flushes
the final results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from polymodal.backends import _ws
from polymodal.backends._retry import RetryPolicy, call_with_retries
from polymodal.backends.speech import PCM, PartialCallback, STTOptions, Transcript, WordTiming
from polymodal.errors import BackendError, ConfigError, ErrorCategory

if TYPE_CHECKING:
    from polymodal.config import Settings
    from polymodal.media.audio import Audio

log = logging.getLogger("polymodal.backends.deepgram")

PROVIDER = "deepgram"
DEFAULT_URL = "wss://api.deepgram.com"


def _translate(exc: BaseException, model: str) -> BackendError:
    """The one place Deepgram failures become BackendErrors."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, ConnectionClosed):
        code, reason = _ws.close_info(exc)
        upper = reason.upper()
        if upper.startswith("DATA-"):
            category = ErrorCategory.INVALID_REQUEST  # the payload cannot be decoded as audio
        elif upper.startswith("NET-0001"):
            category = ErrorCategory.TIMEOUT  # no audio or KeepAlive reached Deepgram in time
        elif upper.startswith("NET-"):
            category = ErrorCategory.SERVER
        else:
            category = _ws.category_for_close(code)
        detail = f"stream closed ({code}{' ' + reason if reason else ''})"
        return BackendError(detail, category=category, provider=PROVIDER, model=model)
    if isinstance(exc, ValueError | KeyError | TypeError):
        return BackendError(
            f"malformed message: {type(exc).__name__}: {exc}",
            category=ErrorCategory.MALFORMED_RESPONSE,
            provider=PROVIDER,
            model=model,
        )
    return _ws.handshake_error(exc, provider=PROVIDER, model=model, normalize_body=_error_body)


def _error_body(body: object) -> object:
    """Deepgram's refusal body ``{"err_code", "err_msg", "request_id"}`` -> the shared error shape."""
    if isinstance(body, dict) and "err_msg" in body:
        return {"error": {"message": body["err_msg"], "code": str(body.get("err_code", ""))}}
    return body


def _parse_results(message: dict[str, Any]) -> Transcript:
    """A ``Results`` message -> Transcript (text of the best alternative, times on the stream's clock)."""
    alternatives = message["channel"]["alternatives"]
    best: dict[str, Any] = alternatives[0] if alternatives else {"transcript": ""}
    start = float(message.get("start", 0.0))
    words = tuple(
        WordTiming(
            text=str(w.get("punctuated_word") or w["word"]),
            start=float(w["start"]),
            end=float(w["end"]),
            confidence=w.get("confidence"),
        )
        for w in best.get("words", ())
    )
    return Transcript(
        text=str(best.get("transcript", "")).strip(),
        is_final=bool(message.get("is_final", False)),
        start=start,
        end=start + float(message.get("duration", 0.0)),
        confidence=best.get("confidence"),
        words=words,
    )


def _join(segments: list[Transcript], *, is_final: bool) -> Transcript:
    """Merge consecutive final segments of one utterance."""
    texts = [s.text for s in segments if s.text]
    starts = [s.start for s in segments if s.start is not None]
    ends = [s.end for s in segments if s.end is not None]
    confidences = [s.confidence for s in segments if s.confidence is not None and s.text]
    return Transcript(
        text=" ".join(texts),
        is_final=is_final,
        start=min(starts) if starts else None,
        end=max(ends) if ends else None,
        confidence=min(confidences) if confidences else None,
        words=tuple(w for s in segments for w in s.words),
    )


class DeepgramStream:
    """One open ``/v1/listen`` session; :meth:`finalize` ends an utterance, the socket stays open."""

    def __init__(
        self,
        ws: ClientConnection,
        model: str,
        *,
        on_partial: PartialCallback | None,
        keepalive_interval: float,
        finalize_timeout: float,
    ) -> None:
        self._ws = ws
        self._model = model
        self._on_partial = on_partial
        self._keepalive_interval = keepalive_interval
        self._finalize_timeout = finalize_timeout
        self._segments: list[Transcript] = []
        self._finalized = asyncio.Event()
        self._error: BackendError | None = None
        self._closed = False
        self._last_sent = asyncio.get_running_loop().time()
        self.request_id: str | None = None
        self.metadata: dict[str, Any] | None = None
        self._reader = asyncio.create_task(self._read(), name="deepgram-reader")
        self._keepalive = asyncio.create_task(self._keep_alive(), name="deepgram-keepalive")

    async def send(self, pcm: PCM) -> None:
        """Send audio (float32 mono at the STT's rate) as one linear16 binary frame."""
        self._raise_if_failed()
        data = _ws.to_pcm16(pcm)
        if not data:  # an empty binary frame would end the stream on Deepgram's side
            return
        await self._send(data)

    async def finalize(self) -> Transcript:
        """Flush the utterance with ``Finalize`` and return its final transcript."""
        self._raise_if_failed()
        self._finalized.clear()
        await self._send(json.dumps({"type": "Finalize"}))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._finalize_timeout):
                await self._wait_finalized()
        self._raise_if_failed()
        segments, self._segments = self._segments, []
        return _join(segments, is_final=True)

    async def close_stream(self, timeout: float = 10.0) -> Transcript:
        """Send ``CloseStream``, wait for the last results and the server's close; return what was left."""
        self._raise_if_failed()
        await self._send(json.dumps({"type": "CloseStream"}))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._reader)
        self._raise_if_failed()
        segments, self._segments = self._segments, []
        await self.aclose()
        return _join(segments, is_final=True)

    async def aclose(self) -> None:
        """Close the socket and stop the background tasks; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._keepalive.cancel()
        with contextlib.suppress(Exception):
            if self._ws.state.name == "OPEN":
                await self._ws.send(json.dumps({"type": "CloseStream"}))
            await asyncio.wait_for(self._ws.close(), timeout=2)
        self._reader.cancel()
        for task in (self._reader, self._keepalive):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- internals ----------------------------------------------------------------------------------------

    async def _wait_finalized(self) -> None:
        waiter = asyncio.ensure_future(self._finalized.wait())
        done, _ = await asyncio.wait({waiter, self._reader}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()

    async def _send(self, payload: bytes | str) -> None:
        try:
            await self._ws.send(payload)
        except ConnectionClosed as exc:
            await self._settle_reader()
            raise self._error or _translate(exc, self._model) from exc
        self._last_sent = asyncio.get_running_loop().time()

    async def _settle_reader(self) -> None:
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self._reader), timeout=1.0)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise BackendError(
                "stream is closed",
                category=ErrorCategory.INVALID_REQUEST,
                provider=PROVIDER,
                model=self._model,
            )

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                if isinstance(raw, bytes):
                    continue
                self._handle(json.loads(raw))
        except ConnectionClosed as exc:
            if exc.rcvd is None or exc.rcvd.code != 1000:
                self._error = _translate(exc, self._model)
        except Exception as exc:
            self._error = _translate(exc, self._model)
        else:
            if self._ws.close_code not in (None, 1000):
                self._error = BackendError(
                    f"stream closed ({self._ws.close_code} {self._ws.close_reason})",
                    category=_ws.category_for_close(self._ws.close_code),
                    provider=PROVIDER,
                    model=self._model,
                )
        finally:
            self._finalized.set()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "Results":
            result = _parse_results(message)
            if result.is_final:
                self._segments.append(result)
                if message.get("from_finalize"):
                    self._finalized.set()
            elif self._on_partial is not None and result.text:
                partial = _join([*self._segments, result], is_final=False)
                try:
                    self._on_partial(partial)
                except Exception:
                    log.exception("on_partial callback failed")
        elif kind == "Metadata":
            self.metadata = message
            self.request_id = message.get("request_id")
        elif kind == "Error" or "err_code" in message:
            self._error = BackendError(
                str(message.get("description") or message.get("err_msg") or message),
                category=ErrorCategory.SERVER,
                provider=PROVIDER,
                model=self._model,
            )

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._keepalive_interval / 2)
            if loop.time() - self._last_sent >= self._keepalive_interval:
                try:
                    await self._ws.send(json.dumps({"type": "KeepAlive"}))
                except ConnectionClosed:
                    return
                self._last_sent = loop.time()


class DeepgramSTT:
    """Deepgram live transcription as an :class:`~polymodal.backends.speech.STT`.

    Args:
        api_key: a Deepgram API key (sent as ``Authorization: Token ...``).
        model: Deepgram model (``nova-3``, ``nova-2``, ...).
        base_url: ``wss://`` origin of the API (a local fake in tests).
        sample_rate: rate of the PCM given to :meth:`DeepgramStream.send`.
        endpointing_ms: silence Deepgram waits before ``speech_final`` (our loop finalizes on its own VAD).
        keepalive_interval: seconds of silence on the socket before a ``KeepAlive`` is sent (Deepgram closes
            after 10 s without data).
    """

    provider = PROVIDER

    def __init__(
        self,
        api_key: str,
        model: str = "nova-3",
        *,
        base_url: str = DEFAULT_URL,
        sample_rate: int = 16_000,
        endpointing_ms: int = 300,
        keepalive_interval: float = 4.0,
        finalize_timeout: float = 5.0,
        open_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        extra_query: dict[str, str] | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("Deepgram needs an API key", hint="set DEEPGRAM_API_KEY")
        self.model = model
        self.sample_rate = sample_rate
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._endpointing_ms = endpointing_ms
        self._keepalive_interval = keepalive_interval
        self._finalize_timeout = finalize_timeout
        self._open_timeout = open_timeout
        self._retry = retry or RetryPolicy(max_attempts=3, total_timeout=30.0)
        self._extra_query = dict(extra_query or {})

    def url(self, options: STTOptions) -> str:
        """The ``/v1/listen`` URL with this stream's query parameters."""
        query: dict[str, str] = {
            "model": self.model,
            "encoding": "linear16",
            "sample_rate": str(self.sample_rate),
            "channels": "1",
            "interim_results": str(options.interim_results).lower(),
            "punctuate": "true",
            "smart_format": "true",
            "endpointing": str(self._endpointing_ms),
            "vad_events": "true",
        }
        if options.language:
            query["language"] = options.language
        if options.prompt:
            query["keyterm"] = options.prompt
        query.update(self._extra_query)
        return f"{self._base_url}/v1/listen?{urlencode(query)}"

    async def open_stream(
        self, options: STTOptions | None = None, on_partial: PartialCallback | None = None
    ) -> DeepgramStream:
        """Connect (retrying transient handshake failures) and start streaming."""
        url = self.url(options or STTOptions())
        headers = {"Authorization": f"Token {self._api_key}"}

        async def attempt() -> ClientConnection:
            try:
                return await _ws.open_socket(url, headers, open_timeout=self._open_timeout)
            except Exception as exc:
                raise _translate(exc, self.model) from exc

        ws = await call_with_retries(attempt, self._retry)
        return DeepgramStream(
            ws,
            self.model,
            on_partial=on_partial,
            keepalive_interval=self._keepalive_interval,
            finalize_timeout=self._finalize_timeout,
        )

    async def transcribe(self, audio: Audio, options: STTOptions | None = None) -> Transcript:
        """Stream a whole clip (converted once to mono at :attr:`sample_rate`) and return its transcript."""
        clip = audio.to_mono().resample(self.sample_rate)
        stream = await self.open_stream(options or STTOptions(interim_results=False))
        try:
            step = self.sample_rate // 10  # 100 ms frames, as a live client would send
            for offset in range(0, clip.num_samples, step):
                await stream.send(clip.samples[offset : offset + step])
            return await stream.close_stream()
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        """Nothing is held between streams."""


def create(settings: Settings, model: str = "nova-3", **kwargs: Any) -> DeepgramSTT:
    """Build from settings (``DEEPGRAM_API_KEY``, optional ``POLYMODAL_DEEPGRAM_URL``)."""
    key = settings.secret("deepgram_api_key") or ""
    return DeepgramSTT(key, model, base_url=settings.deepgram_url, **kwargs)


__all__ = ["DeepgramSTT", "DeepgramStream", "create"]
