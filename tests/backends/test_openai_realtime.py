"""OpenAI Realtime as a single-model voice path, against a local server speaking the Realtime events."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from polymodal.backends._retry import RetryPolicy
from polymodal.backends.openai_realtime import (
    AssistantAudio,
    AssistantText,
    OpenAIRealtime,
    RealtimeEvent,
    ResponseDone,
    SpeechStarted,
    SpeechStopped,
    UserTranscript,
)
from polymodal.errors import BackendError, ConfigError, ErrorCategory
from tests.fakes_ws.openai_realtime import FakeOpenAIRealtime

RATE = 24_000


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)


def realtime(fake: FakeOpenAIRealtime, **kwargs: object) -> OpenAIRealtime:
    retry = RetryPolicy(max_attempts=1)
    return OpenAIRealtime("sk-test", base_url=f"{fake.url}/v1", retry=retry, **kwargs)  # type: ignore[arg-type]


async def send_audio(session: object, pcm: np.ndarray, frame_ms: int = 40) -> None:
    step = RATE * frame_ms // 1000
    for i in range(0, len(pcm), step):
        await session.send_audio(pcm[i : i + step])  # type: ignore[attr-defined]


@pytest.mark.parametrize("legacy", [False, True], ids=["ga-event-names", "beta-event-names"])
async def test_one_turn_speech_in_speech_out(legacy: bool) -> None:
    fake = FakeOpenAIRealtime(legacy_names=legacy, reply_text="It is sunny and warm today.")
    events: list[RealtimeEvent] = []
    async with fake.running():
        session = await realtime(fake, voice="cedar", instructions="Be brief.").connect()
        await send_audio(session, tone(0.5))
        async for event in session.respond():
            events.append(event)
        await session.aclose()

    assert [e.text for e in events if isinstance(e, UserTranscript)] == ["What is the weather like?"]
    text = "".join(e.delta for e in events if isinstance(e, AssistantText))
    assert text == "It is sunny and warm today."
    audio = [e for e in events if isinstance(e, AssistantAudio)]
    assert sum(len(a.pcm) for a in audio) == 6 * RATE // 10  # 6 words x 100 ms
    assert all(a.sample_rate == RATE and a.pcm.dtype == np.float32 for a in audio)
    assert isinstance(events[-1], ResponseDone) and events[-1].status == "completed"

    sent = fake.sessions[0]
    assert sent.path == "/v1/realtime" and sent.query["model"] == "gpt-realtime"
    assert sent.headers["authorization"] == "Bearer sk-test"
    update = sent.text[0]
    assert update["type"] == "session.update"
    config = update["session"]
    assert config["type"] == "realtime" and config["instructions"] == "Be brief."
    assert config["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "cedar"}
    assert config["audio"]["input"]["turn_detection"] is None
    appended = [e for e in sent.text if e["type"] == "input_audio_buffer.append"]
    assert len(appended) == 13
    kinds = [e["type"] for e in sent.text]
    assert kinds[-2:] == ["input_audio_buffer.commit", "response.create"]
    assert all(e["event_id"].startswith("evt_") for e in sent.text)


async def test_barge_in_cancels_and_truncates_to_what_was_played() -> None:
    fake = FakeOpenAIRealtime(reply_text="one two three four five six seven eight", delta_interval=0.05)
    async with fake.running():
        session = await realtime(fake).connect()
        await send_audio(session, tone(0.3))
        events: list[RealtimeEvent] = []
        truncation = None
        async for event in session.respond():
            events.append(event)
            audio = [e for e in events if isinstance(e, AssistantAudio)]
            if len(audio) == 2 and truncation is None:
                truncation = await session.interrupt(played_ms=150)
        await asyncio.sleep(0.05)
        await session.aclose()

    assert truncation is not None
    assert truncation.audio_end_ms == 150 and truncation.received_ms == 200
    done = events[-1]
    assert isinstance(done, ResponseDone) and done.status == "cancelled" and done.reason == "client_cancelled"
    assert sum(isinstance(e, AssistantAudio) for e in events) < 8, "audio must stop after the cancel"
    sent = [e["type"] for e in fake.sessions[0].text]
    assert sent[-2:] == ["response.cancel", "conversation.item.truncate"]
    truncate = fake.sessions[0].text[-1]
    assert truncate["item_id"] == truncation.item_id and truncate["content_index"] == 0
    assert fake.conversations[0].truncated == {truncation.item_id: 150}


async def test_played_position_is_clamped_to_the_audio_received() -> None:
    fake = FakeOpenAIRealtime(reply_text="short answer")
    async with fake.running():
        session = await realtime(fake).connect()
        await send_audio(session, tone(0.3))
        async for _ in session.respond():
            pass
        truncation = await session.interrupt(played_ms=5_000)  # the page says more than was ever sent
        await asyncio.sleep(0.05)
        await session.aclose()
    assert truncation is not None and truncation.audio_end_ms == truncation.received_ms == 200
    assert "response.cancel" not in [e["type"] for e in fake.sessions[0].text]  # nothing was running
    assert fake.conversations[0].truncated == {truncation.item_id: 200}


async def test_interrupt_without_an_answer_is_a_no_op() -> None:
    fake = FakeOpenAIRealtime()
    async with fake.running():
        session = await realtime(fake).connect()
        assert await session.interrupt(played_ms=100) is None
        await session.aclose()


async def test_server_vad_mode_detects_the_turn_and_answers_by_itself() -> None:
    fake = FakeOpenAIRealtime(reply_text="Hi there.")
    events: list[RealtimeEvent] = []
    async with fake.running():
        session = await realtime(fake, turn_detection="server_vad").connect()
        await send_audio(session, np.concatenate([tone(0.4), np.zeros(int(0.3 * RATE), np.float32)]))
        async with asyncio.timeout(5):
            async for event in session.events():
                events.append(event)
                if isinstance(event, ResponseDone):
                    break
        await session.aclose()
    kinds = [type(e) for e in events]
    assert kinds[:3] == [SpeechStarted, SpeechStopped, UserTranscript]
    assert isinstance(events[-1], ResponseDone) and events[-1].status == "completed"
    assert fake.sessions[0].text[0]["session"]["audio"]["input"]["turn_detection"] == {"type": "server_vad"}


async def test_error_event_raises_a_typed_backend_error() -> None:
    fake = FakeOpenAIRealtime()
    async with fake.running():
        session = await realtime(fake).connect()
        await send_audio(session, tone(0.04))  # 40 ms: below the 100 ms a commit needs
        with pytest.raises(BackendError) as info:
            async for _ in session.respond():
                pass
        await session.aclose()
    assert info.value.category is ErrorCategory.INVALID_REQUEST and info.value.is_permanent
    assert "input_audio_buffer_commit_empty" in str(info.value)


async def test_bad_key_is_refused_at_the_handshake() -> None:
    fake = FakeOpenAIRealtime()
    async with fake.running():
        with pytest.raises(BackendError) as info:
            await OpenAIRealtime("sk-wrong", base_url=f"{fake.url}/v1").connect()
    assert info.value.category is ErrorCategory.AUTH and info.value.status == 401
    assert "Incorrect API key" in str(info.value)


def test_missing_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIRealtime("")
