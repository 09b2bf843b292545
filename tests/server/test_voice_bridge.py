"""The voice WebSocket driving the real voice loop (with fake engines) and the OpenAI Realtime path."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from polymodal.backends.openai_realtime import OpenAIRealtime
from polymodal.backends.testing import FakeChatModel
from polymodal.pipelines.voice.fakes import EnergyVAD, ScriptedSTT, ToneTTS
from polymodal.pipelines.voice.loop import VoiceLoop, VoiceLoopConfig
from polymodal.pipelines.voice.output import AudioSink
from polymodal.pipelines.voice.processor import Emit
from polymodal.server.voice_bridge import loop_runner, realtime_runner
from polymodal.server.voice_ws import VoiceServerLimits, create_voice_app
from tests.fakes_ws.asgi import serve_asgi
from tests.fakes_ws.openai_realtime import FakeOpenAIRealtime


def pcm16(pcm: np.ndarray) -> bytes:
    return (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)


async def stream_audio(ws: ClientConnection, pcm: np.ndarray, rate: int, *, realtime: bool = True) -> None:
    """Send 20 ms frames, paced like a microphone (a little faster than real time)."""
    step = rate // 50
    for i in range(0, len(pcm), step):
        await ws.send(pcm16(pcm[i : i + step]))
        if realtime:
            await asyncio.sleep(0.015)


async def collect(ws: ClientConnection, until: Any, timeout: float = 10.0) -> list[Any]:
    seen: list[Any] = []
    async with asyncio.timeout(timeout):
        while not until(seen):
            try:
                msg = await ws.recv()
            except ConnectionClosed:
                break
            seen.append(json.loads(msg) if isinstance(msg, str) else msg)
    return seen


def events(seen: list[Any], kind: str) -> list[dict[str, Any]]:
    return [m for m in seen if isinstance(m, dict) and m["type"] == kind]


async def test_loop_runner_runs_the_voice_loop_over_the_socket() -> None:
    stt = ScriptedSTT(["what time is it"])
    tts = ToneTTS(sample_rate=16000, seconds_per_char=0.01)
    llm = FakeChatModel(["It is noon."])

    def build(sink: AudioSink, observer: Emit) -> VoiceLoop:
        return VoiceLoop(EnergyVAD(), stt, llm, tts, sink, VoiceLoopConfig(), observer=observer)

    app = create_voice_app(None, loop_runner(build, output_rate=16000))
    async with serve_asgi(app) as host, connect(f"ws://{host}/voice/ws") as ws:
        await ws.send(
            json.dumps({"type": "start", "format": "pcm_s16le", "sample_rate": 16000, "channels": 1})
        )
        await stream_audio(ws, np.concatenate([tone(0.6, 16000), np.zeros(16000, np.float32)]), 16000)
        seen = await collect(ws, lambda s: bool(events(s, "latency")))
        await ws.send(json.dumps({"type": "stop"}))

    assert [e["text"] for e in events(seen, "transcript") if e["final"]] == ["what time is it"]
    assert "".join(e["delta"] for e in events(seen, "reply_text")) == "It is noon."
    assert events(seen, "reply_start")
    audio = b"".join(m for m in seen if isinstance(m, bytes))
    assert len(audio) // 2 >= 0.9 * len(tts.render("It is noon."))  # the reply tone reached the page
    record = events(seen, "latency")[0]["turn"]
    assert record["user_text"] == "what time is it" and record["reply_text"] == "It is noon."
    for stage in ("speech_end", "transcript_final", "llm_first_token", "tts_first_audio", "audio_out_first"):
        assert isinstance(record[stage], float), stage
    assert record["speech_end"] <= record["transcript_final"] <= record["llm_first_token"]
    assert record["tts_first_audio"] <= record["audio_out_first"]


async def test_realtime_runner_answers_and_truncates_on_barge_in() -> None:
    fake = FakeOpenAIRealtime(reply_text=" ".join(["word"] * 30), delta_interval=0.02)
    limits = VoiceServerLimits(sample_rate=24000)
    async with fake.running():
        engine = OpenAIRealtime("sk-test", base_url=f"{fake.url}/v1", turn_detection="server_vad")
        app = create_voice_app(None, realtime_runner(engine), limits)
        async with serve_asgi(app) as host, connect(f"ws://{host}/voice/ws") as ws:
            start = {"type": "start", "format": "pcm_s16le", "sample_rate": 24000, "channels": 1}
            await ws.send(json.dumps(start))
            await stream_audio(ws, np.concatenate([tone(0.4, 24000), np.zeros(7200, np.float32)]), 24000)
            seen = await collect(ws, lambda s: sum(isinstance(m, bytes) for m in s) >= 3)
            await ws.send(json.dumps({"type": "played", "ms": 120}))
            await stream_audio(ws, tone(0.2, 24000), 24000)  # the user talks over the answer
            seen += await collect(ws, lambda s: bool(events(s, "interrupt")) and bool(events(s, "latency")))
            await ws.send(json.dumps({"type": "stop"}))

    assert events(seen, "transcript")[0]["text"] == "What is the weather like?"
    assert events(seen, "reply_start") and events(seen, "interrupt")
    latency = events(seen, "latency")[0]["turn"]
    assert latency["status"] == "cancelled" and latency["speech_end"] <= latency["audio_out_first"]
    sent = [e["type"] for e in fake.sessions[0].text]
    assert "response.cancel" in sent and "conversation.item.truncate" in sent
    (end_ms,) = fake.conversations[0].truncated.values()
    assert 120 <= end_ms < 3000  # the page's report, advanced by the time since it was sent
    assert fake.sessions[0].text[0]["session"]["audio"]["input"]["turn_detection"] == {"type": "server_vad"}
