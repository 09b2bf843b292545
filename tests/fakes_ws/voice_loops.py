"""Stand-in voice loops for server tests: they consume a channel's audio and reply on a fixed script."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from dataclasses import dataclass, field

from polymodal.server.voice_ws import VoiceChannel


def tone_pcm16(ms: int, rate: int, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    """A sine tone as PCM16 little-endian mono."""
    n = rate * ms // 1000
    peak = int(32767 * amplitude)
    return struct.pack(f"<{n}h", *(int(peak * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))


def peak_abs(pcm16: bytes) -> int:
    """Largest absolute sample in a PCM16 chunk."""
    samples = struct.unpack(f"<{len(pcm16) // 2}h", pcm16)
    return max((abs(s) for s in samples), default=0)


@dataclass
class SessionRecord:
    """What one session's loop saw."""

    session_id: str
    bytes_in: int = 0
    frames_in: int = 0
    peak: int = 0
    turns: int = 0
    ended: bool = False
    cancelled: bool = False
    played_ms: list[float] = field(default_factory=list)


class ScriptedVoiceLoop:
    """After every ``turn_ms`` of inbound audio, 'hear' a turn: transcript, reply text and audio, latency."""

    def __init__(
        self,
        turn_ms: int = 400,
        reply_ms: int = 200,
        out_rate: int = 24_000,
        fail_on_turn: int | None = None,
        reply_delay: float = 0.0,
        interrupt_after: float | None = None,
    ) -> None:
        self.turn_ms = turn_ms
        self.reply_ms = reply_ms
        self.out_rate = out_rate
        self.fail_on_turn = fail_on_turn
        self.reply_delay = reply_delay
        self.interrupt_after = interrupt_after
        self.sessions: list[SessionRecord] = []

    async def __call__(self, channel: VoiceChannel) -> None:
        record = SessionRecord(channel.session_id)
        self.sessions.append(record)
        turn_bytes = channel.sample_rate * 2 * self.turn_ms // 1000
        pending = 0
        started = time.monotonic()
        try:
            async for chunk in channel.audio():
                record.bytes_in += len(chunk)
                record.frames_in += 1
                record.peak = max(record.peak, peak_abs(chunk))
                pending += len(chunk)
                if pending >= turn_bytes:
                    pending -= turn_bytes
                    record.turns += 1
                    await self._reply(channel, record, started)
            record.ended = True
            if pending:
                record.turns += 1
                await self._reply(channel, record, started)
        except asyncio.CancelledError:
            record.cancelled = True
            raise
        finally:
            record.played_ms.append(channel.played_ms)

    async def _reply(self, channel: VoiceChannel, record: SessionRecord, started: float) -> None:
        if self.fail_on_turn is not None and record.turns >= self.fail_on_turn:
            raise RuntimeError(f"scripted failure on turn {record.turns}")
        speech_end = time.monotonic() - started
        heard = record.bytes_in / (2 * channel.sample_rate)
        await channel.send_transcript("hearing", final=False)
        await channel.send_transcript(f"turn {record.turns}: heard {heard:.2f} s", final=True)
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)
        await channel.send_reply_text("Hello ")
        await channel.send_reply_text("there.")
        await channel.send_audio(tone_pcm16(self.reply_ms, self.out_rate), self.out_rate)
        if self.interrupt_after is not None and record.turns == 1:  # 'barge in' on the first reply
            await asyncio.sleep(self.interrupt_after)
            await channel.send_interrupt()
            await asyncio.sleep(0.15)
            record.played_ms.append(channel.played_ms)  # what the page reported it had played
        now = time.monotonic() - started
        await channel.send_latency(
            {
                "turn": record.turns,
                "speech_end": speech_end,
                "transcript_final": speech_end + 0.001,
                "llm_first_token": now,
                "tts_first_audio": now,
                "audio_out_first": now,
            }
        )
