"""OpenAI speech-to-text (``/v1/audio/transcriptions``) and text-to-speech (``/v1/audio/speech``).

Both go through the ``openai`` SDK with ``max_retries=0`` (the one retry layer is :mod:`._retry`), and SDK
exceptions are translated by the same function as the OpenAI chat adapter
(:func:`~polymodal.backends.openai_compat.translate_error`), so a 429 or a bad key reads the
same whichever OpenAI endpoint produced it.

* :class:`OpenAISTT` transcribes a clip (sent as 16-bit WAV). Its stream buffers an utterance and, at
  ``finalize``, transcribes it with ``stream=True``: the ``transcript.text.delta`` events reach
  ``on_partial`` as they arrive and ``transcript.text.done`` is the final text. (The HTTP endpoint transcribes
  finished audio; for transcripts *while* the user speaks use Deepgram or the Realtime API.)
* :class:`OpenAITTS` speaks text a sentence at a time with ``response_format="pcm"`` (24 kHz 16-bit mono),
  yielding audio as the response body streams in.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from polymodal.backends import _http, _ws
from polymodal.backends._retry import RetryPolicy, call_with_retries, stream_with_retries
from polymodal.backends.speech import (
    PCM,
    PartialCallback,
    STTOptions,
    Transcript,
    TTSChunk,
    TTSOptions,
    iterate_text,
    split_sentences,
)
from polymodal.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from polymodal.config import Settings
    from polymodal.media.audio import Audio

PROVIDER = "openai"
DEFAULT_URL = "https://api.openai.com/v1"
TTS_RATE = 24_000


@dataclass(frozen=True)
class _Endpoint:
    """What the shared OpenAI error translation reads: provider, model and base URL."""

    provider: str
    model: str
    base_url: str


def _translate(exc: Exception, endpoint: _Endpoint) -> BackendError:
    """Reuse the OpenAI chat adapter's translation (the one mapping of ``openai`` SDK errors)."""
    from polymodal.backends.openai_compat import translate_error

    return translate_error(exc, provider=endpoint.provider, model=endpoint.model, base_url=endpoint.base_url)


class _Client:
    """An ``AsyncOpenAI`` client per event loop, with SDK retries off."""

    def __init__(self, api_key: str, base_url: str, timeout: float) -> None:
        if not api_key:
            raise ConfigError("OpenAI speech needs an API key", hint="set OPENAI_API_KEY")
        self.base_url = base_url.rstrip("/")

        def build() -> AsyncOpenAI:
            from openai import AsyncOpenAI

            return AsyncOpenAI(api_key=api_key, base_url=self.base_url, timeout=timeout, max_retries=0)

        self._clients = _http.LoopBound(build)

    def get(self) -> AsyncOpenAI:
        return self._clients.get()

    async def aclose(self) -> None:
        client = self._clients.current()
        if client is not None:
            await client.close()


