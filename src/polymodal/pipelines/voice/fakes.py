"""Deterministic stand-ins for speech engines, with configurable latencies (for tests and benchmarks).

* :class:`EnergyVAD` — speech when a frame's RMS exceeds a threshold.
* :class:`ScriptedSTT` — scripted texts, one per finalized utterance, ``final_latency`` after the call.
* :class:`ToneTTS` — speaks each sentence as a tone whose length follows the text, first audio after
  ``first_audio_latency``.

They implement the protocols of :mod:`polymodal.backends.speech` exactly like real engines.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable

import numpy as np

from polymodal.backends.speech import (
    PCM,
    PartialCallback,
    STTOptions,
    Transcript,
    TTSChunk,
    TTSOptions,
    split_sentences,
)
from polymodal.media.audio import Audio


class EnergyVAD:
    """Speech probability 1.0 when the frame's RMS is at least ``threshold``, else 0.0."""

    name = "energy"

    def __init__(self, sample_rate: int = 16000, frame_samples: int = 512, threshold: float = 0.02) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        self.threshold = threshold

    def speech_probability(self, frame: PCM) -> float:
        """1.0 for loud frames, 0.0 for quiet ones."""
        if frame.shape != (self.frame_samples,):
            raise ValueError(f"need frames of {self.frame_samples} samples, got {frame.shape}")
        return 1.0 if float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) >= self.threshold else 0.0

    def reset(self) -> None:
        """Stateless."""


class ScriptedSTT:
    """An STT whose finals come from a script (or ``default``), after ``final_latency`` seconds.

    ``final_at`` (optional) decides the latency per utterance instead: it gets the monotonic time of the
    ``finalize()`` call and returns the monotonic time the final is due (used to model "final N ms after the
    end of speech").
    """

    provider = "scripted"
    model = "fake"

    def __init__(
        self,
        texts: Iterable[str] = (),
        *,
        default: str = "",
        final_latency: float = 0.0,
        final_at: Callable[[float], float] | None = None,
        sample_rate: int = 16000,
    ) -> None:
        self.texts = deque(texts)
        self.default = default
        self.final_latency = final_latency
        self.final_at = final_at
        self.sample_rate = sample_rate
        self.received_seconds = 0.0

    def next_text(self) -> str:
        """The next scripted text."""
        return self.texts.popleft() if self.texts else self.default

    async def transcribe(self, audio: Audio, options: STTOptions | None = None) -> Transcript:
        """The next scripted text."""
        await asyncio.sleep(self.final_latency)
        return Transcript(text=self.next_text(), end=audio.duration)

    async def open_stream(
        self, options: STTOptions | None = None, on_partial: PartialCallback | None = None
    ) -> ScriptedStream:
        """A stream that counts the audio it gets and answers from the script."""
        return ScriptedStream(self)

    async def aclose(self) -> None:
        """Nothing to release."""


class ScriptedStream:
    """Stream of :class:`ScriptedSTT`."""

    def __init__(self, engine: ScriptedSTT) -> None:
        self.engine = engine
        self.samples = 0

    async def send(self, pcm: PCM) -> None:
        """Count the audio."""
        self.samples += len(pcm)
        self.engine.received_seconds += len(pcm) / self.engine.sample_rate

    async def finalize(self) -> Transcript:
        """The next scripted text, after the configured latency (empty if no audio was sent)."""
        loop = asyncio.get_running_loop()
        had_audio, self.samples = self.samples > 0, 0
        due = (
            self.engine.final_at(loop.time())
            if self.engine.final_at
            else loop.time() + self.engine.final_latency
        )
        await asyncio.sleep(max(0.0, due - loop.time()))
        return Transcript(text=self.engine.next_text() if had_audio else "")

    async def aclose(self) -> None:
        """Nothing to release."""


class ToneTTS:
    """Speaks each sentence as a 220 Hz tone, ``seconds_per_char`` long per character.

    The first chunk of every stream comes ``first_audio_latency`` seconds after its sentence is complete.
    """

    provider = "tone"
    model = "fake"

    def __init__(
        self, *, sample_rate: int = 16000, seconds_per_char: float = 0.06, first_audio_latency: float = 0.0
    ) -> None:
        self.sample_rate = sample_rate
        self.seconds_per_char = seconds_per_char
        self.first_audio_latency = first_audio_latency
        self.spoken: list[str] = []

    def render(self, text: str) -> PCM:
        """The tone for ``text``."""
        n = max(1, round(len(text.strip()) * self.seconds_per_char * self.sample_rate))
        t = np.arange(n) / self.sample_rate
        return (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)

    async def stream(
        self, text: AsyncIterable[str], options: TTSOptions | None = None
    ) -> AsyncIterator[TTSChunk]:
        """One tone per sentence."""
        first = True
        async for sentence in split_sentences(text, min_chars=1):
            if first and self.first_audio_latency:
                await asyncio.sleep(self.first_audio_latency)
            first = False
            self.spoken.append(sentence)
            yield TTSChunk(pcm=self.render(sentence), sample_rate=self.sample_rate, text=sentence)

    async def synthesize(self, text: str, options: TTSOptions | None = None) -> Audio:
        """The whole text as one tone."""
        return Audio(self.render(text), self.sample_rate, source="tone")

    async def aclose(self) -> None:
        """Nothing to release."""


__all__ = ["EnergyVAD", "ScriptedSTT", "ScriptedStream", "ToneTTS"]
