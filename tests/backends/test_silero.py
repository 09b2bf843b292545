from __future__ import annotations

import numpy as np
import pytest

from polymodal.backends.silero import SileroVAD
from polymodal.backends.speech import VAD
from polymodal.media.audio import Audio
from tests.pipelines.voice.clips import clip


def probabilities(vad: VAD, audio: Audio) -> np.ndarray:
    vad.reset()
    return np.array([vad.speech_probability(f) for f in audio.chunks(vad.frame_samples, pad_last=True)])


def test_silero_hears_real_speech_and_not_silence_or_noise() -> None:
    vad = SileroVAD()
    assert isinstance(vad, VAD) and vad.frame_samples == 512
    speech = Audio.from_path(clip("0880").path, sample_rate=16000)  # "he was not an ill disposed young man"
    p = probabilities(vad, speech)
    assert np.mean(p[10:-10] > 0.5) > 0.7  # the middle of the utterance is speech
    silence = probabilities(vad, Audio.silence(2.0, 16000))
    assert silence.max() < 0.1
    rng = np.random.default_rng(0)
    hum = Audio((0.05 * rng.standard_normal(32000)).astype(np.float32), 16000)
    assert np.mean(probabilities(vad, hum) > 0.5) < 0.1  # steady noise is not speech


def test_silero_state_is_per_stream_and_frames_are_checked() -> None:
    vad = SileroVAD()
    speech = Audio.from_path(clip("hello_world").path, sample_rate=16000)
    first = probabilities(vad, speech)
    again = probabilities(vad, speech)  # reset() in between: same answer
    np.testing.assert_allclose(first, again, atol=1e-6)
    assert first.max() > 0.9
    with pytest.raises(ValueError, match="512"):
        vad.speech_probability(np.zeros(480, dtype=np.float32))


def test_silero_runs_at_8khz_too() -> None:
    vad = SileroVAD(sample_rate=8000)
    speech = Audio.from_path(clip("0880").path, sample_rate=8000)
    assert vad.frame_samples == 256
    assert np.mean(probabilities(vad, speech) > 0.5) > 0.5
