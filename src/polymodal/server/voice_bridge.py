"""Session runners for the voice WebSocket: the cascaded voice loop, or OpenAI Realtime as one model.

:func:`loop_runner` feeds a browser session into a :class:`~polymodal.pipelines.voice.loop.VoiceLoop`
(VAD -> STT -> LLM -> TTS) through a :class:`WebSocketSink`, and forwards transcripts, reply text,
interruptions and one latency record per turn to the page. :func:`realtime_runner` does the same with the
OpenAI Realtime API, cancelling and truncating the answer on barge-in to what the page actually played.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

from polymodal.backends import _ws
from polymodal.backends.openai_realtime import (
    AssistantAudio,
    AssistantText,
    OpenAIRealtime,
    ResponseDone,
    SpeechStarted,
    SpeechStopped,
    UserTranscript,
)
from polymodal.backends.speech import PCM
from polymodal.media.audio import resample_pcm
from polymodal.pipelines.voice.frames import Frame, InputAudioFrame, TranscriptFrame, TTSAudioFrame
from polymodal.pipelines.voice.loop import VoiceLoop
from polymodal.pipelines.voice.output import AudioSink
from polymodal.pipelines.voice.processor import Emit
from polymodal.pipelines.voice.session import SessionClock, Turn
from polymodal.server.voice_ws import SessionRunner, VoiceChannel


class WebSocketSink:
    """An :class:`AudioSink` whose speaker is the browser: audio is sent paced to real time.

    Playback is modelled on the session clock (the page plays what it receives at once): ``write`` returns
    when a block is due, ``stop`` tells the page to drop what it queued and reports how far playback got.
    """

    def __init__(
        self, channel: VoiceChannel, clock: SessionClock, sample_rate: int, lookahead: float = 0.06
    ) -> None:
        self.channel = channel
        self.clock = clock
        self.sample_rate = sample_rate
        self.lookahead = lookahead
        self._end = 0.0  # session time the audio sent so far finishes playing
        self._playing = False

    async def write(self, pcm: PCM) -> float:
        """Send one block; wait until it is at most ``lookahead`` ahead of playback; return its start time."""
        now = self.clock.now()
        if not self._playing:
            await self.channel.send_reply_start()
            self._playing = True
        start = max(now, self._end)
        self._end = start + len(pcm) / self.sample_rate
        await self.channel.send_audio(_ws.to_pcm16(pcm), self.sample_rate)
        wait = start - self.lookahead - self.clock.now()
        if wait > 0:
            await asyncio.sleep(wait)
        return start

    async def stop(self) -> float:
        """Barge-in: the page drops queued audio; return the time playback had reached."""
        now = self.clock.now()
        heard = min(now, self._end)
        self._end = now
        self._playing = False
        await self.channel.send_interrupt()
        return heard

    async def drain(self) -> float:
        """Wait until everything sent has played; return that time."""
        wait = self._end - self.clock.now()
        if wait > 0:
            await asyncio.sleep(wait)
        self._playing = False
        return max(self._end, self.clock.now())


LoopBuilder = Callable[[AudioSink, Emit], VoiceLoop]


def loop_runner(build: LoopBuilder, *, output_rate: int) -> SessionRunner:
    """A session runner that runs one voice loop per browser session.

    ``build(sink, observer)`` makes the loop (its components, config and session) around the given sink and
    observer; ``output_rate`` is the rate of the audio the loop writes to the sink (its TTS rate).
    """

    async def run(channel: VoiceChannel) -> None:
        frames: asyncio.Queue[Frame] = asyncio.Queue()
        sink = WebSocketSink(channel, SessionClock(), output_rate)
        loop = build(sink, frames.put_nowait)
        sink.clock = loop.session.clock  # playback is modelled on the loop's own session clock
        forward = asyncio.create_task(_forward(channel, frames, loop))
        try:
            await loop.run(_input_frames(channel, loop.session.clock))
        finally:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forward
            await _send_finished_turns(channel, loop.session.trace.records(), set())

    return run


async def _input_frames(channel: VoiceChannel, clock: SessionClock) -> Any:
    """The page's PCM16 chunks as InputAudioFrames on the session clock (media time from the first chunk)."""
    rate = channel.sample_rate
    samples = 0
    async for chunk in channel.audio():
        if samples == 0:
            clock.restart()
        pcm = _ws.from_pcm16(chunk)
        yield InputAudioFrame(pcm=pcm, sample_rate=rate, t=samples / rate)
        samples += len(pcm)


