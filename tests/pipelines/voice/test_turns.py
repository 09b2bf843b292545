"""Echo cancellation on real speech, and turn-taking configuration checks."""

from __future__ import annotations

import numpy as np
import pytest

from polymodal.media.audio import Audio
from polymodal.pipelines.voice.session import EchoReference
from polymodal.pipelines.voice.turns import EchoCanceller, TurnTakingConfig
from tests.pipelines.voice.clips import clip


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_echo_canceller_removes_the_agents_delayed_voice_and_keeps_the_users() -> None:
    agent = Audio.from_path(clip("0870").path, sample_rate=16000).samples  # what the speaker played
    user = Audio.from_path(clip("quick_brown_fox").path, sample_rate=16000).samples
    reference = EchoReference(16000)
    reference.write(0.0, agent)
    canceller = EchoCanceller(reference, max_delay_s=0.25)
    delay = 1100  # 69 ms
    echo = 0.4 * np.concatenate([np.zeros(delay, dtype=np.float32), agent])[: len(agent)]
    n = 512
    start, stop = 16000, 16000 + 40 * n  # 1.28 s while the agent talks
    residual_echo, residual_both, user_part = [], [], []
    for first in range(start, stop, n):
        t = first / 16000
        mic_echo = echo[first : first + n]
        speech = user[first - start : first - start + n]
        residual_echo.append(canceller.process(mic_echo, t))
        residual_both.append(canceller.process(mic_echo + speech, t))
        user_part.append(speech)
    echo_in = rms(echo[start:stop])
    assert rms(np.concatenate(residual_echo)) < 0.05 * echo_in  # > 26 dB of echo removed
    kept = np.concatenate(residual_both)
    speech = np.concatenate(user_part)
    # double talk: what is left is the user's speech (the echo estimate barely touches it)
    assert rms(kept - speech) < 0.35 * rms(speech)


def test_echo_canceller_passes_audio_through_when_nothing_was_played() -> None:
    canceller = EchoCanceller(EchoReference(16000), max_delay_s=0.25)
    frame = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    assert canceller.process(frame, 3.0) is frame


def test_turn_taking_config_is_validated() -> None:
    with pytest.raises(ValueError):
        TurnTakingConfig(pause_s=0.9, end_of_turn_s=0.5)
    with pytest.raises(ValueError):
        TurnTakingConfig(threshold=1.5)
