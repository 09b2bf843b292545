from __future__ import annotations

import pytest

from polymodal.backends.pocketsphinx_stt import PocketsphinxSTT
from polymodal.backends.speech import STT, Transcript
from polymodal.media.audio import Audio
from tests.pipelines.voice.clips import clip, word_error_rate

pytestmark = pytest.mark.slow


async def test_pocketsphinx_transcribes_real_speech_incrementally() -> None:
    stt = PocketsphinxSTT()
    assert isinstance(stt, STT)
    sample = clip("0880")  # LibriVox: "he was not an ill disposed young man"
    audio = Audio.from_path(sample.path)
    batch = await stt.transcribe(audio)
    assert word_error_rate(sample.text, batch.text) <= 0.5  # a classic model: rough but on topic
    partials: list[Transcript] = []
    stream = await stt.open_stream(on_partial=partials.append)
    for chunk in audio.resample(16000).chunks(3200):
        await stream.send(chunk)
    final = await stream.finalize()
    await stream.aclose()
    assert word_error_rate(sample.text, final.text) <= 0.5
    assert final.is_final and final.end == pytest.approx(audio.duration, abs=0.2)
    assert len(partials) >= 2 and all(not p.is_final for p in partials)
    assert len(partials[-1].text) >= len(partials[0].text)  # the hypothesis grows as audio arrives