async def _forward(channel: VoiceChannel, frames: asyncio.Queue[Frame], loop: VoiceLoop) -> None:
    """Observer frames -> page events; a latency record once each turn's reply finished or was cut.

    Reply text is shown as it is spoken (the text of each played TTS block), not as the LLM writes it.
    """
    sent: set[int] = set()
    while True:
        frame: Frame | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.1):  # not wait_for: in 3.11 it can drop a cancel racing a frame
                frame = await frames.get()
        if isinstance(frame, TranscriptFrame) and frame.transcript.text:
            await channel.send_transcript(frame.transcript.text, final=frame.transcript.is_final)
        elif isinstance(frame, TTSAudioFrame) and frame.text:
            await channel.send_reply_text(frame.text)  # the text whose speech starts in this block
        await _send_finished_turns(channel, loop.session.trace.records(), sent)


async def _send_finished_turns(channel: VoiceChannel, turns: list[Turn], sent: set[int]) -> None:
    for turn in turns:
        finished = turn.audio_out_end is not None or turn.interrupted
        if finished and turn.turn not in sent:
            sent.add(turn.turn)
            record = {
                k: v for k, v in turn.as_record().items() if not (isinstance(v, float) and math.isnan(v))
            }
            await channel.send_latency(record)


def realtime_runner(realtime: OpenAIRealtime) -> SessionRunner:
    """A session runner that speaks through one OpenAI Realtime session per browser session.

    Use server turn detection (``turn_detection="server_vad"``): the server's ``speech_started`` is the
    barge-in cue; the answer is then cancelled and truncated to what the page has played.
    """

    async def run(channel: VoiceChannel) -> None:
        session = await realtime.connect()
        state = _RealtimeTurns(channel)
        reader = asyncio.create_task(_realtime_out(session.events(), session, state))
        try:
            async for chunk in channel.audio():
                pcm = _ws.from_pcm16(chunk)
                if channel.sample_rate != realtime.sample_rate:
                    pcm = resample_pcm(pcm, channel.sample_rate, realtime.sample_rate)
                await session.send_audio(pcm)
                if reader.done():
                    break
            if reader.done():
                reader.result()  # re-raise a Realtime error
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await session.aclose()

    return run


class _RealtimeTurns:
    """Per-session bookkeeping of the Realtime path: reply start, audio received, latency record."""

    def __init__(self, channel: VoiceChannel) -> None:
        self.channel = channel
        self.started = time.monotonic()
        self.reply_item: str | None = None
        self.reply_sent_at = 0.0
        self.speech_end: float | None = None
        self.record: dict[str, Any] = {}
        self.turn = 0

    def now(self) -> float:
        return time.monotonic() - self.started

    def played_ms(self) -> float:
        """The page's last report, advanced by the time since it was sent (the page keeps playing)."""
        report = self.channel.played_ms + 1000 * (time.monotonic() - self.channel.played_at)
        return max(report, 0.0)


async def _realtime_out(events: Any, session: Any, state: _RealtimeTurns) -> None:
    channel = state.channel
    async for event in events:
        if isinstance(event, SpeechStarted):
            if state.reply_item is not None:
                await session.interrupt(state.played_ms())
                await channel.send_interrupt()
                state.reply_item = None
        elif isinstance(event, SpeechStopped):
            state.record = {"speech_end": state.now()}
        elif isinstance(event, UserTranscript):
            await channel.send_transcript(event.text, final=True)
            state.record.setdefault("transcript_final", state.now())
            state.record.setdefault("user_text", event.text)
        elif isinstance(event, AssistantText):
            await channel.send_reply_text(event.delta)
            state.record.setdefault("llm_first_token", state.now())
        elif isinstance(event, AssistantAudio):
            if event.item_id != state.reply_item:
                state.reply_item = event.item_id
                await channel.send_reply_start()
                state.record.setdefault("tts_first_audio", state.now())
                state.record.setdefault("audio_out_first", state.now())
            await channel.send_audio(_ws.to_pcm16(event.pcm), event.sample_rate)
        elif isinstance(event, ResponseDone):
            state.turn += 1
            await channel.send_latency({"turn": state.turn, "status": event.status, **state.record})
            state.record = {}
            if event.status != "completed":
                state.reply_item = None


__all__ = ["LoopBuilder", "WebSocketSink", "loop_runner", "realtime_runner"]
