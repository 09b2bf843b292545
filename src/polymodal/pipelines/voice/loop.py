"""The voice loop: VAD -> STT -> LLM -> TTS -> output, with turn-taking, barge-in and a latency trace.

::

    loop = VoiceLoop(vad, stt, llm, tts, sink)
    await loop.run(microphone_frames)      # an async iterator of InputAudioFrame
    for turn in loop.session.trace.records():
        print(turn.user_text, "->", turn.reply_text, turn.voice_to_voice)

The loop owns no transport: feed it input frames (a file paced in real time, a WebSocket, a microphone) and
give it an :class:`~polymodal.pipelines.voice.output.AudioSink`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from polymodal.backends.base import ChatModel, GenerateOptions
from polymodal.backends.speech import STT, TTS, VAD, STTOptions, TTSOptions
from polymodal.media.audio import resample_pcm
from polymodal.pipelines.voice.frames import EndFrame, InputAudioFrame, StartFrame, silence_frame
from polymodal.pipelines.voice.output import AudioSink, Playback
from polymodal.pipelines.voice.processor import Emit, Pipeline
from polymodal.pipelines.voice.session import Conversation, EchoReference, VoiceSession
from polymodal.pipelines.voice.stages import LanguageModel, SpeechToText, TextToSpeech
from polymodal.pipelines.voice.turns import TurnTaking, TurnTakingConfig

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. "
    "Answer in one or two short spoken sentences, without lists or markup."
)


@dataclass(frozen=True)
class VoiceLoopConfig:
    """Settings of a voice loop.

    Attributes:
        turn_taking: VAD thresholds, pause / end-of-turn silences, minimum speech, barge-in, echo handling.
        system_prompt: the LLM's instructions.
        generate: LLM generation options (short replies suit speech).
        stt: recognition options (language, prompt).
        tts: synthesis options (voice, speed).
        partials: ask the STT for interim transcripts (costly for whisper on a small CPU, free for others).
        pre_roll_s: audio kept from before each detected speech start and sent to the STT with it.
        block_s: playback block size (the granularity of a barge-in stop).
        drain_timeout_s: after the input ends, how long to wait for the last reply to finish.
    """

    turn_taking: TurnTakingConfig = field(default_factory=TurnTakingConfig)
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    generate: GenerateOptions = field(default_factory=lambda: GenerateOptions(max_tokens=60, temperature=0.0))
    stt: STTOptions | None = None
    tts: TTSOptions | None = None
    partials: bool = False
    pre_roll_s: float = 0.3
    block_s: float = 0.02
    drain_timeout_s: float = 120.0


class VoiceLoop:
    """One conversation: the stages in a pipeline around a shared :class:`VoiceSession`."""

    def __init__(
        self,
        vad: VAD,
        stt: STT,
        llm: ChatModel,
        tts: TTS,
        sink: AudioSink,
        config: VoiceLoopConfig | None = None,
        *,
        session: VoiceSession | None = None,
        observer: Emit | None = None,
    ) -> None:
        if vad.sample_rate != stt.sample_rate:
            raise ValueError(f"VAD ({vad.sample_rate} Hz) and STT ({stt.sample_rate} Hz) must share a rate")
        self.config = config or VoiceLoopConfig()
        self.sample_rate = vad.sample_rate
        self.session = session or VoiceSession(conversation=Conversation(self.config.system_prompt))
        if self.config.turn_taking.echo_cancel and self.session.echo_reference is None:
            self.session.echo_reference = EchoReference(self.sample_rate)
        # import the resampler now: a lazy import inside the first reply would hold the event loop
        resample_pcm(np.zeros(64, dtype=np.float32), 22050, 16000)
        self.pipeline = Pipeline(
            [
                TurnTaking(vad, self.session, self.config.turn_taking),
                SpeechToText(
                    stt,
                    self.session,
                    options=self.config.stt,
                    partials=self.config.partials,
                    pre_roll_s=self.config.pre_roll_s,
                ),
                LanguageModel(llm, self.session, self.config.generate),
                TextToSpeech(tts, self.session, self.config.tts),
                Playback(sink, self.session, block_s=self.config.block_s),
            ],
            sink=observer,
        )

    async def run(self, frames: AsyncIterator[InputAudioFrame]) -> VoiceSession:
        """Process input until it ends, let the last reply finish, then shut the pipeline down."""
        runner = asyncio.create_task(self.pipeline.run())
        try:
            self.pipeline.put(StartFrame())
            end = 0.0
            async for frame in frames:
                self.pipeline.put(frame)
                end = frame.end
                if runner.done():
                    break
            if not runner.done():
                tail = self.config.turn_taking.end_of_turn_s + 0.2
                self.pipeline.put(silence_frame(tail, self.sample_rate, end))
                await self._wait_idle(runner)
                self.pipeline.put(EndFrame())
            await runner
        finally:
            if not runner.done():
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
        return self.session

    async def _wait_idle(self, runner: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout_s
        await asyncio.sleep(0.05)
        while loop.time() < deadline and not runner.done():
            if self.session.idle and self.pipeline.idle:
                return
            await asyncio.sleep(0.02)


__all__ = ["DEFAULT_SYSTEM_PROMPT", "VoiceLoop", "VoiceLoopConfig"]
