"""The offline voice loop as a per-session factory (used by ``polymodal voice serve`` and embedders).

Models are loaded once and shared by every session; what holds per-stream state (the VAD, the session and
its history) is new for each session.
"""

from __future__ import annotations

from collections.abc import Callable

from polymodal.config import Settings
from polymodal.pipelines.voice.loop import VoiceLoop, VoiceLoopConfig
from polymodal.pipelines.voice.output import AudioSink
from polymodal.pipelines.voice.processor import Emit
from polymodal.pipelines.voice.stack import make_llm, make_stt, make_tts, make_vad

#: ``build(sink, observer)`` -> a ready voice loop for one session.
LoopFactory = Callable[[AudioSink, Emit], VoiceLoop]


def offline_loop_builder(
    settings: Settings,
    config: VoiceLoopConfig | None = None,
    *,
    vad: str = "silero",
    stt: str = "whisper",
    tts: str = "auto",
    llm: str | None = None,
) -> tuple[LoopFactory, int]:
    """Load the offline stack once; return ``(build, tts_sample_rate)``.

    ``llm`` defaults to ``settings.default_model`` (``offline:smollm2`` unless configured otherwise).
    """
    stt_engine = make_stt(stt)
    tts_engine = make_tts(tts)
    chat = make_llm(llm or settings.default_model)
    make_vad(vad)  # fail at start-up, not on the first session, when the VAD is missing

    def build(sink: AudioSink, observer: Emit) -> VoiceLoop:
        return VoiceLoop(make_vad(vad), stt_engine, chat, tts_engine, sink, config, observer=observer)

    return build, tts_engine.sample_rate


__all__ = ["LoopFactory", "offline_loop_builder"]
