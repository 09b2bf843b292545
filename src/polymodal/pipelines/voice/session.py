"""State shared by the stages of one voice session: clock, conversation history, latency trace, playback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polymodal.backends.messages import Message
from polymodal.backends.speech import PCM


class SessionClock:
    """Seconds since the session started (monotonic); input media time 0 is the same instant."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def restart(self) -> None:
        """Make now time 0."""
        self._t0 = time.monotonic()

    def now(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self._t0

    def at(self, t: float) -> float:
        """The ``time.monotonic()`` value of session time ``t``."""
        return self._t0 + t


def truncate_to_fraction(text: str, fraction: float) -> str:
    """The words of ``text`` spoken in its first ``fraction`` of audio, assuming an even speaking rate.

    A word counts as spoken once the audio reached its middle; the result keeps the original spacing.
    """
    if fraction >= 1.0:
        return text
    if fraction <= 0.0 or not text.strip():
        return ""
    words = text.split()
    total = sum(len(w) + 1 for w in words)
    spoken: list[str] = []
    position = 0.0
    for word in words:
        middle = (position + (len(word) + 1) / 2) / total
        if middle > fraction:
            break
        spoken.append(word)
        position += len(word) + 1
    return " ".join(spoken)


@dataclass
class Turn:
    """One user turn and the agent's reply, with stage times in session seconds (None when not reached)."""

    turn: int
    user_text: str = ""
    reply_text: str = ""
    generated_text: str = ""
    speech_start: float | None = None
    speech_end: float | None = None
    turn_end: float | None = None
    transcript_final: float | None = None
    llm_start: float | None = None
    llm_first_token: float | None = None
    llm_end: float | None = None
    tts_first_audio: float | None = None
    audio_out_first: float | None = None
    audio_out_end: float | None = None
    interrupted: bool = False
    barge_in_detected: float | None = None
    playback_stopped: float | None = None
    llm_stopped: float | None = None
    error: str | None = None

    @property
    def voice_to_voice(self) -> float | None:
        """End of user speech to first agent audio out, in seconds."""
        if self.audio_out_first is None or self.speech_end is None:
            return None
        return self.audio_out_first - self.speech_end

    def as_record(self) -> dict[str, Any]:
        """A JSON-able dict (times rounded to 0.1 ms) with the derived latencies added."""
        record = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        record["latency"] = {
            k: (None if v is None else round(v, 4)) for k, v in stage_latencies(self).items()
        }
        return record


#: Stage name -> (from field, to field): the per-stage latencies of a turn.
STAGES: dict[str, tuple[str, str]] = {
    "endpointing": ("speech_end", "turn_end"),
    "stt_final": ("speech_end", "transcript_final"),
    "llm_first_token": ("transcript_final", "llm_first_token"),
    "tts_first_audio": ("llm_first_token", "tts_first_audio"),
    "output": ("tts_first_audio", "audio_out_first"),
    "voice_to_voice": ("speech_end", "audio_out_first"),
    "barge_in_stop": ("barge_in_detected", "playback_stopped"),
}


def stage_latencies(turn: Turn) -> dict[str, float | None]:
    """Each stage's latency in seconds for one turn (None when either end is missing)."""
    out: dict[str, float | None] = {}
    for name, (start, end) in STAGES.items():
        a, b = getattr(turn, start), getattr(turn, end)
        out[name] = None if a is None or b is None else b - a
    return out


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation) of non-empty values."""
    return float(np.percentile(np.asarray(list(values), dtype=float), q))


def summarize(turns: Iterable[Turn]) -> dict[str, dict[str, float]]:
    """Per-stage ``{"n", "p50_ms", "p95_ms"}`` over the turns that reached the stage."""
    turns = list(turns)
    summary: dict[str, dict[str, float]] = {}
    for name in STAGES:
        values = [v for t in turns if (v := stage_latencies(t)[name]) is not None]
        if values:
            summary[name] = {
                "n": len(values),
                "p50_ms": round(1000 * percentile(values, 50), 1),
                "p95_ms": round(1000 * percentile(values, 95), 1),
            }
    return summary


def format_summary(summary: dict[str, dict[str, float]]) -> str:
    """The summary as a fixed-width text table."""
    lines = [f"{'stage':<18}{'n':>4}{'p50 ms':>10}{'p95 ms':>10}"]
    for name, row in summary.items():
        lines.append(f"{name:<18}{int(row['n']):>4}{row['p50_ms']:>10.1f}{row['p95_ms']:>10.1f}")
    return "\n".join(lines)


@dataclass
class LatencyTrace:
    """Every turn of a session, in order."""

    turns: dict[int, Turn] = field(default_factory=dict)

    def turn(self, turn_id: int) -> Turn:
        """The record of a turn (created on first use)."""
        if turn_id not in self.turns:
            self.turns[turn_id] = Turn(turn=turn_id)
        return self.turns[turn_id]

    def mark(self, turn_id: int, stage: str, t: float, *, first: bool = True) -> None:
        """Set a stage time; with ``first`` an existing value is kept (the earliest event wins)."""
        record = self.turn(turn_id)
        if not first or getattr(record, stage) is None:
            setattr(record, stage, t)

    def records(self) -> list[Turn]:
        """Turns that got as far as a transcript, in order."""
        return [t for _, t in sorted(self.turns.items()) if t.turn_end is not None]

    def write_jsonl(self, path: str | Path) -> Path:
        """One JSON object per turn."""
        path = Path(path)
        with path.open("w", encoding="utf-8") as handle:
            for record in self.records():
                handle.write(json.dumps(record.as_record()) + "\n")
        return path


class Conversation:
    """The chat history the LLM sees; assistant turns hold only what was actually played."""

    def __init__(self, system_prompt: str | None = None, *, max_messages: int = 24) -> None:
        self.system_prompt = system_prompt
        self.max_messages = max_messages
        self.history: list[Message] = []

    def add_user(self, text: str) -> None:
        """Append the user's turn."""
        self.history.append(Message.user(text))

    def add_assistant(self, text: str) -> None:
        """Append what the agent said (possibly truncated by a barge-in; empty replies are skipped)."""
        if text.strip():
            self.history.append(Message.assistant(text.strip()))

    def messages(self) -> list[Message]:
        """System prompt plus the most recent history (starting at a user turn)."""
        recent = self.history[-self.max_messages :]
        while recent and recent[0].role != "user":
            recent = recent[1:]
        head = [Message.system(self.system_prompt)] if self.system_prompt else []
        return head + recent


