"""The voice loop: typed frames through VAD -> STT -> LLM -> TTS -> output, with barge-in and a trace."""

from polymodal.pipelines.voice.frames import (
    ControlFrame,
    DataFrame,
    EndFrame,
    Frame,
    InputAudioFrame,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    SpeechStartedFrame,
    SpeechStoppedFrame,
    StartFrame,
    SystemFrame,
    TranscriptFrame,
    TTSAudioFrame,
    TTSEndFrame,
    UserTurnEndFrame,
    UserTurnFrame,
)
from polymodal.pipelines.voice.loop import VoiceLoop, VoiceLoopConfig
from polymodal.pipelines.voice.output import AudioSink, Playback, SimulatedSpeaker
from polymodal.pipelines.voice.processor import Emit, FrameProcessor, Pipeline
from polymodal.pipelines.voice.session import Conversation, LatencyTrace, Turn, VoiceSession, summarize
from polymodal.pipelines.voice.simulate import BargeIn, EchoPath, SimulationResult, simulate
from polymodal.pipelines.voice.turns import TurnTakingConfig

__all__ = [
    "AudioSink",
    "BargeIn",
    "ControlFrame",
    "Conversation",
    "DataFrame",
    "EchoPath",
    "Emit",
    "EndFrame",
    "Frame",
    "FrameProcessor",
    "InputAudioFrame",
    "InterruptionFrame",
    "LLMResponseEndFrame",
    "LLMResponseStartFrame",
    "LLMTextFrame",
    "LatencyTrace",
    "Pipeline",
    "Playback",
    "SimulatedSpeaker",
    "SimulationResult",
    "SpeechStartedFrame",
    "SpeechStoppedFrame",
    "StartFrame",
    "SystemFrame",
    "TTSAudioFrame",
    "TTSEndFrame",
    "TranscriptFrame",
    "Turn",
    "TurnTakingConfig",
    "UserTurnEndFrame",
    "UserTurnFrame",
    "VoiceLoop",
    "VoiceLoopConfig",
    "VoiceSession",
    "simulate",
    "summarize",
]
