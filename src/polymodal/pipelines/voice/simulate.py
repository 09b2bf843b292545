"""File in, file out: run the voice loop on a recording, in real time, with optional barge-in and echo.

Timing is honest: the input is fed at real-time pace (frame ``k`` is delivered when its last sample would
have been captured), every model runs for real, and the simulated speaker plays the agent's audio in real
time. Each trace time is wall-clock seconds since the first input sample, so ``audio_out_first - speech_end``
is what a caller on a phone would wait. A simulation therefore takes as long as the conversation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polymodal.backends.base import ChatModel
from polymodal.backends.speech import PCM, STT, TTS, VAD
from polymodal.media.audio import Audio, resample_pcm
from polymodal.pipelines.voice.frames import InputAudioFrame
from polymodal.pipelines.voice.loop import VoiceLoop, VoiceLoopConfig
from polymodal.pipelines.voice.output import SimulatedSpeaker
from polymodal.pipelines.voice.session import (
    Conversation,
    SessionClock,
    Turn,
    VoiceSession,
    format_summary,
    summarize,
)
from polymodal.pipelines.voice.stack import VoiceComponents, warm_up


@dataclass(frozen=True)
class EchoPath:
    """A simulated speaker-to-microphone path: the agent's audio comes back ``delay_s`` later, scaled."""

    gain: float = 0.3
    delay_s: float = 0.06


@dataclass(frozen=True)
class BargeIn:
    """User speech mixed into the input to interrupt the agent.

    At ``at`` seconds of the input, or — with ``after_reply_start`` — ``at`` seconds after the agent's first
    reply starts playing (robust to how fast the machine is; the input is extended as needed).
    """

    audio: Audio
    at: float
    after_reply_start: bool = False