class OpenAISTT:
    """OpenAI transcription as an :class:`~polymodal.backends.speech.STT`."""

    provider = PROVIDER
    sample_rate = 16_000

    def __init__(
        self,
        api_key: str,
        model: str = "gpt-4o-mini-transcribe",
        *,
        base_url: str = DEFAULT_URL,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.model = model
        self._client = _Client(api_key, base_url, timeout)
        self._endpoint = _Endpoint(PROVIDER, model, self._client.base_url)
        self._retry = retry or RetryPolicy()

    def _request(self, audio: Audio, options: STTOptions) -> dict[str, Any]:
        wav = audio.to_mono().resample(self.sample_rate).to_wav_bytes()
        params: dict[str, Any] = {"model": self.model, "file": ("speech.wav", wav, "audio/wav")}
        if options.language:
            params["language"] = options.language
        if options.prompt:
            params["prompt"] = options.prompt
        return params

    async def transcribe(self, audio: Audio, options: STTOptions | None = None) -> Transcript:
        """Transcribe a whole clip."""
        opts = options or STTOptions()
        params = self._request(audio, opts)

        async def attempt() -> Transcript:
            try:
                result = await self._client.get().audio.transcriptions.create(
                    **params, response_format="json"
                )
            except Exception as exc:
                raise _translate(exc, self._endpoint) from exc
            return Transcript(
                text=str(result.text).strip(), start=0.0, end=audio.duration, language=opts.language
            )

        return await call_with_retries(attempt, self._retry)

    async def transcribe_streaming(
        self, audio: Audio, options: STTOptions | None = None, on_partial: PartialCallback | None = None
    ) -> Transcript:
        """Transcribe a clip with ``stream=True``: text deltas go to ``on_partial`` as they arrive."""
        opts = options or STTOptions()
        params = self._request(audio, opts)

        async def attempt() -> Transcript:
            text = ""
            try:
                events = await self._client.get().audio.transcriptions.create(**params, stream=True)
                async for event in events:
                    if event.type == "transcript.text.delta":
                        text += event.delta
                        if on_partial is not None and text.strip():
                            on_partial(Transcript(text=text.strip(), is_final=False, language=opts.language))
                    elif event.type == "transcript.text.done":
                        text = event.text
            except Exception as exc:
                raise _translate(exc, self._endpoint) from exc
            return Transcript(text=text.strip(), start=0.0, end=audio.duration, language=opts.language)

        return await call_with_retries(attempt, self._retry)

    async def open_stream(
        self, options: STTOptions | None = None, on_partial: PartialCallback | None = None
    ) -> OpenAISTTStream:
        """A stream that transcribes each utterance at ``finalize`` (partials stream in during it)."""
        return OpenAISTTStream(self, options or STTOptions(), on_partial)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()


class OpenAISTTStream:
    """Buffers one utterance; ``finalize`` transcribes it with streamed output."""

    def __init__(self, stt: OpenAISTT, options: STTOptions, on_partial: PartialCallback | None) -> None:
        self._stt = stt
        self._options = options
        self._on_partial = on_partial if options.interim_results else None
        self._pieces: list[PCM] = []
        self._offset = 0.0
        self._closed = False

    async def send(self, pcm: PCM) -> None:
        """Buffer audio (float32 mono at 16 kHz)."""
        if self._closed:
            raise RuntimeError("send() on a closed STT stream")
        self._pieces.append(np.asarray(pcm, dtype=np.float32))

    async def finalize(self) -> Transcript:
        """Transcribe the buffered utterance; times are on the stream's clock."""
        from polymodal.media.audio import Audio

        pieces, self._pieces = self._pieces, []
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        start = self._offset
        self._offset += len(pcm) / self._stt.sample_rate
        if len(pcm) < self._stt.sample_rate // 10:  # under 100 ms: nothing worth sending
            return Transcript(text="", start=start, end=self._offset, language=self._options.language)
        result = await self._stt.transcribe_streaming(
            Audio(pcm, self._stt.sample_rate), self._options, self._on_partial
        )
        return Transcript(text=result.text, start=start, end=self._offset, language=result.language)

    async def aclose(self) -> None:
        """Drop buffered audio."""
        self._closed = True
        self._pieces = []


class OpenAITTS:
    """OpenAI speech synthesis as a :class:`~polymodal.backends.speech.TTS` (24 kHz PCM, per sentence)."""

    provider = PROVIDER
    sample_rate = TTS_RATE

    def __init__(
        self,
        api_key: str,
        model: str = "gpt-4o-mini-tts",
        *,
        voice: str = "alloy",
        instructions: str | None = None,
        base_url: str = DEFAULT_URL,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.model = model
        self.voice = voice
        self.instructions = instructions
        self._client = _Client(api_key, base_url, timeout)
        self._endpoint = _Endpoint(PROVIDER, model, self._client.base_url)
        self._retry = retry or RetryPolicy()

    def _speak(self, sentence: str, options: TTSOptions) -> Callable[[], AsyncIterator[PCM]]:
        params: dict[str, Any] = {
            "model": self.model,
            "voice": options.voice or self.voice,
            "input": sentence,
            "response_format": "pcm",
            "speed": options.speed,
        }
        if self.instructions:
            params["instructions"] = self.instructions

        async def attempt() -> AsyncIterator[PCM]:
            carry = b""
            try:
                speech = self._client.get().audio.speech.with_streaming_response.create(**params)
                async with speech as response:
                    async for data in response.iter_bytes():
                        data = carry + data
                        usable = len(data) - len(data) % 2
                        carry = data[usable:]
                        if usable:
                            yield _ws.from_pcm16(data[:usable])
            except Exception as exc:
                raise _translate(exc, self._endpoint) from exc

        return attempt

    async def stream(
        self, text: AsyncIterable[str], options: TTSOptions | None = None
    ) -> AsyncIterator[TTSChunk]:
        """Speak each sentence as soon as it is complete; audio chunks stream as the body arrives."""
        opts = options or TTSOptions()
        async for sentence in split_sentences(text):
            first = True
            async for pcm in stream_with_retries(self._speak(sentence, opts), self._retry):
                yield TTSChunk(pcm=pcm, sample_rate=TTS_RATE, text=sentence if first else "")
                first = False

    async def synthesize(self, text: str, options: TTSOptions | None = None) -> Audio:
        """Speak a complete text as one clip."""
        from polymodal.media.audio import Audio

        pieces = [chunk.pcm async for chunk in self.stream(iterate_text(text), options)]
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return Audio(pcm, TTS_RATE, source=f"openai:{self.model}")

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()


def _base(settings: Settings) -> str:
    return settings.openai_base_url or DEFAULT_URL


def create_stt(settings: Settings, model: str = "gpt-4o-mini-transcribe", **kwargs: Any) -> OpenAISTT:
    """Build the transcriber from settings (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``)."""
    return OpenAISTT(settings.secret("openai_api_key") or "", model, base_url=_base(settings), **kwargs)


def create_tts(settings: Settings, model: str = "gpt-4o-mini-tts", **kwargs: Any) -> OpenAITTS:
    """Build the synthesizer from settings (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``)."""
    return OpenAITTS(settings.secret("openai_api_key") or "", model, base_url=_base(settings), **kwargs)


__all__ = ["OpenAISTT", "OpenAISTTStream", "OpenAITTS", "create_stt", "create_tts"]
