from __future__ import annotations

import asyncio

import pytest

from polymodal.backends.speech import STT, STTOptions, Transcript
from polymodal.backends.whisper import WhisperSTT
from polymodal.media.audio import Audio
from tests.pipelines.voice.clips import clip, word_error_rate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def whisper() -> WhisperSTT:
    return WhisperSTT(partial_interval=1.0)


async def test_batch_transcription_of_real_speech(whisper: WhisperSTT) -> None:
    assert isinstance(whisper, STT)
    sample = clip("0870")  # 7.1 s of LibriVox
    result = await whisper.transcribe(Audio.from_path(sample.path))  # 16 kHz already; any rate works
    assert result.is_final and result.language == "en"
    assert word_error_rate(sample.text, result.text) <= 0.1


async def test_stream_gives_partials_then_finals_and_is_reused_across_utterances(whisper: WhisperSTT) -> None:
    first, second = clip("0870"), clip("hello_world")
    partials: list[Transcript] = []
    stream = await whisper.open_stream(STTOptions(), on_partial=partials.append)
    chunks = list(Audio.from_path(first.path, sample_rate=16000).chunks(1600))
    for chunk in chunks[:15]:  # 1.5 s: enough for an interim decode to start
        await stream.send(chunk)
    for _ in range(600):
        if partials:
            break
        await asyncio.sleep(0.05)
    for chunk in chunks[15:]:
        await stream.send(chunk)
    pending = asyncio.create_task(stream.finalize())
    await asyncio.sleep(0)  # finalize() has fixed its utterance: what follows belongs to the next one
    for chunk in Audio.from_path(second.path, sample_rate=16000).chunks(1600):
        await stream.send(chunk)
    final_one = await pending
    final_two = await stream.finalize()
    await stream.aclose()
    assert partials and not any(p.is_final for p in partials)
    assert word_error_rate("and mister john dashwood", partials[0].text) <= 0.25  # the first 1.5 s
    assert word_error_rate(first.text, final_one.text) <= 0.1
    assert word_error_rate(second.text, final_two.text) == 0.0
    assert final_two.start == pytest.approx(7.1, abs=0.05)  # stream clock keeps running across utterances
    empty = await (await whisper.open_stream()).finalize()
    assert empty.text == ""
