"""Speech protocols — voice activity detection, speech-to-text and text-to-speech — and their value types.

Audio crosses these interfaces as **PCM**: a 1-D ``numpy.float32`` array of mono samples in ``[-1, 1]`` at the
sample rate the backend declares (``sample_rate``). Callers resample once, before the first backend, with
:meth:`polymodal.media.audio.Audio.resample`; backends never resample what they are given.

Three kinds of backend, one protocol each:

* :class:`VAD` — stateful, frame by frame: ``speech_probability(frame)`` for frames of exactly
  ``frame_samples`` samples. Turn-taking (how much silence ends a turn, how much speech starts one) is the
  caller's policy, not the VAD's.
* :class:`STT` — batch ``transcribe(audio)`` plus streaming ``open_stream()`` returning an
  :class:`STTStream`: ``send(pcm)`` audio as it arrives, receive interim hypotheses through ``on_partial``,
  and ``finalize()`` at the end of an utterance to get its final :class:`Transcript`. A batch-only engine
  gets streaming for free through :class:`BufferedSTTStream`.
* :class:`TTS` — ``stream(text_chunks)`` turns text that arrives piece by piece (an LLM stream) into
  :class:`TTSChunk` audio as early as the engine allows; each chunk says which text it voices, so a caller
  that stops playback part-way knows what was actually said. ``synthesize(text)`` is the one-shot form.

Every backend raises only :class:`~polymodal.errors.BackendError` (translated in its own module) and releases
what it holds in ``aclose()``. Cancelling the task that awaits a backend, or closing the async iterator
returned by :meth:`TTS.stream`, must stop the work promptly: the voice loop relies on it for barge-in.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from polymodal.media.audio import Audio

#: Mono float32 samples in [-1, 1] at a sample rate given alongside them.
PCM = NDArray[np.float32]


# ----------------------------------------------------------------------------------------------------
# Value types
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WordTiming:
    """One word with its time span in seconds (relative to the audio it came from or was spoken in)."""

    text: str
    start: float
    end: float
    confidence: float | None = None


@dataclass(frozen=True)
class Transcript:
    """Text recognised from speech.

    Attributes:
        text: the recognised text, stripped.
        is_final: False for an interim hypothesis (may still change), True once the engine commits to it.
        start: start of the transcribed audio in seconds, relative to the start of the stream or clip.
        end: end of the transcribed audio in seconds, on the same clock.
        language: detected or requested language code (``"en"``), when known.
        confidence: engine confidence in [0, 1], when it reports one.
        words: per-word timings, when the engine reports them.
    """

    text: str
    is_final: bool = True
    start: float | None = None
    end: float | None = None
    language: str | None = None
    confidence: float | None = None
    words: tuple[WordTiming, ...] = ()


@dataclass(frozen=True)
class STTOptions:
    """Per-stream or per-call recognition settings.

    Attributes:
        language: BCP-47 / ISO 639-1 code such as ``"en"``; None lets a multilingual engine detect it.
        prompt: domain words or previous context that biases recognition, where the engine supports it.
        interim_results: whether a stream should produce partial hypotheses at all.
    """

    language: str | None = "en"
    prompt: str | None = None
    interim_results: bool = True


@dataclass(frozen=True)
class TTSOptions:
    """Per-call synthesis settings.

    Attributes:
        voice: engine-specific voice id or name; None uses the backend's default voice.
        speed: speaking-rate multiplier (1.0 = the voice's natural rate), where the engine supports it.
    """

    voice: str | None = None
    speed: float = 1.0


@dataclass(frozen=True)
class TTSChunk:
    """A piece of synthesized speech.

    Attributes:
        pcm: mono float32 samples in [-1, 1].
        sample_rate: samples per second of ``pcm`` (the backend's ``sample_rate``).
        text: the text whose speech **starts** in this chunk ("" when the chunk continues the previous text).
            Concatenating ``text`` over all chunks gives exactly what was spoken; the voice loop uses it, with
            ``words`` where present, to keep only the played part of an interrupted reply in the history.
        words: word timings relative to the start of this chunk, when the engine reports an alignment.
    """

    pcm: PCM
    sample_rate: int
    text: str = ""
    words: tuple[WordTiming, ...] = ()

    @property
    def duration(self) -> float:
        """Length of the chunk in seconds."""
        return len(self.pcm) / self.sample_rate


#: Called with each interim hypothesis of an :class:`STTStream` (from the event loop's thread).
PartialCallback = Callable[[Transcript], None]


# ----------------------------------------------------------------------------------------------------
# Protocols
# ----------------------------------------------------------------------------------------------------


@runtime_checkable
class VAD(Protocol):
    """Voice activity detector: a speech probability per fixed-size frame.

    Attributes:
        name: short engine name for traces (``"silero"``, ``"webrtc"``).
        sample_rate: the rate frames must have (e.g. 16000).
        frame_samples: exact number of samples per frame (512 for silero at 16 kHz, 480 for 30 ms webrtc).
    """

    name: str
    sample_rate: int
    frame_samples: int

    def speech_probability(self, frame: PCM) -> float:
        """Probability in [0, 1] that ``frame`` contains speech. Stateful: feed frames of one stream in order.

        Raises:
            ValueError: when ``frame`` does not hold exactly ``frame_samples`` samples (a caller bug).
        """
        ...

    def reset(self) -> None:
        """Forget the state of the current stream before starting an unrelated one."""
        ...


@runtime_checkable
class STTStream(Protocol):
    """One open streaming-recognition session (one per conversation, reused across utterances)."""

    async def send(self, pcm: PCM) -> None:
        """Append audio (mono float32 at the owning STT's ``sample_rate``). Must not block on recognition."""
        ...

    async def finalize(self) -> Transcript:
        """End the current utterance: the final transcript of everything sent since the last finalize.

        The utterance is fixed when ``finalize()`` is *called*: audio sent while it is still awaiting belongs
        to the next utterance (the voice loop keeps sending while an earlier segment is being finalized).
        The stream stays open for the next utterance. The text is empty when nothing was said.
        """
        ...

    async def aclose(self) -> None:
        """Close the session and release its resources; idempotent."""
        ...


@runtime_checkable
class STT(Protocol):
    """Speech-to-text engine, batch and streaming.

    Attributes:
        provider: engine or service name (``"whisper"``, ``"deepgram"``).
        model: model name within the provider (``"tiny.en"``, ``"nova-3"``).
        sample_rate: rate of the PCM that :meth:`STTStream.send` accepts.
    """

    provider: str
    model: str
    sample_rate: int

    async def transcribe(self, audio: Audio, options: STTOptions | None = None) -> Transcript:
        """Transcribe a whole clip (any rate and channel count: the backend converts it once)."""
        ...

    async def open_stream(
        self, options: STTOptions | None = None, on_partial: PartialCallback | None = None
    ) -> STTStream:
        """Start a streaming session; ``on_partial`` receives interim hypotheses as they appear."""
        ...

    async def aclose(self) -> None:
        """Release models or connections held by the engine; idempotent."""
        ...


@runtime_checkable
class TTS(Protocol):
    """Text-to-speech engine that starts speaking before the text is complete.

    Attributes:
        provider: engine or service name (``"piper"``, ``"elevenlabs"``).
        model: voice or model name.
        sample_rate: rate of every :class:`TTSChunk` it yields.
    """

    provider: str
    model: str
    sample_rate: int

    def stream(self, text: AsyncIterable[str], options: TTSOptions | None = None) -> AsyncIterator[TTSChunk]:
        """Speak text that arrives in pieces (e.g. LLM deltas), yielding audio as soon as it is ready.

        Engines that synthesize whole sentences split the incoming text with :class:`SentenceSplitter`.
        Closing the returned iterator (or cancelling its consumer) stops synthesis promptly.
        """
        ...

    async def synthesize(self, text: str, options: TTSOptions | None = None) -> Audio:
        """Speak a complete text and return all of it as one clip."""
        ...

    async def aclose(self) -> None:
        """Release models or connections held by the engine; idempotent."""
        ...


# ----------------------------------------------------------------------------------------------------
# Helpers shared by backends
# ----------------------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+|\n+")
_CLAUSE_END = re.compile(r"(?<=[,.!?;:])[\"')\]]*\s+|\s+[-\u2013\u2014]+\s+|\n+")


@dataclass
class SentenceSplitter:
    """Cut streamed text into speakable sentences.

    ``push(delta)`` returns the sentences completed by that delta (a sentence ends at ``. ! ? ; :``
    followed by whitespace, or at a newline); ``flush()`` returns what is left at the end of the stream. A
    sentence shorter than ``min_chars`` is held back and joined to the next one, so the engine is not asked
    for single words. With ``first_clause_chars``, the *first* piece of a stream may also end at a comma or
    dash once it is that long — the reply starts sounding sooner when the LLM writes slowly.

    Every returned piece keeps its trailing whitespace, so ``"".join(all pieces) == "".join(all deltas)``.
    """

    min_chars: int = 12
    first_clause_chars: int | None = None
    _buffer: str = field(default="", init=False)
    _emitted: bool = field(default=False, init=False)

    def push(self, delta: str) -> list[str]:
        """Add streamed text; return the sentences it completed, in order."""
        self._buffer += delta
        out: list[str] = []
        start = 0
        if not self._emitted and self.first_clause_chars is not None:
            for match in _CLAUSE_END.finditer(self._buffer):
                if match.end() >= self.first_clause_chars:
                    out.append(self._buffer[: match.end()])
                    start = match.end()
                    break
        for match in _SENTENCE_END.finditer(self._buffer, start):
            piece_end = match.end()
            if piece_end - start < self.min_chars:
                continue
            out.append(self._buffer[start:piece_end])
            start = piece_end
        self._buffer = self._buffer[start:]
        self._emitted = self._emitted or bool(out)
        return out

    def flush(self) -> list[str]:
        """Return the unfinished tail (if it holds anything besides whitespace) and reset."""
        rest, self._buffer, self._emitted = self._buffer, "", False
        return [rest] if rest.strip() else []


async def split_sentences(
    text: AsyncIterable[str], min_chars: int = 12, first_clause_chars: int | None = None
) -> AsyncIterator[str]:
    """Yield speakable sentences from streamed text as soon as each one is complete."""
    splitter = SentenceSplitter(min_chars=min_chars, first_clause_chars=first_clause_chars)
    async for delta in text:
        for sentence in splitter.push(delta):
            yield sentence
    for sentence in splitter.flush():
        yield sentence


async def iterate_text(text: str) -> AsyncIterator[str]:
    """Wrap a complete text as a one-piece async stream (for ``TTS.synthesize`` built on ``TTS.stream``)."""
    yield text


class BufferedSTTStream:
    """Streaming for a batch-only engine: buffer what is sent, transcribe it all on ``finalize``.

    No partials are produced. ``transcribe`` is the engine's batch call on a clip of the buffered audio.
    """

    def __init__(
        self,
        transcribe: Callable[[Audio], Coroutine[Any, Any, Transcript]],
        sample_rate: int,
    ) -> None:
        self._transcribe = transcribe
        self._sample_rate = sample_rate
        self._pieces: list[PCM] = []
        self._offset = 0.0
        self._closed = False

    async def send(self, pcm: PCM) -> None:
        """Buffer audio for the current utterance."""
        if self._closed:
            raise RuntimeError("send() on a closed STT stream")
        self._pieces.append(np.asarray(pcm, dtype=np.float32))

    async def finalize(self) -> Transcript:
        """Transcribe the buffered utterance and start a new one."""
        from polymodal.media.audio import Audio

        pieces, self._pieces = self._pieces, []
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        start = self._offset
        self._offset += len(pcm) / self._sample_rate
        if len(pcm) == 0:
            return Transcript(text="", is_final=True, start=start, end=start)
        result = await self._transcribe(Audio(pcm, self._sample_rate))
        return Transcript(
            text=result.text,
            is_final=True,
            start=start,
            end=self._offset,
            language=result.language,
            confidence=result.confidence,
            words=result.words,
        )

    async def aclose(self) -> None:
        """Drop buffered audio."""
        self._closed = True
        self._pieces = []


__all__ = [
    "PCM",
    "STT",
    "TTS",
    "VAD",
    "BufferedSTTStream",
    "PartialCallback",
    "STTOptions",
    "STTStream",
    "SentenceSplitter",
    "TTSChunk",
    "TTSOptions",
    "Transcript",
    "WordTiming",
    "iterate_text",
    "split_sentences",
]
