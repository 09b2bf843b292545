"""ElevenLabs streaming TTS against a local server speaking the stream-input WebSocket protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from polymodal.backends._retry import RetryPolicy
from polymodal.backends.elevenlabs import ElevenLabsTTS, VoiceSettings
from polymodal.backends.speech import TTSChunk, TTSOptions, WordTiming
from polymodal.errors import BackendError, ConfigError, ErrorCategory
from tests.fakes_ws.elevenlabs import FakeElevenLabs

FAST_RETRY = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, total_timeout=10.0)


def tts(fake: FakeElevenLabs, **kwargs: object) -> ElevenLabsTTS:
    return ElevenLabsTTS("xi-test-key", "voice-1", base_url=fake.url, retry=FAST_RETRY, **kwargs)  # type: ignore[arg-type]


async def deltas(*pieces: str, delay: float = 0.0) -> AsyncIterator[str]:
    for piece in pieces:
        if delay:
            await asyncio.sleep(delay)
        yield piece


async def test_streamed_text_becomes_aligned_pcm_chunks() -> None:
    fake = FakeElevenLabs(ms_per_char=10)
    settings = VoiceSettings(stability=0.4, similarity_boost=0.7)
    chunks: list[TTSChunk] = []
    async with fake.running():
        engine = tts(fake, voice_settings=settings, sample_rate=24000)
        async for chunk in engine.stream(deltas("Hello the", "re. How are", " you?"), TTSOptions(speed=1.1)):
            chunks.append(chunk)

    spoken = "".join(c.text for c in chunks)
    assert spoken == "Hello there. How are you? "
    assert all(c.sample_rate == 24000 and c.pcm.dtype == np.float32 for c in chunks)
    assert sum(len(c.pcm) for c in chunks) == sum(24000 * 10 * len(c.text) // 1000 for c in chunks)
    assert 0.2 < float(np.abs(chunks[0].pcm).max()) < 0.3  # the fake's tone amplitude, decoded from base64
    # The fake splits each sentence in two audio messages: "Hello " then "there. ", each aligned from 0 ms.
    assert chunks[0].text == "Hello " and chunks[1].text == "there. "
    assert chunks[0].words == (WordTiming("Hello", 0.0, 0.05),)
    assert chunks[1].words == (WordTiming("there.", 0.0, 0.06),)

    session = fake.sessions[0]
    assert session.path == "/v1/text-to-speech/voice-1/stream-input"
    assert session.headers["xi-api-key"] == "xi-test-key"
    assert session.query["output_format"] == "pcm_24000" and session.query["model_id"] == "eleven_flash_v2_5"
    bos, *body, eos = session.text
    assert bos["text"] == " "
    assert bos["voice_settings"]["stability"] == 0.4 and bos["voice_settings"]["speed"] == 1.1
    assert bos["generation_config"]["chunk_length_schedule"] == [50, 120, 160, 290]
    assert [m["text"] for m in body] == ["Hello there. ", "How are you? "]
    assert all(m["flush"] is True for m in body)
    assert eos == {"text": ""}
    assert session.close_code == 1000


async def test_first_sentence_is_voiced_before_the_text_ends() -> None:
    fake = FakeElevenLabs()
    got_audio_at: list[int] = []
    sent = 0

    async def slow_llm() -> AsyncIterator[str]:
        nonlocal sent
        for piece in ["First sentence here. ", "Second ", "one ", "arrives ", "slowly."]:
            sent += 1
            yield piece
            await asyncio.sleep(0.05)

    async with fake.running():
        async for _ in tts(fake).stream(slow_llm()):
            got_audio_at.append(sent)
    assert got_audio_at[0] <= 2, "audio for the first sentence must arrive while the LLM is still streaming"


async def test_synthesize_returns_one_clip() -> None:
    fake = FakeElevenLabs(ms_per_char=10)
    async with fake.running():
        clip = await tts(fake).synthesize("One two three.")
    assert clip.sample_rate == 16000
    assert clip.num_samples == 16000 * 10 * len("One two three. ") // 1000


async def test_closing_the_stream_early_closes_the_socket() -> None:
    fake = FakeElevenLabs(first_audio_delay=0.0)

    async def endless() -> AsyncIterator[str]:
        while True:
            yield "More words to say. "
            await asyncio.sleep(0.01)

    async with fake.running():
        stream = tts(fake).stream(endless())
        first = await anext(stream)
        await stream.aclose()  # barge-in
        for _ in range(100):
            if fake.sessions[0].close_code is not None:
                break
            await asyncio.sleep(0.01)
    assert first.text
    assert fake.sessions[0].close_code == 1000


async def test_quota_error_message_is_a_permanent_quota_error() -> None:
    fake = FakeElevenLabs(quota_chars=10)
    async with fake.running():
        with pytest.raises(BackendError) as info:
            async for _ in tts(fake).stream(deltas("This is far more than ten characters. ")):
                pass
    assert info.value.category is ErrorCategory.QUOTA and info.value.is_permanent
    assert "quota_exceeded" in str(info.value)


async def test_inactivity_timeout_message_is_a_timeout() -> None:
    fake = FakeElevenLabs()

    async def stalled() -> AsyncIterator[str]:
        yield "Hello. "
        await asyncio.sleep(5)
        yield "never"

    async with fake.running():
        engine = tts(fake, inactivity_timeout=1)
        with pytest.raises(BackendError) as info:
            async for _ in engine.stream(stalled()):
                pass
    assert info.value.category is ErrorCategory.TIMEOUT
    assert "input_timeout_exceeded" in str(info.value)
    assert fake.sessions[0].query["inactivity_timeout"] == "1"


async def test_bad_key_is_refused_at_the_handshake() -> None:
    fake = FakeElevenLabs()
    async with fake.running():
        engine = ElevenLabsTTS("wrong", "voice-1", base_url=fake.url, retry=FAST_RETRY)
        with pytest.raises(BackendError) as info:
            await engine.synthesize("Hi.")
    assert info.value.category is ErrorCategory.AUTH and info.value.status == 401
    assert "Invalid API key" in str(info.value)
    assert fake.handshakes == 1


async def test_busy_server_is_retried_then_reported() -> None:
    fake = FakeElevenLabs(refuse_status=503)
    async with fake.running():
        with pytest.raises(BackendError) as info:
            await tts(fake).synthesize("Hi.")
    assert info.value.category is ErrorCategory.OVERLOADED
    assert fake.handshakes == 2


async def test_text_source_failure_is_raised_as_is() -> None:
    fake = FakeElevenLabs()

    async def broken() -> AsyncIterator[str]:
        yield "Start. "
        raise RuntimeError("llm died")

    async with fake.running():
        with pytest.raises(RuntimeError, match="llm died"):
            async for _ in tts(fake).stream(broken()):
                pass


def test_unsupported_rate_and_missing_key_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="ELEVENLABS_API_KEY"):
        ElevenLabsTTS("", "v")
    with pytest.raises(ConfigError, match="11025"):
        ElevenLabsTTS("k", "v", sample_rate=11025)


async def test_create_reads_key_and_url_from_settings() -> None:
    from polymodal.backends.elevenlabs import create
    from polymodal.config import Settings

    fake = FakeElevenLabs()
    async with fake.running():
        engine = create(Settings(elevenlabs_api_key="xi-test-key", elevenlabs_url=fake.url), "voice-9")
        clip = await engine.synthesize("Hi.")
    assert clip.num_samples > 0 and fake.sessions[0].path == "/v1/text-to-speech/voice-9/stream-input"
