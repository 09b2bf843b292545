"""Deepgram streaming STT against a local server speaking Deepgram's /v1/listen protocol."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from polymodal.backends._retry import RetryPolicy
from polymodal.backends.deepgram import DeepgramSTT
from polymodal.backends.speech import STTOptions, Transcript
from polymodal.errors import BackendError, ConfigError, ErrorCategory
from polymodal.media.audio import Audio
from tests.fakes_ws.deepgram import FakeDeepgram

RATE = 16_000
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, total_timeout=10.0)


def tone(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


async def send_frames(stream: object, pcm: np.ndarray, frame_ms: int = 20) -> None:
    step = RATE * frame_ms // 1000
    for i in range(0, len(pcm), step):
        await stream.send(pcm[i : i + step])  # type: ignore[attr-defined]


def stt(fake: FakeDeepgram, **kwargs: object) -> DeepgramSTT:
    return DeepgramSTT("dg-test-key", base_url=fake.url, retry=FAST_RETRY, **kwargs)  # type: ignore[arg-type]


async def test_stream_yields_partials_then_the_final_utterance() -> None:
    fake = FakeDeepgram(["Hello there, how are you today?"])
    partials: list[Transcript] = []
    async with fake.running():
        stream = await stt(fake).open_stream(STTOptions(language="en"), on_partial=partials.append)
        await send_frames(stream, tone(0.6))
        await send_frames(stream, silence(0.1))
        final = await stream.finalize()
        await stream.aclose()

    assert final.text == "Hello there, how are you today?"
    assert final.is_final
    assert final.start == pytest.approx(0.0, abs=0.02)
    assert final.end == pytest.approx(0.6, abs=0.03)
    assert [w.text for w in final.words][:2] == ["Hello", "there,"]
    assert partials, "interim results should reach on_partial"
    assert all(not p.is_final for p in partials)
    assert all(final.text.startswith(p.text) for p in partials)
    assert len(partials[-1].text) > len(partials[0].text)
    session = fake.sessions[0]
    assert session.path == "/v1/listen"
    assert session.headers["authorization"] == "Token dg-test-key"
    assert session.query["encoding"] == "linear16" and session.query["sample_rate"] == "16000"
    assert session.query["channels"] == "1" and session.query["model"] == "nova-3"
    assert session.query["interim_results"] == "true" and session.query["language"] == "en"
    assert sum(len(b) for b in session.binary) == 2 * (len(tone(0.6)) + len(silence(0.1)))
    assert {"type": "Finalize"} in session.text


async def test_one_stream_carries_several_utterances() -> None:
    fake = FakeDeepgram(["First one.", "Second one here."])
    async with fake.running():
        stream = await stt(fake).open_stream()
        await send_frames(stream, np.concatenate([tone(0.3), silence(0.05)]))
        first = await stream.finalize()
        await send_frames(stream, np.concatenate([silence(0.2), tone(0.4), silence(0.05)]))
        second = await stream.finalize()
        await stream.aclose()
    assert first.text == "First one."
    assert second.text == "Second one here."
    assert second.start == pytest.approx(0.55, abs=0.03)


async def test_endpointed_result_before_finalize_is_kept() -> None:
    fake = FakeDeepgram(["Endpointed by the server."])
    async with fake.running():
        stream = await stt(fake, endpointing_ms=200).open_stream()
        await send_frames(stream, np.concatenate([tone(0.3), silence(0.4)]))  # server sends speech_final
        await asyncio.sleep(0.05)
        final = await stream.finalize()
        await stream.aclose()
    assert final.text == "Endpointed by the server."


async def test_finalize_without_speech_is_empty() -> None:
    fake = FakeDeepgram(["never said"])
    async with fake.running():
        stream = await stt(fake).open_stream()
        await send_frames(stream, silence(0.2))
        final = await stream.finalize()
        await stream.aclose()
    assert final.text == "" and final.is_final


async def test_batch_transcribe_streams_the_clip_and_closes_the_stream() -> None:
    fake = FakeDeepgram(["A whole clip."])
    clip = Audio(np.stack([tone(0.5), tone(0.5)], axis=1), RATE)  # stereo -> mono
    async with fake.running():
        result = await stt(fake).transcribe(clip)
    assert result.text == "A whole clip."
    session = fake.sessions[0]
    assert session.query["interim_results"] == "false"
    assert {"type": "CloseStream"} in session.text
    assert sum(len(b) for b in session.binary) == 2 * RATE // 2
    assert session.close_code == 1000


async def test_keepalive_holds_a_silent_stream_open() -> None:
    fake = FakeDeepgram(["Still here."], idle_timeout=0.4)
    async with fake.running():
        stream = await stt(fake, keepalive_interval=0.15).open_stream()
        await asyncio.sleep(1.0)  # 2.5x the server's idle timeout with no audio
        await send_frames(stream, np.concatenate([tone(0.3), silence(0.05)]))
        final = await stream.finalize()
        await stream.aclose()
    assert final.text == "Still here."
    assert fake.keepalives >= 3
    assert {"type": "KeepAlive"} in fake.sessions[0].text


async def test_net_0001_timeout_close_is_a_transient_timeout() -> None:
    fake = FakeDeepgram(idle_timeout=0.2)
    async with fake.running():
        stream = await stt(fake, keepalive_interval=30.0).open_stream()
        await asyncio.sleep(0.5)
        with pytest.raises(BackendError) as info:
            await stream.send(tone(0.02))
            await stream.finalize()
        await stream.aclose()
    assert info.value.category is ErrorCategory.TIMEOUT
    assert "NET-0001" in str(info.value) and "1011" in str(info.value)
    assert not info.value.is_permanent


async def test_data_0000_close_is_a_permanent_invalid_request() -> None:
    fake = FakeDeepgram(undecodable_after_bytes=1000)
    async with fake.running():
        stream = await stt(fake).open_stream()
        with pytest.raises(BackendError) as info:
            for _ in range(20):
                await send_frames(stream, tone(0.1))
                await asyncio.sleep(0.01)
        await stream.aclose()
    assert info.value.category is ErrorCategory.INVALID_REQUEST
    assert "DATA-0000" in str(info.value) and info.value.is_permanent


async def test_bad_key_is_auth_error_without_retry() -> None:
    fake = FakeDeepgram()
    async with fake.running():
        with pytest.raises(BackendError) as info:
            await DeepgramSTT("wrong", base_url=fake.url, retry=FAST_RETRY).open_stream()
    assert info.value.category is ErrorCategory.AUTH and info.value.status == 401
    assert "Invalid credentials" in str(info.value)
    assert fake.handshakes == 1


async def test_rate_limited_handshake_is_retried_then_succeeds() -> None:
    fake = FakeDeepgram(["Made it."], refuse_status=429, refuse_times=1, retry_after="0")
    async with fake.running():
        stream = await stt(fake).open_stream()
        await send_frames(stream, np.concatenate([tone(0.3), silence(0.05)]))
        final = await stream.finalize()
        await stream.aclose()
    assert fake.handshakes == 2
    assert final.text == "Made it."


async def test_persistent_503_gives_up_after_the_policy_attempts() -> None:
    fake = FakeDeepgram(refuse_status=503)
    async with fake.running():
        with pytest.raises(BackendError) as info:
            await stt(fake).open_stream()
    assert info.value.category is ErrorCategory.OVERLOADED and info.value.status == 503
    assert fake.handshakes == 3


async def test_unreachable_host_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    retry = RetryPolicy(max_attempts=1)
    with pytest.raises(BackendError) as info:
        await DeepgramSTT("k", base_url=f"ws://127.0.0.1:{port}", retry=retry).open_stream()
    assert info.value.category is ErrorCategory.CONNECTION


def test_missing_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="DEEPGRAM_API_KEY"):
        DeepgramSTT("")


async def test_create_reads_key_and_url_from_settings() -> None:
    from polymodal.backends.deepgram import create
    from polymodal.config import Settings

    fake = FakeDeepgram(["From settings."])
    async with fake.running():
        engine = create(Settings(deepgram_api_key="dg-test-key", deepgram_url=fake.url), "nova-2")
        stream = await engine.open_stream()
        await send_frames(stream, np.concatenate([tone(0.3), silence(0.05)]))
        final = await stream.finalize()
        await stream.aclose()
    assert final.text == "From settings." and fake.sessions[0].query["model"] == "nova-2"