@dataclass
class SimulationResult:
    """What a simulation produced."""

    session: VoiceSession
    input: Audio
    output: Audio
    turns: list[Turn] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per-stage p50/p95 latencies in milliseconds."""
        return summarize(self.turns)

    def summary_table(self) -> str:
        """The summary as a text table."""
        return format_summary(self.summary())

    def write_trace(self, path: str | Path) -> Path:
        """One JSON line per turn."""
        return self.session.trace.write_jsonl(path)


async def paced_microphone(
    audio: Audio,
    clock: SessionClock,
    *,
    frame_samples: int = 512,
    speaker: SimulatedSpeaker | None = None,
    echo: EchoPath | None = None,
    reply_barge_in: BargeIn | None = None,
    tail_s: float = 1.5,
) -> AsyncIterator[InputAudioFrame]:
    """Yield ``audio`` (mono, at its own rate) in frames, each when its last sample is due in real time.

    With ``echo`` and ``speaker``, what the speaker played ``echo.delay_s`` earlier is added to each frame.
    With ``reply_barge_in`` (and ``speaker``), its audio is mixed in ``at`` seconds after the speaker first
    played anything; the input then runs on until ``tail_s`` after the barge-in audio.
    """
    rate = audio.sample_rate
    samples = audio.to_mono().samples
    injected = reply_barge_in.audio.to_mono().resample(rate).samples if reply_barge_in else None
    inject_at: int | None = None
    first = 0
    while True:
        if (
            injected is not None
            and inject_at is None
            and speaker is not None
            and speaker.first_start is not None
        ):
            inject_at = round((speaker.first_start + reply_barge_in.at) * rate)  # type: ignore[union-attr]
        end = len(samples)
        if injected is not None:
            end = max(end, (inject_at or first + frame_samples) + len(injected) + round(tail_s * rate))
        if first >= end:
            return
        pcm = samples[first : first + frame_samples]
        if len(pcm) < frame_samples:
            pcm = np.pad(pcm, (0, frame_samples - len(pcm)))
        if injected is not None and inject_at is not None:
            lo, hi = max(first, inject_at), min(first + frame_samples, inject_at + len(injected))
            if hi > lo:
                pcm = pcm.copy()
                pcm[lo - first : hi - first] += injected[lo - inject_at : hi - inject_at]
        t = first / rate
        first += frame_samples
        due = t + frame_samples / rate
        wait = due - clock.now()
        if wait > 0:
            await asyncio.sleep(wait)
        if echo is not None and speaker is not None:
            echoed = _played(speaker, t - echo.delay_s, frame_samples, rate)
            pcm = (pcm + np.float32(echo.gain) * echoed).astype(np.float32)
        yield InputAudioFrame(pcm=pcm.astype(np.float32), sample_rate=rate, t=t)


def _played(speaker: SimulatedSpeaker, t: float, n: int, rate: int) -> PCM:
    """``n`` samples at ``rate`` of what the speaker played from session time ``t`` (zeros before 0)."""
    margin = 64
    source_rate = speaker.sample_rate
    start = round(t * source_rate) - margin
    count = round(n * source_rate / rate) + 2 * margin
    window = speaker.read(start, count)
    converted = resample_pcm(window, source_rate, rate)
    skip = round(margin * rate / source_rate)
    return converted[skip : skip + n]


async def simulate(
    audio: Audio,
    *,
    vad: VAD,
    stt: STT,
    llm: ChatModel,
    tts: TTS,
    config: VoiceLoopConfig | None = None,
    barge_in: BargeIn | None = None,
    echo: EchoPath | None = None,
    tail_s: float = 1.5,
    output_rate: int | None = None,
    session: VoiceSession | None = None,
) -> SimulationResult:
    """Run the voice loop on ``audio`` in real time and return the trace and the agent's recorded audio.

    The input is converted once to the VAD/STT rate; ``barge_in`` is mixed in at its time; ``tail_s`` of
    silence follows the input so the last turn can end; the agent's audio is recorded at ``output_rate``
    (default: the TTS rate) on the same timeline as the input. A ``session`` given is used (its clock is
    restarted when the input starts).
    """
    rate = vad.sample_rate
    mic = audio.to_mono().resample(rate)
    if barge_in is not None and not barge_in.after_reply_start:
        mic = mic.overlay(barge_in.audio.to_mono().resample(rate), barge_in.at)
    mic = Audio.concatenate([mic, Audio.silence(tail_s, rate)])
    config = config or VoiceLoopConfig()
    session = session or VoiceSession(conversation=Conversation(config.system_prompt))
    speaker = SimulatedSpeaker(output_rate or tts.sample_rate, session.clock)
    loop = VoiceLoop(vad, stt, llm, tts, speaker, config, session=session)
    session.clock.restart()
    live = barge_in if barge_in is not None and barge_in.after_reply_start else None
    frames = paced_microphone(
        mic, session.clock, frame_samples=vad.frame_samples, speaker=speaker, echo=echo, reply_barge_in=live
    )
    await loop.run(frames)
    output = Audio(speaker.recording(mic.duration), speaker.sample_rate, source="<simulated speaker>")
    return SimulationResult(session=session, input=mic, output=output, turns=session.trace.records())


async def simulate_files(
    input_path: str | Path,
    *,
    components: VoiceComponents,
    out_path: str | Path | None = None,
    trace_path: str | Path | None = None,
    config: VoiceLoopConfig | None = None,
    barge_in_path: str | Path | None = None,
    barge_in_at: float | None = None,
    barge_in_after_reply: bool = False,
    echo: EchoPath | None = None,
    warm: bool = True,
) -> SimulationResult:
    """:func:`simulate` on files: decode the input (and barge-in clip); write the agent audio and trace."""
    audio = Audio.from_path(input_path)
    if warm:  # load models before the clock starts: the trace measures the conversation, not the loading
        await warm_up(components)
    barge_in = None
    if barge_in_path is not None:
        at = barge_in_at if barge_in_at is not None else 0.0
        barge_in = BargeIn(Audio.from_path(barge_in_path), at, after_reply_start=barge_in_after_reply)
    result = await simulate(
        audio,
        vad=components.vad,
        stt=components.stt,
        llm=components.llm,
        tts=components.tts,
        config=config,
        barge_in=barge_in,
        echo=echo,
    )
    if out_path is not None:
        result.output.save(out_path)
    if trace_path is not None:
        result.write_trace(trace_path)
    return result


__all__ = ["BargeIn", "EchoPath", "SimulationResult", "paced_microphone", "simulate", "simulate_files"]
