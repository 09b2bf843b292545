"""WebRTC's GMM voice activity detector (``webrtcvad-wheels``): tiny, fast, a yes/no per 10/20/30 ms frame."""

from __future__ import annotations

from typing import Any

import numpy as np

from polymodal.backends.speech import PCM
from polymodal.errors import ConfigError

_RATES = (8000, 16000, 32000, 48000)


class WebRTCVAD:
    """WebRTC VAD (:class:`~polymodal.backends.speech.VAD`); the probability is 1.0 or 0.0.

    ``aggressiveness`` 0-3: higher rejects more non-speech (and more quiet speech).
    """

    name = "webrtc"

    def __init__(self, sample_rate: int = 16000, *, frame_ms: int = 30, aggressiveness: int = 2) -> None:
        if sample_rate not in _RATES:
            raise ConfigError(f"webrtc VAD runs at {_RATES} Hz, not {sample_rate}")
        if frame_ms not in (10, 20, 30):
            raise ConfigError(f"webrtc VAD frames are 10, 20 or 30 ms, not {frame_ms}")
        if not 0 <= aggressiveness <= 3:
            raise ConfigError(f"webrtc VAD aggressiveness is 0-3, not {aggressiveness}")
        try:
            import webrtcvad
        except ImportError as exc:
            raise ConfigError("webrtc VAD needs webrtcvad", hint="pip install webrtcvad-wheels") from exc
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * frame_ms // 1000
        self.aggressiveness = aggressiveness
        self._vad: Any = webrtcvad.Vad(aggressiveness)

    def reset(self) -> None:
        """Start a fresh stream (the detector's adaptive noise estimate is discarded)."""
        import webrtcvad

        self._vad = webrtcvad.Vad(self.aggressiveness)

    def speech_probability(self, frame: PCM) -> float:
        """1.0 when the frame is speech, else 0.0."""
        if frame.shape != (self.frame_samples,):
            raise ValueError(f"webrtc VAD needs frames of {self.frame_samples} samples, got {frame.shape}")
        pcm16 = (np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return 1.0 if self._vad.is_speech(pcm16, self.sample_rate) else 0.0


__all__ = ["WebRTCVAD"]
