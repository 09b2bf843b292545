"""Classic speech-to-text with CMU PocketSphinx (en-us model and LM inside the ``pocketsphinx`` wheel).

Truly incremental: the decoder consumes audio as it arrives, so a partial hypothesis costs nothing extra and
``finalize()`` only closes the utterance (tens of milliseconds). Less accurate than whisper on open speech.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from polymodal.backends.speech import PCM, PartialCallback, STTOptions, Transcript
from polymodal.errors import BackendError, ConfigError, ErrorCategory
from polymodal.media.audio import Audio

SAMPLE_RATE = 16000


def _pcm16(pcm: PCM) -> bytes:
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class PocketsphinxSTT:
    """PocketSphinx speech-to-text (:class:`~polymodal.backends.speech.STT`), English by default.

    ``decoder_options`` are passed to ``pocketsphinx.Decoder`` (e.g. ``hmm=``, ``lm=``, ``dict=`` for another
    language or a grammar).
    """

    provider = "pocketsphinx"
    model = "en-us"
    sample_rate = SAMPLE_RATE

    def __init__(self, **decoder_options: Any) -> None:
        try:
            import pocketsphinx
        except ImportError as exc:
            raise ConfigError("PocketSphinx STT needs pocketsphinx", hint="pip install pocketsphinx") from exc
        self._module = pocketsphinx
        self._options = {"samprate": SAMPLE_RATE, "loglevel": "FATAL", **decoder_options}

    def new_decoder(self) -> Any:
        """A fresh decoder (one per stream; loading takes about 0.2 s)."""
        try:
            return self._module.Decoder(**self._options)
        except (RuntimeError, ValueError) as exc:
            raise BackendError(str(exc), category=ErrorCategory.UNAVAILABLE, provider="pocketsphinx") from exc

    def decode(self, pcm: PCM) -> str:
        """Blocking batch decode of 16 kHz mono PCM."""
        decoder = self.new_decoder()
        try:
            decoder.start_utt()
            decoder.process_raw(_pcm16(pcm), no_search=False, full_utt=True)
            decoder.end_utt()
        except RuntimeError as exc:
            raise BackendError(str(exc), category=ErrorCategory.SERVER, provider="pocketsphinx") from exc
        hyp = decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""

    async def transcribe(self, audio: Audio, options: STTOptions | None = None) -> Transcript:
        """Transcribe a whole clip (converted to 16 kHz mono once)."""
        pcm = audio.to_mono().resample(SAMPLE_RATE).samples
        text = await asyncio.to_thread(self.decode, pcm)
        return Transcript(text=text, is_final=True, start=0.0, end=audio.duration, language="en")

    async def open_stream(
        self, options: STTOptions | None = None, on_partial: PartialCallback | None = None
    ) -> PocketsphinxStream:
        """Start a streaming session with its own decoder."""
        decoder = await asyncio.to_thread(self.new_decoder)
        opts = options or STTOptions()
        return PocketsphinxStream(decoder, on_partial if opts.interim_results else None)

    async def aclose(self) -> None:
        """Nothing is held between streams."""


class PocketsphinxStream:
    """One streaming session: audio is decoded as it is sent, under a lock that serializes decoder access."""

    def __init__(self, decoder: Any, on_partial: PartialCallback | None) -> None:
        self._decoder = decoder
        self._on_partial = on_partial
        self._lock = asyncio.Lock()
        self._in_utterance = False
        self._offset = 0.0
        self._samples = 0
        self._last_partial = ""

    def _feed(self, pcm: PCM) -> str | None:
        if not self._in_utterance:
            self._decoder.start_utt()
            self._in_utterance = True
        self._decoder.process_raw(_pcm16(pcm), no_search=False, full_utt=False)
        hyp = self._decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else None

    def _end(self) -> str:
        if not self._in_utterance:
            return ""
        self._decoder.end_utt()
        self._in_utterance = False
        hyp = self._decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""

    async def send(self, pcm: PCM) -> None:
        """Decode the new audio; report a changed partial hypothesis."""
        self._samples += len(pcm)
        async with self._lock:
            try:
                partial = await asyncio.to_thread(self._feed, np.asarray(pcm, dtype=np.float32))
            except RuntimeError as exc:
                raise BackendError(str(exc), category=ErrorCategory.SERVER, provider="pocketsphinx") from exc
        if partial and partial != self._last_partial and self._on_partial is not None:
            self._last_partial = partial
            self._on_partial(Transcript(text=partial, is_final=False, start=self._offset))

    async def finalize(self) -> Transcript:
        """Close the utterance and return its final hypothesis."""
        start = self._offset
        self._offset += self._samples / SAMPLE_RATE
        self._samples, self._last_partial = 0, ""
        async with self._lock:
            try:
                text = await asyncio.to_thread(self._end)
            except RuntimeError as exc:
                raise BackendError(str(exc), category=ErrorCategory.SERVER, provider="pocketsphinx") from exc
        return Transcript(text=text, is_final=True, start=start, end=self._offset, language="en")

    async def aclose(self) -> None:
        """End any open utterance."""
        async with self._lock:
            if self._in_utterance:
                await asyncio.to_thread(self._end)


__all__ = ["SAMPLE_RATE", "PocketsphinxSTT", "PocketsphinxStream"]
