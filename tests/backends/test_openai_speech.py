"""OpenAI transcription and speech via the SDK, against a local HTTP server speaking the audio endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from polymodal.backends._retry import RetryPolicy
from polymodal.backends.openai_speech import OpenAISTT, OpenAITTS
from polymodal.backends.speech import STTOptions, Transcript, TTSOptions
from polymodal.errors import BackendError, ConfigError, ErrorCategory
from polymodal.media.audio import Audio
from tests.fakes_ws.asgi import serve_asgi
from tests.fakes_ws.openai_http import FakeOpenAIAudio

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, total_timeout=10.0)


def tone(seconds: float, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


async def deltas(*pieces: str) -> AsyncIterator[str]:
    for piece in pieces:
        yield piece


async def test_transcribe_uploads_a_wav_and_returns_the_text() -> None:
    fake = FakeOpenAIAudio()
    async with serve_asgi(fake.app()) as host:
        stt = OpenAISTT("sk-test", base_url=f"http://{host}/v1", retry=FAST_RETRY)
        result = await stt.transcribe(Audio(tone(0.5), 16_000), STTOptions(language="en", prompt="lights"))
        await stt.aclose()
    assert result.text == "Turn the lights off please." and result.is_final
    assert result.end == pytest.approx(0.5)
    request = fake.requests[0]
    assert request["model"] == "gpt-4o-mini-transcribe" and request["language"] == "en"
    assert request["prompt"] == "lights" and request["response_format"] == "json"
    assert (request["rate"], request["channels"], request["frames"]) == (16000, 1, 8000)


async def test_stream_finalize_streams_partials_then_the_final_text() -> None:
    fake = FakeOpenAIAudio(transcript="One two three four.")
    partials: list[Transcript] = []
    async with serve_asgi(fake.app()) as host:
        stt = OpenAISTT("sk-test", base_url=f"http://{host}/v1", retry=FAST_RETRY)
        stream = await stt.open_stream(on_partial=partials.append)
        for i in range(0, 16_000, 320):
            await stream.send(tone(1.0)[i : i + 320])
        final = await stream.finalize()
        empty = await stream.finalize()
        await stream.aclose()
        await stt.aclose()
    assert [p.text for p in partials] == ["One", "One two", "One two three", "One two three four."]
    assert final.text == "One two three four." and final.start == 0.0 and final.end == pytest.approx(1.0)
    assert empty.text == "" and empty.start == pytest.approx(1.0)
    assert fake.requests[0]["stream"] == "true"
    assert len(fake.requests) == 1  # the empty utterance made no request


async def test_tts_streams_pcm_per_sentence() -> None:
    fake = FakeOpenAIAudio(ms_per_char=10)
    async with serve_asgi(fake.app()) as host:
        tts = OpenAITTS("sk-test", voice="verse", instructions="Cheerful.", base_url=f"http://{host}/v1")
        chunks = [
            c
            async for c in tts.stream(
                deltas("Hello there, friend. ", "How are", " you?"), TTSOptions(speed=1.2)
            )
        ]
        await tts.aclose()
    assert "".join(c.text for c in chunks) == "Hello there, friend. How are you?"
    assert all(c.sample_rate == 24_000 for c in chunks)
    total = sum(len(c.pcm) for c in chunks)
    assert (
        total
        == 24_000 * 10 * len("Hello there, friend. ") // 1000 + 24_000 * 10 * len("How are you?") // 1000
    )
    assert len(chunks) > 2  # audio arrived in several pieces per sentence
    assert 0.15 < float(np.abs(np.concatenate([c.pcm for c in chunks])).max()) < 0.25
    speech = [r for r in fake.requests if r["endpoint"] == "speech"]
    assert [r["input"] for r in speech] == ["Hello there, friend. ", "How are you?"]
    assert (
        speech[0]["voice"] == "verse"
        and speech[0]["speed"] == 1.2
        and speech[0]["instructions"] == "Cheerful."
    )
    assert speech[0]["model"] == "gpt-4o-mini-tts" and speech[0]["response_format"] == "pcm"


async def test_rate_limit_is_retried_with_retry_after() -> None:
    fake = FakeOpenAIAudio(fail=[(429, "rate_limit_exceeded", {"retry-after-ms": "10"})])
    async with serve_asgi(fake.app()) as host:
        tts = OpenAITTS("sk-test", base_url=f"http://{host}/v1", retry=FAST_RETRY)
        clip = await tts.synthesize("Retry me.")
        await tts.aclose()
    assert clip.sample_rate == 24_000 and clip.num_samples == 24_000 * 10 * len("Retry me.") // 1000


async def test_bad_key_is_a_permanent_auth_error_from_the_shared_translation() -> None:
    fake = FakeOpenAIAudio()
    async with serve_asgi(fake.app()) as host:
        stt = OpenAISTT("sk-wrong", base_url=f"http://{host}/v1", retry=FAST_RETRY)
        with pytest.raises(BackendError) as info:
            await stt.transcribe(Audio(tone(0.2), 16_000))
        await stt.aclose()
    assert info.value.category is ErrorCategory.AUTH and info.value.status == 401
    assert info.value.provider == "openai" and info.value.model == "gpt-4o-mini-transcribe"
    assert "Incorrect API key" in str(info.value)


async def test_quota_429_is_not_retried() -> None:
    fake = FakeOpenAIAudio(fail=[(429, "insufficient_quota", {})] * 3)
    async with serve_asgi(fake.app()) as host:
        tts = OpenAITTS("sk-test", base_url=f"http://{host}/v1", retry=FAST_RETRY)
        with pytest.raises(BackendError) as info:
            await tts.synthesize("No money.")
        await tts.aclose()
    assert info.value.category is ErrorCategory.QUOTA
    assert len(fake.fail) == 2  # one attempt only


def test_missing_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAITTS("")
