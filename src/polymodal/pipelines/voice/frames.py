"""Typed frames that flow through the voice pipeline.

Two tiers decide what an interruption (barge-in) does:

* :class:`SystemFrame` — the user's side and the pipeline's own signals: input audio, VAD events, user
  transcripts, interruptions, start/end. They **survive** an interruption and are always processed in order.
* :class:`DataFrame` — the agent's side: the user turn handed to the LLM, LLM text, TTS audio, and the
  :class:`ControlFrame` markers that delimit a response. An interruption **drops** them from every queue and
  cancels the one being processed, so a stale reply can neither be generated further nor played.

Times: ``t`` fields are seconds on the session clock (0 = first input sample); media times and measured stage
times share that clock, so a latency is a plain difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polymodal.backends.speech import PCM, Transcript, WordTiming


@dataclass(frozen=True, kw_only=True)
class Frame:
    """Base of every frame."""


@dataclass(frozen=True, kw_only=True)
class SystemFrame(Frame):
    """A frame that survives interruptions."""


@dataclass(frozen=True, kw_only=True)
class DataFrame(Frame):
    """A frame that an interruption cancels (dropped if queued, its processing cancelled if in flight)."""


@dataclass(frozen=True, kw_only=True)
class ControlFrame(DataFrame):
    """An in-band marker ordered with the data it delimits (and cancelled with it)."""


# -- system frames ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StartFrame(SystemFrame):
    """First frame of a session: processors open streams and reset state."""


@dataclass(frozen=True, kw_only=True)
class EndFrame(SystemFrame):
    """Last frame of a session: processors finish their work, release resources and pass it on."""


@dataclass(frozen=True, kw_only=True)
class InputAudioFrame(SystemFrame):
    """Microphone audio: mono float32 PCM starting at session time ``t``."""

    pcm: PCM
    sample_rate: int
    t: float

    @property
    def end(self) -> float:
        """Session time of the sample after the last one."""
        return self.t + len(self.pcm) / self.sample_rate


@dataclass(frozen=True, kw_only=True)
class SpeechStartedFrame(SystemFrame):
    """The VAD confirmed user speech that began at ``t``; ``new_turn`` is False when a paused turn resumes."""

    turn_id: int
    t: float
    new_turn: bool = True


@dataclass(frozen=True, kw_only=True)
class SpeechStoppedFrame(SystemFrame):
    """User speech paused; the last speech ended at ``t``. The turn may still resume."""

    turn_id: int
    t: float


@dataclass(frozen=True, kw_only=True)
class UserTurnEndFrame(SystemFrame):
    """Enough silence followed the speech: the user's turn is over.

    ``speech_end`` is when the speech ended; ``speech_seconds`` how much speech the turn held; ``accepted`` is
    False for turns shorter than the minimum (coughs, clicks), which get no reply.
    """

    turn_id: int
    speech_end: float
    speech_seconds: float
    accepted: bool = True


@dataclass(frozen=True, kw_only=True)
class TranscriptFrame(SystemFrame):
    """A partial or final transcript of the user's speech."""

    turn_id: int
    transcript: Transcript

    @property
    def is_final(self) -> bool:
        """True for the final transcript of a whole turn."""
        return self.transcript.is_final


@dataclass(frozen=True, kw_only=True)
class InterruptionFrame(SystemFrame):
    """The user spoke while the agent was responding: cancel data frames and stop playback.

    ``detected_at`` is the session time the VAD confirmed the speech (the start of the stop-latency budget).
    """

    turn_id: int
    detected_at: float


# -- data frames --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class UserTurnFrame(DataFrame):
    """The text of a finished user turn, handed to the LLM stage."""

    turn_id: int
    text: str


@dataclass(frozen=True, kw_only=True)
class LLMResponseStartFrame(ControlFrame):
    """The agent starts answering turn ``turn_id``."""

    turn_id: int


@dataclass(frozen=True, kw_only=True)
class LLMTextFrame(DataFrame):
    """A piece of the agent's streamed reply text."""

    turn_id: int
    text: str


@dataclass(frozen=True, kw_only=True)
class LLMResponseEndFrame(ControlFrame):
    """The reply text of turn ``turn_id`` is complete (or nothing more will come)."""

    turn_id: int


@dataclass(frozen=True, kw_only=True)
class TTSAudioFrame(DataFrame):
    """Synthesized speech for turn ``turn_id``; ``text`` is the reply text whose speech starts here."""

    turn_id: int
    pcm: PCM
    sample_rate: int
    text: str = ""
    words: tuple[WordTiming, ...] = ()

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.pcm) / self.sample_rate


@dataclass(frozen=True, kw_only=True)
class TTSEndFrame(ControlFrame):
    """All audio of turn ``turn_id`` has been produced."""

    turn_id: int


def silence_frame(seconds: float, sample_rate: int, t: float) -> InputAudioFrame:
    """An input frame of digital silence (used to flush the VAD at the end of input)."""
    pcm = np.zeros(round(seconds * sample_rate), dtype=np.float32)
    return InputAudioFrame(pcm=pcm, sample_rate=sample_rate, t=t)


__all__ = [
    "ControlFrame",
    "DataFrame",
    "EndFrame",
    "Frame",
    "InputAudioFrame",
    "InterruptionFrame",
    "LLMResponseEndFrame",
    "LLMResponseStartFrame",
    "LLMTextFrame",
    "SpeechStartedFrame",
    "SpeechStoppedFrame",
    "StartFrame",
    "SystemFrame",
    "TTSAudioFrame",
    "TTSEndFrame",
    "TranscriptFrame",
    "UserTurnEndFrame",
    "UserTurnFrame",
    "silence_frame",
]
