"""The speech-to-text, LLM and text-to-speech stages of the voice loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import numpy as np

from polymodal.backends.base import ChatModel, GenerateOptions
from polymodal.backends.speech import PCM, STT, TTS, STTOptions, STTStream, Transcript, TTSOptions
from polymodal.errors import PolymodalError
from polymodal.pipelines.voice.frames import (
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
    TranscriptFrame,
    TTSAudioFrame,
    TTSEndFrame,
    UserTurnEndFrame,
    UserTurnFrame,
)
from polymodal.pipelines.voice.processor import Emit
from polymodal.pipelines.voice.session import VoiceSession

log = logging.getLogger(__name__)


class SpeechToText:
    """Streams the user's speech to an STT engine; one final transcript and one user turn per turn.

    Audio is sent only while the VAD hears speech (plus ``pre_roll_s`` before each start, so the first
    syllable is not lost). Each speech segment is finalized as soon as the VAD hears a pause — while the
    turn-taking stage is still waiting for the end of the turn — and the segments' texts are joined when the
    turn ends.
    """

    def __init__(
        self,
        stt: STT,
        session: VoiceSession,
        *,
        options: STTOptions | None = None,
        partials: bool = False,
        pre_roll_s: float = 0.3,
    ) -> None:
        self.stt = stt
        self.session = session
        self.options = options or STTOptions(interim_results=partials)
        self.partials = partials
        self.pre_roll = int(pre_roll_s * stt.sample_rate)
        self._stream: STTStream | None = None
        self._sending = False
        self._recent: list[PCM] = []
        self._recent_samples = 0
        self._segments: list[asyncio.Task[Transcript]] = []
        self._turn_tasks: set[asyncio.Task[None]] = set()
        self._turn_id = 0
        self._emit: Emit | None = None

    async def process(self, frame: Frame, emit: Emit) -> None:
        """Route audio and VAD events to the STT stream; emit transcripts and user turns."""
        self._emit = emit
        if isinstance(frame, InputAudioFrame):
            await self._audio(frame)
            return
        if isinstance(frame, StartFrame):
            self._stream = await self.stt.open_stream(
                self.options, self._on_partial if self.partials else None
            )
        elif isinstance(frame, SpeechStartedFrame):
            self._turn_id = frame.turn_id
            self._sending = True
            if self._recent and self._stream is not None:
                await self._stream.send(np.concatenate(self._recent))
            self._recent, self._recent_samples = [], 0
        elif isinstance(frame, SpeechStoppedFrame):
            self._sending = False
            if self._stream is not None:
                self._segments.append(asyncio.create_task(self._stream.finalize()))
        elif isinstance(frame, UserTurnEndFrame):
            segments, self._segments = self._segments, []
            self.session.pending_transcripts += 1
            task = asyncio.create_task(self._finish_turn(frame, segments, emit))
            self._turn_tasks.add(task)
            task.add_done_callback(self._turn_tasks.discard)
        elif isinstance(frame, EndFrame):
            if self._turn_tasks:
                await asyncio.gather(*self._turn_tasks, return_exceptions=True)
            if self._stream is not None:
                await self._stream.aclose()
        emit(frame)

    async def _audio(self, frame: InputAudioFrame) -> None:
        if frame.sample_rate != self.stt.sample_rate:
            raise ValueError(
                f"input audio is {frame.sample_rate} Hz; the STT needs {self.stt.sample_rate} Hz"
            )
        if self._sending and self._stream is not None:
            await self._stream.send(frame.pcm)
            return
        self._recent.append(frame.pcm)
        self._recent_samples += len(frame.pcm)
        while self._recent and self._recent_samples - len(self._recent[0]) >= self.pre_roll:
            self._recent_samples -= len(self._recent.pop(0))

    def _on_partial(self, transcript: Transcript) -> None:
        if self._emit is not None:
            self._emit(TranscriptFrame(turn_id=self._turn_id, transcript=transcript))

    async def _finish_turn(
        self, frame: UserTurnEndFrame, segments: list[asyncio.Task[Transcript]], emit: Emit
    ) -> None:
        trace = self.session.trace
        try:
            texts: list[str] = []
            for result in await asyncio.gather(*segments, return_exceptions=True):
                if isinstance(result, PolymodalError):
                    trace.turn(frame.turn_id).error = f"stt: {result}"
                elif isinstance(result, BaseException):
                    raise result
                elif result.text:
                    texts.append(result.text)
            if not frame.accepted:
                return
            text = " ".join(texts).strip()
            trace.mark(frame.turn_id, "transcript_final", self.session.clock.now())
            trace.turn(frame.turn_id).user_text = text
            emit(TranscriptFrame(turn_id=frame.turn_id, transcript=Transcript(text=text, is_final=True)))
            if text:
                self.session.responding_turn = frame.turn_id
                emit(UserTurnFrame(turn_id=frame.turn_id, text=text))
        finally:
            self.session.pending_transcripts -= 1


class LanguageModel:
    """Streams the reply to each user turn from a :class:`~polymodal.backends.base.ChatModel`.

    An interruption cancels the stream (it is closed at once, so a remote provider stops generating) and the
    time is recorded as ``llm_stopped``. Backend errors end the reply and are recorded on the turn.
    """

    def __init__(
        self, model: ChatModel, session: VoiceSession, options: GenerateOptions | None = None
    ) -> None:
        self.model = model
        self.session = session
        self.options = options or GenerateOptions(max_tokens=80, temperature=0.0)

    async def process(self, frame: Frame, emit: Emit) -> None:
        """Answer user turns; pass every other frame on."""
        if not isinstance(frame, UserTurnFrame):
            emit(frame)
            return
        session, turn_id = self.session, frame.turn_id
        session.conversation.add_user(frame.text)
        session.trace.mark(turn_id, "llm_start", session.clock.now())
        emit(LLMResponseStartFrame(turn_id=turn_id))
        pieces: list[str] = []
        stream = self.model.stream(session.conversation.messages(), self.options)
        try:
            async for delta in stream:
                if delta.text:
                    session.trace.mark(turn_id, "llm_first_token", session.clock.now())
                    pieces.append(delta.text)
                    emit(LLMTextFrame(turn_id=turn_id, text=delta.text))
        except asyncio.CancelledError:
            session.trace.mark(turn_id, "llm_stopped", session.clock.now())
            raise
        except PolymodalError as exc:
            log.warning("LLM failed on turn %d: %s", turn_id, exc)
            session.trace.turn(turn_id).error = f"llm: {exc}"
        finally:
            session.trace.turn(turn_id).generated_text = "".join(pieces).strip()
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(closer())
        session.trace.mark(turn_id, "llm_end", session.clock.now())
        emit(LLMResponseEndFrame(turn_id=turn_id))


class TextToSpeech:
    """Feeds the streamed reply text to a streaming TTS and emits its audio as it comes.

    Synthesis runs in a task of its own so text keeps flowing in while audio flows out; an interruption
    cancels the task (closing the engine's stream).
    """

    def __init__(self, tts: TTS, session: VoiceSession, options: TTSOptions | None = None) -> None:
        self.tts = tts
        self.session = session
        self.options = options
        self._text: asyncio.Queue[str | None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def process(self, frame: Frame, emit: Emit) -> None:
        """Start, feed and finish synthesis per reply; stop it on interruption."""
        if isinstance(frame, LLMResponseStartFrame):
            await self._cancel()
            self._text = asyncio.Queue()
            self._task = asyncio.create_task(self._synthesize(frame.turn_id, self._text, emit))
        elif isinstance(frame, LLMTextFrame):
            if self._text is not None:
                self._text.put_nowait(frame.text)
            return
        elif isinstance(frame, LLMResponseEndFrame):
            if self._text is not None and self._task is not None:
                self._text.put_nowait(None)
                await self._task  # cancelled with this frame on interruption
                self._text, self._task = None, None
        elif isinstance(frame, InterruptionFrame | EndFrame):
            await self._cancel()
        emit(frame)

    async def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._text, self._task = None, None

    async def _synthesize(self, turn_id: int, text: asyncio.Queue[str | None], emit: Emit) -> None:
        async def pieces() -> AsyncIterator[str]:
            while (piece := await text.get()) is not None:
                yield piece

        session = self.session
        audio = self.tts.stream(pieces(), self.options)
        try:
            async for chunk in audio:
                session.trace.mark(turn_id, "tts_first_audio", session.clock.now())
                emit(
                    TTSAudioFrame(
                        turn_id=turn_id,
                        pcm=chunk.pcm,
                        sample_rate=chunk.sample_rate,
                        text=chunk.text,
                        words=chunk.words,
                    )
                )
        except PolymodalError as exc:
            log.warning("TTS failed on turn %d: %s", turn_id, exc)
            session.trace.turn(turn_id).error = f"tts: {exc}"
        finally:
            closer = getattr(audio, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(closer())
        emit(TTSEndFrame(turn_id=turn_id))


__all__ = ["LanguageModel", "SpeechToText", "TextToSpeech"]
