"""VAD-driven turn-taking, barge-in detection and echo suppression (the first stage of the voice loop)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polymodal.backends.speech import PCM, VAD
from polymodal.pipelines.voice.frames import (
    Frame,
    InputAudioFrame,
    InterruptionFrame,
    SpeechStartedFrame,
    SpeechStoppedFrame,
    UserTurnEndFrame,
)
from polymodal.pipelines.voice.processor import Emit
from polymodal.pipelines.voice.session import EchoReference, VoiceSession


@dataclass(frozen=True)
class TurnTakingConfig:
    """When speech starts and stops counting, and when a turn is over.

    Attributes:
        threshold: VAD probability at or above which a frame is speech.
        start_speech_s: consecutive speech needed to declare that speech started.
        pause_s: silence that closes a speech segment (the STT finalizes the segment then, early).
        end_of_turn_s: silence that ends the user's turn (the reply starts then).
        min_turn_speech_s: turns with less speech than this are ignored (coughs, clicks).
        barge_in_speech_s: consecutive speech, while the agent responds, that interrupts it.
        echo_cancel: subtract the agent's own delayed playback from the microphone before the VAD.
        max_echo_delay_s: the longest speaker-to-microphone delay the echo canceller searches.
    """

    threshold: float = 0.5
    start_speech_s: float = 0.064
    pause_s: float = 0.3
    end_of_turn_s: float = 0.7
    min_turn_speech_s: float = 0.25
    barge_in_speech_s: float = 0.096
    echo_cancel: bool = True
    max_echo_delay_s: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 < self.pause_s <= self.end_of_turn_s:
            raise ValueError("need 0 < pause_s <= end_of_turn_s")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold is a probability")


class EchoCanceller:
    """Removes a delayed, scaled copy of the played reference from microphone frames.

    For each frame it finds the lag (0..max delay) and gain that best explain the frame by the reference
    (FFT cross-correlation, least squares) and subtracts that estimate. Frames the reference explains almost
    entirely (the agent talking alone) teach it the echo path; when the user talks over the agent (the
    reference explains little), it subtracts along that learnt path instead of re-fitting to the mixture.
    This cancels linear echo with one dominant path (a speakerphone, the simulated echo); real rooms should
    use the platform's acoustic echo canceller (browsers do with ``echoCancellation: true``) in front of it.
    """

    def __init__(self, reference: EchoReference, max_delay_s: float) -> None:
        self.reference = reference
        self.max_delay = int(max_delay_s * reference.sample_rate)
        self.delay: int | None = None
        self.gain: float | None = None

    def process(self, frame: PCM, t: float) -> PCM:
        """The frame (starting at session time ``t``) with the best-fitting echo estimate removed."""
        n, d = len(frame), self.max_delay
        ref = self.reference.read(t - d / self.reference.sample_rate, n + d)
        if float(np.dot(ref, ref)) < 1e-6:
            return frame
        size = 1 << int(np.ceil(np.log2(2 * (n + d))))
        corr = np.fft.irfft(np.fft.rfft(ref, size) * np.conj(np.fft.rfft(frame, size)), size)[: d + 1]
        # corr[k] = sum_i frame[i] * ref[i + k]: reference segment starting k samples into the window
        cumulative = np.concatenate([[0.0], np.cumsum(ref.astype(np.float64) ** 2)])
        energy = cumulative[n : n + d + 1] - cumulative[0 : d + 1]
        score = np.where(energy > 1e-9, corr**2 / np.maximum(energy, 1e-9), 0.0)
        k = int(np.argmax(score))
        if energy[k] <= 1e-9:
            return frame
        explained = score[k] / max(float(np.dot(frame, frame)), 1e-12)
        if explained > 0.8:  # the frame is (almost) only echo: learn the path from it
            self.delay, self.gain = d - k, float(corr[k] / energy[k])
        elif self.delay is not None and self.gain is not None:  # double talk: trust the learnt path
            k = d - self.delay
            residual: PCM = (frame - np.float32(self.gain) * ref[k : k + n]).astype(np.float32)
            return residual
        gain = float(corr[k] / energy[k])
        return (frame - np.float32(gain) * ref[k : k + n]).astype(np.float32)


class TurnTaking:
    """Runs the VAD over input audio and turns its decisions into speech, turn and interruption frames.

    Emits, in order with the audio: :class:`SpeechStartedFrame` (then :class:`InterruptionFrame` when the
    agent is responding and the speech lasted ``barge_in_speech_s``), :class:`SpeechStoppedFrame` after
    ``pause_s`` of silence and :class:`UserTurnEndFrame` after ``end_of_turn_s``. Input audio goes on
    downstream (with the echo removed when echo cancellation is on).
    """

    def __init__(self, vad: VAD, session: VoiceSession, config: TurnTakingConfig | None = None) -> None:
        self.vad = vad
        self.session = session
        self.config = config or TurnTakingConfig()
        self._frame = vad.frame_samples
        self._seconds_per_frame = vad.frame_samples / vad.sample_rate
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_t = 0.0
        self._echo = (
            EchoCanceller(session.echo_reference, self.config.max_echo_delay_s)
            if self.config.echo_cancel and session.echo_reference is not None
            else None
        )
        self.turn_id = 0
        self.in_speech = False
        self.speech_run = 0.0
        self.silence_run = 0.0
        self.turn_speech = 0.0
        self.last_speech_end = 0.0
        self.interrupted_turn: int | None = None

    async def process(self, frame: Frame, emit: Emit) -> None:
        """Classify input audio frame by frame; pass every other frame on."""
        if not isinstance(frame, InputAudioFrame):
            emit(frame)
            return
        if frame.sample_rate != self.vad.sample_rate:
            raise ValueError(
                f"input audio is {frame.sample_rate} Hz; the VAD needs {self.vad.sample_rate} Hz"
            )
        if not len(self._pending):
            self._pending_t = frame.t
        self._pending = np.concatenate([self._pending, frame.pcm])
        while len(self._pending) >= self._frame:
            chunk, self._pending = self._pending[: self._frame], self._pending[self._frame :]
            t = self._pending_t
            self._pending_t += self._seconds_per_frame
            if self._echo is not None:
                chunk = self._echo.process(chunk, t)
            self._step(chunk, t, emit)
            emit(InputAudioFrame(pcm=chunk, sample_rate=frame.sample_rate, t=t))

    def _step(self, chunk: PCM, t: float, emit: Emit) -> None:
        config = self.config
        end = t + self._seconds_per_frame
        is_speech = self.vad.speech_probability(chunk) >= config.threshold
        if is_speech:
            self.speech_run += self._seconds_per_frame
            self.silence_run = 0.0
            self.last_speech_end = end
            if not self.in_speech and self.speech_run >= config.start_speech_s - 1e-9:
                self._start(end, emit)
            elif self.in_speech:
                self.turn_speech += self._seconds_per_frame
            barge_in = self.in_speech and self.session.responding and self.interrupted_turn != self.turn_id
            if barge_in and self.speech_run >= config.barge_in_speech_s - 1e-9:
                self.interrupted_turn = self.turn_id
                emit(InterruptionFrame(turn_id=self.turn_id, detected_at=self.session.clock.now()))
            return
        self.speech_run = 0.0
        self.silence_run += self._seconds_per_frame
        if self.in_speech and self.silence_run >= config.pause_s - 1e-9:
            self.in_speech = False
            emit(SpeechStoppedFrame(turn_id=self.turn_id, t=self.last_speech_end))
        if self.session.turn_open and not self.in_speech and self.silence_run >= config.end_of_turn_s - 1e-9:
            self.session.turn_open = False
            accepted = self.turn_speech >= config.min_turn_speech_s
            if accepted:
                self.session.trace.mark(self.turn_id, "speech_end", self.last_speech_end)
                self.session.trace.mark(self.turn_id, "turn_end", self.session.clock.now())
            else:
                self.session.trace.turns.pop(self.turn_id, None)
            emit(
                UserTurnEndFrame(
                    turn_id=self.turn_id,
                    speech_end=self.last_speech_end,
                    speech_seconds=self.turn_speech,
                    accepted=accepted,
                )
            )

    def _start(self, end: float, emit: Emit) -> None:
        self.in_speech = True
        start = end - self.speech_run
        new_turn = not self.session.turn_open
        if new_turn:
            self.turn_id += 1
            self.turn_speech = 0.0
            self.session.turn_open = True
            self.session.trace.mark(self.turn_id, "speech_start", start)
        self.turn_speech += self.speech_run
        emit(SpeechStartedFrame(turn_id=self.turn_id, t=start, new_turn=new_turn))


__all__ = ["EchoCanceller", "TurnTaking", "TurnTakingConfig"]
