from __future__ import annotations

import asyncio
import shutil
import time

import numpy as np
import pytest

from polymodal.backends.flite import FliteTTS
from polymodal.backends.speech import TTS
from polymodal.errors import BackendError, ConfigError

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="apt-get install flite")


async def deltas(text: str):
    for word in text.split(" "):
        yield word + " "


async def test_flite_speaks_sentence_by_sentence_as_text_streams_in() -> None:
    tts = FliteTTS("slt")
    assert isinstance(tts, TTS) and tts.sample_rate == 16000
    chunks = [c async for c in tts.stream(deltas("Good morning to you. The train leaves at nine. Bye now!"))]
    assert [c.text.strip() for c in chunks] == [
        "Good morning to you.",
        "The train leaves at nine.",
        "Bye now!",
    ]
    for chunk in chunks:
        assert chunk.sample_rate == 16000 and chunk.duration > 0.3
        assert np.sqrt(np.mean(chunk.pcm**2)) > 0.01
    whole = await tts.synthesize("Good morning to you.")
    assert whole.duration == pytest.approx(chunks[0].duration, rel=0.1)


async def test_closing_the_stream_kills_flite_at_once(monkeypatch) -> None:
    tts = FliteTTS("kal")
    started = asyncio.Event()
    original = asyncio.create_subprocess_exec

    async def slow_flite(*args, **kwargs):  # a flite that hangs, to prove cancellation kills it
        started.set()
        return await original("sleep", "30", **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", slow_flite)
    task = asyncio.create_task(tts.synthesize("hello"))
    await started.wait()
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 0.5


async def test_flite_errors_are_backend_and_config_errors(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="voice"):
        FliteTTS("nobody")
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "which", lambda name: None)
        with pytest.raises(ConfigError, match="apt-get install flite"):
            FliteTTS()
    broken = FliteTTS("slt", binary="/bin/false")
    with pytest.raises(BackendError, match="flite"):
        await broken.synthesize("hi")
