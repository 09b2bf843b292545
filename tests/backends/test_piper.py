from __future__ import annotations

import pytest

from polymodal.backends.speech import TTS, TTSOptions

pytestmark = pytest.mark.slow
piper = pytest.importorskip("piper")


async def deltas(text: str):
    for word in text.split(" "):
        yield word + " "


async def test_piper_streams_one_chunk_per_sentence_that_whisper_understands() -> None:
    from polymodal.backends.piper import PiperTTS
    from polymodal.backends.whisper import WhisperSTT
    from tests.pipelines.voice.clips import word_error_rate

    tts = PiperTTS()
    assert isinstance(tts, TTS) and tts.sample_rate == 22050
    text = "The meeting moved to Thursday. Please bring the blue folder."
    chunks = [c async for c in tts.stream(deltas(text))]
    assert [c.text.strip() for c in chunks] == [
        "The meeting moved to Thursday.",
        "Please bring the blue folder.",
    ]
    assert all(c.sample_rate == 22050 and c.duration > 0.8 for c in chunks)
    whisper = WhisperSTT()
    for chunk in chunks:
        from polymodal.media.audio import Audio

        heard = await whisper.transcribe(Audio(chunk.pcm, chunk.sample_rate))
        assert word_error_rate(chunk.text, heard.text) == 0.0
    slow = await tts.synthesize("Please bring the blue folder.", TTSOptions(speed=0.5))
    assert slow.duration > 1.6 * chunks[1].duration
