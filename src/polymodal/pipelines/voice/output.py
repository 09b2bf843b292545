"""Audio output: the playback stage, the sink protocol it writes to, and a simulated speaker.

The playback stage writes the agent's speech to an :class:`AudioSink` in small blocks, at most one block
ahead of what is audible, so a barge-in stops the sound within a block and the stage knows exactly how much
of each sentence was heard. That is what goes into the history.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from polymodal.backends.speech import PCM, WordTiming
from polymodal.media.audio import resample_pcm
from polymodal.pipelines.voice.frames import EndFrame, Frame, InterruptionFrame, TTSAudioFrame, TTSEndFrame
from polymodal.pipelines.voice.processor import Emit
from polymodal.pipelines.voice.session import SessionClock, VoiceSession, truncate_to_fraction


@runtime_checkable
class AudioSink(Protocol):
    """Where the agent's audio goes (a speaker, a WebSocket client, a file in simulation).

    Attributes:
        sample_rate: the rate ``write`` expects.
    """

    sample_rate: int

    async def write(self, pcm: PCM) -> float:
        """Queue a block for playback; return the session time it starts to be heard.

        Returns once the block is at most about one block ahead of playback (the sink paces the writer).
        """
        ...

    async def stop(self) -> float:
        """Stop playback now, dropping queued audio; return the session time up to which audio was heard."""
        ...

    async def drain(self) -> float:
        """Wait until everything written has been heard; return that session time."""
        ...


class SimulatedSpeaker:
    """A real-time speaker model that records what would be heard, on the session clock.

    Audio written while the speaker is idle starts at once; later blocks follow back to back. ``write`` sleeps
    until the block is at most ``lookahead`` seconds ahead of the playback position, like a device buffer.
    """

    def __init__(self, sample_rate: int, clock: SessionClock, *, lookahead: float = 0.02) -> None:
        self.sample_rate = sample_rate
        self.clock = clock
        self.lookahead = lookahead
        self._track = np.zeros(0, dtype=np.float32)
        self._busy_until = 0.0
        self.first_start: float | None = None

    async def write(self, pcm: PCM) -> float:
        """Schedule ``pcm`` after what is queued; pace the caller."""
        now = self.clock.now()
        start = max(now, self._busy_until)
        if self.first_start is None:
            self.first_start = start
        first = round(start * self.sample_rate)
        end = first + len(pcm)
        if end > len(self._track):
            grow = max(end - len(self._track), self.sample_rate * 10)
            self._track = np.concatenate([self._track, np.zeros(grow, dtype=np.float32)])
        self._track[first:end] = pcm
        self._busy_until = start + len(pcm) / self.sample_rate
        wait = self._busy_until - self.lookahead - self.clock.now()
        if wait > 0:
            await asyncio.sleep(wait)
        return start

    async def stop(self) -> float:
        """Cut playback now: erase what was scheduled after this instant."""
        now = self.clock.now()
        if self._busy_until > now:
            self._track[round(now * self.sample_rate) : round(self._busy_until * self.sample_rate)] = 0.0
            self._busy_until = now
        return now

    async def drain(self) -> float:
        """Sleep until the queued audio has played."""
        wait = self._busy_until - self.clock.now()
        if wait > 0:
            await asyncio.sleep(wait)
        return max(self._busy_until, self.clock.now())

    def read(self, first: int, count: int) -> PCM:
        """``count`` samples heard from sample index ``first`` on (zeros outside what was played)."""
        out = np.zeros(count, dtype=np.float32)
        heard = round(self._busy_until * self.sample_rate)
        lo, hi = max(first, 0), min(first + count, heard, len(self._track))
        if hi > lo:
            out[lo - first : hi - first] = self._track[lo:hi]
        return out

    def recording(self, duration: float | None = None) -> PCM:
        """Everything heard so far, from session time 0 (trimmed or zero-padded to ``duration``)."""
        heard = self._track[: round(self._busy_until * self.sample_rate)]
        if duration is None:
            return heard.copy()
        n = round(duration * self.sample_rate)
        out = np.zeros(max(n, len(heard)), dtype=np.float32)
        out[: len(heard)] = heard
        return out


@dataclass
class _Scheduled:
    start: float
    end: float
    text: str
    words: tuple[WordTiming, ...]

    def heard(self, until: float) -> str:
        """The words of this chunk heard before ``until``."""
        if until >= self.end:
            return self.text
        if until <= self.start:
            return ""
        if self.words:
            return " ".join(w.text for w in self.words if self.start + w.end <= until)
        return truncate_to_fraction(self.text, (until - self.start) / max(self.end - self.start, 1e-9))


class Playback:
    """Plays TTS audio to a sink in ``block_s`` blocks; on interruption stops it and records what was heard.

    The reply text of a turn that finished playing is the text of all its chunks; that of an interrupted turn
    keeps the sentences heard in full plus the words of the cut sentence heard before the stop (by word
    timings when the TTS gave them, else by the fraction of its audio played). Either becomes the assistant
    turn in the conversation history.
    """

    def __init__(self, sink: AudioSink, session: VoiceSession, *, block_s: float = 0.02) -> None:
        self.sink = sink
        self.session = session
        self.block = max(1, int(block_s * sink.sample_rate))
        self._turn: int | None = None
        self._scheduled: list[_Scheduled] = []

    async def process(self, frame: Frame, emit: Emit) -> None:
        """Play audio frames; close the reply at its end frame or on interruption."""
        if isinstance(frame, TTSAudioFrame):
            await self._play(frame)
        elif isinstance(frame, TTSEndFrame):
            if self._turn == frame.turn_id:
                end = await self.sink.drain()
                self.session.trace.mark(frame.turn_id, "audio_out_end", end)
                self._close(frame.turn_id, heard_until=None)
            elif self.session.responding_turn == frame.turn_id:  # a reply with no audio at all
                self._close(frame.turn_id, heard_until=None)
        elif isinstance(frame, InterruptionFrame | EndFrame):
            await self._interrupt(frame)
        emit(frame)

    async def _play(self, frame: TTSAudioFrame) -> None:
        session = self.session
        if self._turn != frame.turn_id:
            self._turn, self._scheduled = frame.turn_id, []
        pcm = resample_pcm(frame.pcm, frame.sample_rate, self.sink.sample_rate)
        reference = session.echo_reference
        ref_pcm = (
            resample_pcm(frame.pcm, frame.sample_rate, reference.sample_rate)
            if reference is not None
            else None
        )
        item: _Scheduled | None = None
        for first in range(0, len(pcm), self.block):
            block = pcm[first : first + self.block]
            start = await self.sink.write(block)
            session.trace.mark(frame.turn_id, "audio_out_first", start)
            if item is None:  # blocks play back to back: the chunk ends its full duration later
                item = _Scheduled(start, start + len(pcm) / self.sink.sample_rate, frame.text, frame.words)
                self._scheduled.append(item)
            if reference is not None and ref_pcm is not None:
                lo = first * reference.sample_rate // self.sink.sample_rate
                hi = (first + len(block)) * reference.sample_rate // self.sink.sample_rate
                reference.write(start, ref_pcm[lo:hi])

    async def _interrupt(self, frame: Frame) -> None:
        if self._turn is None:  # nothing playing: at most a reply still being written
            turn_id = self.session.responding_turn
            if isinstance(frame, InterruptionFrame) and turn_id is not None:
                record = self.session.trace.turn(turn_id)
                record.barge_in_detected = frame.detected_at
                record.playback_stopped = self.session.clock.now()
                self._close(turn_id, heard_until=self.session.clock.now())
            return
        turn_id = self._turn
        stopped = await self.sink.stop()
        if self.session.echo_reference is not None:
            self.session.echo_reference.erase_after(stopped)
        if isinstance(frame, InterruptionFrame):
            record = self.session.trace.turn(turn_id)
            record.interrupted = True
            record.barge_in_detected = frame.detected_at
            record.playback_stopped = self.session.clock.now()
        self._close(turn_id, heard_until=stopped)

    def _close(self, turn_id: int, heard_until: float | None) -> None:
        text = self._heard_text(heard_until)
        record = self.session.trace.turn(turn_id)
        record.reply_text = text
        if heard_until is not None and not record.interrupted and self.session.responding_turn == turn_id:
            record.interrupted = True
        self.session.conversation.add_assistant(text)
        self._turn, self._scheduled = None, []
        if self.session.responding_turn == turn_id:
            self.session.responding_turn = None

    def _heard_text(self, heard_until: float | None) -> str:
        if heard_until is None:
            parts = [item.text for item in self._scheduled]
        else:
            parts = [item.heard(heard_until) for item in self._scheduled]
        return " ".join(" ".join(parts).split())


__all__ = ["AudioSink", "Playback", "SimulatedSpeaker"]
