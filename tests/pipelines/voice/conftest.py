from __future__ import annotations

import numpy as np
import pytest

from polymodal.media.audio import Audio

RATE = 16000


def noise_burst(seconds: float, amplitude: float = 0.2, seed: int = 0) -> Audio:
    """Loud noise standing in for speech (the energy VAD hears it as speech)."""
    rng = np.random.default_rng(seed)
    return Audio((amplitude * rng.standard_normal(round(seconds * RATE))).astype(np.float32), RATE)


def utterance(lead: float, speech: float, tail: float, seed: int = 0) -> Audio:
    """Silence, a burst of 'speech', silence."""
    return Audio.concatenate(
        [Audio.silence(lead, RATE), noise_burst(speech, seed=seed), Audio.silence(tail, RATE)]
    )


@pytest.fixture
def rms_after():
    def measure(audio: Audio, start: float, end: float) -> float:
        piece = audio.slice(start, end).samples
        return float(np.sqrt(np.mean(piece**2))) if len(piece) else 0.0

    return measure