class EchoReference:
    """What the speaker played, at the microphone's rate, indexed by session time (for echo cancellation)."""

    def __init__(self, sample_rate: int, max_seconds: float = 600.0) -> None:
        self.sample_rate = sample_rate
        self._buffer = np.zeros(0, dtype=np.float32)
        self._max = int(max_seconds * sample_rate)

    def write(self, t: float, pcm: PCM) -> None:
        """Record ``pcm`` (at ``sample_rate``) as played from session time ``t`` on."""
        start = round(t * self.sample_rate)
        end = start + len(pcm)
        if end > self._max:
            return
        if end > len(self._buffer):
            self._buffer = np.concatenate([self._buffer, np.zeros(end - len(self._buffer), dtype=np.float32)])
        self._buffer[start:end] = pcm

    def erase_after(self, t: float) -> None:
        """Forget audio scheduled after ``t`` (playback was stopped then)."""
        self._buffer[round(t * self.sample_rate) :] = 0.0

    def read(self, t: float, n: int) -> PCM:
        """``n`` samples played from session time ``t`` on (zeros where nothing was played)."""
        start = round(t * self.sample_rate)
        out = np.zeros(n, dtype=np.float32)
        lo, hi = max(start, 0), min(start + n, len(self._buffer))
        if hi > lo:
            out[lo - start : hi - start] = self._buffer[lo:hi]
        return out


@dataclass
class VoiceSession:
    """What the stages share: the clock, the history, the trace and whether the agent is responding."""

    clock: SessionClock = field(default_factory=SessionClock)
    conversation: Conversation = field(default_factory=Conversation)
    trace: LatencyTrace = field(default_factory=LatencyTrace)
    echo_reference: EchoReference | None = None
    responding_turn: int | None = None
    pending_transcripts: int = 0
    turn_open: bool = False

    @property
    def responding(self) -> bool:
        """True from the hand-over of a user turn to the LLM until its reply finished playing or was cut."""
        return self.responding_turn is not None

    @property
    def idle(self) -> bool:
        """No user turn open, no transcript pending, no reply in progress."""
        return not self.turn_open and self.pending_transcripts == 0 and not self.responding


__all__ = [
    "STAGES",
    "Conversation",
    "EchoReference",
    "LatencyTrace",
    "SessionClock",
    "Turn",
    "VoiceSession",
    "format_summary",
    "percentile",
    "stage_latencies",
    "summarize",
    "truncate_to_fraction",
]
