from __future__ import annotations

import numpy as np
import pytest

from polymodal.backends.speech import VAD
from polymodal.backends.webrtc_vad import WebRTCVAD
from polymodal.errors import ConfigError
from polymodal.media.audio import Audio
from tests.pipelines.voice.clips import clip


def decisions(vad: VAD, audio: Audio) -> np.ndarray:
    vad.reset()
    return np.array([vad.speech_probability(f) for f in audio.chunks(vad.frame_samples, pad_last=True)])


def test_webrtc_vad_separates_real_speech_from_silence() -> None:
    vad = WebRTCVAD(frame_ms=30, aggressiveness=3)
    assert isinstance(vad, VAD) and vad.frame_samples == 480
    speech = Audio.from_path(clip("0870").path, sample_rate=16000)
    assert np.mean(decisions(vad, speech)[5:-5]) > 0.6
    assert decisions(vad, Audio.silence(1.0, 16000)).max() == 0.0


def test_webrtc_vad_checks_its_settings_and_frames() -> None:
    with pytest.raises(ConfigError):
        WebRTCVAD(sample_rate=44100)
    with pytest.raises(ConfigError):
        WebRTCVAD(frame_ms=25)
    with pytest.raises(ConfigError):
        WebRTCVAD(aggressiveness=7)
    with pytest.raises(ValueError, match="320"):
        WebRTCVAD(frame_ms=20).speech_probability(np.zeros(100, dtype=np.float32))
