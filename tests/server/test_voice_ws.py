"""The voice WebSocket server: protocol, limits (sessions, frame size, idle, malformed audio) and a soak."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from polymodal.server.voice_ws import CloseCode, VoiceServerLimits, create_voice_app
from tests.fakes_ws.asgi import serve_asgi
from tests.fakes_ws.voice_loops import ScriptedVoiceLoop, tone_pcm16

START = json.dumps({"type": "start", "format": "pcm_s16le", "sample_rate": 16000, "channels": 1})
FRAME = tone_pcm16(20, 16000, amplitude=0.5)  # 640 bytes = 20 ms


@contextlib.asynccontextmanager
async def voice_server(loop: Any, **limits: Any) -> AsyncIterator[tuple[str, Any]]:
    app = create_voice_app(None, loop, VoiceServerLimits(**limits))
    async with serve_asgi(app) as host:
        yield f"ws://{host}/voice/ws", app.state.voice_endpoint


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> tuple[int, str, list[Any]]:
    """Drain messages until the server closes; return (code, reason, messages seen)."""
    seen: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                msg = await ws.recv()
                seen.append(json.loads(msg) if isinstance(msg, str) else msg)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "server dropped the connection without a close frame"
        return closed.rcvd.code, closed.rcvd.reason, seen
    raise AssertionError("unreachable")


async def test_session_round_trip_delivers_audio_to_the_loop_and_events_back() -> None:
    loop = ScriptedVoiceLoop(turn_ms=400, reply_ms=100)
    async with voice_server(loop) as (url, endpoint), connect(url) as ws:
        await ws.send(START)
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready" and ready["sample_rate"] == 16000
        for _ in range(25):  # 500 ms of audio -> one turn
            await ws.send(FRAME)
        await ws.send(json.dumps({"type": "played", "ms": 80}))
        await ws.send(json.dumps({"type": "stop"}))
        code, reason, seen = await closed_with(ws)

    assert code == CloseCode.NORMAL, reason
    events = [m for m in seen if isinstance(m, dict)]
    audio = [m for m in seen if isinstance(m, bytes)]
    kinds = [e["type"] for e in events]
    assert kinds.count("transcript") == 4  # partial+final for the 400 ms turn and for the 100 ms tail
    finals = [e["text"] for e in events if e["type"] == "transcript" and e["final"]]
    assert finals == ["turn 1: heard 0.40 s", "turn 2: heard 0.50 s"]
    fmt = next(e for e in events if e["type"] == "audio_format")
    assert fmt["sample_rate"] == 24000 and kinds.index("audio_format") < len(kinds)
    assert sum(len(a) for a in audio) == 2 * (24000 * 100 // 1000 * 2)
    latency = [e["turn"] for e in events if e["type"] == "latency"]
    assert latency[0]["turn"] == 1 and latency[0]["transcript_final"] >= latency[0]["speech_end"]
    record = loop.sessions[0]
    assert record.bytes_in == 25 * len(FRAME) and record.frames_in == 25
    assert record.ended and not record.cancelled
    assert record.played_ms == [80.0]
    assert endpoint.registry.live == set()


async def test_ping_is_answered_with_pong() -> None:
    async with voice_server(ScriptedVoiceLoop()) as (url, _), connect(url) as ws:
        await ws.send(START)
        await ws.recv()
        await ws.send(json.dumps({"type": "ping", "t": 12.5}))
        assert json.loads(await ws.recv()) == {"type": "pong", "t": 12.5}


async def test_sessions_beyond_the_limit_are_refused_with_busy() -> None:
    loop = ScriptedVoiceLoop()
    async with voice_server(loop, max_sessions=2) as (url, endpoint):
        async with connect(url) as a, connect(url) as b:
            for ws in (a, b):
                await ws.send(START)
                assert json.loads(await ws.recv())["type"] == "ready"
            async with connect(url) as c:
                code, reason, _ = await closed_with(c)
            assert code == CloseCode.BUSY == 1013
            assert "busy" in reason and "2 sessions" in reason
            assert endpoint.registry.refused == 1
        # Once the others leave, a new session is accepted again.
        await asyncio.sleep(0.05)
        async with connect(url) as d:
            await d.send(START)
            assert json.loads(await d.recv())["type"] == "ready"


async def test_oversized_frame_closes_with_1009() -> None:
    async with voice_server(ScriptedVoiceLoop(), max_frame_bytes=4096) as (url, _), connect(url) as ws:
        await ws.send(START)
        await ws.recv()
        await ws.send(b"\x00\x00" * 2049)  # 4098 bytes
        code, reason, _ = await closed_with(ws)
    assert code == CloseCode.FRAME_TOO_BIG == 1009
    assert "4098" in reason and "4096" in reason


async def test_oversized_text_frame_closes_with_1009() -> None:
    async with voice_server(ScriptedVoiceLoop(), max_frame_bytes=1024) as (url, _), connect(url) as ws:
        await ws.send(json.dumps({"type": "start", "pad": "x" * 2000}))
        code, _, _ = await closed_with(ws)
    assert code == 1009


async def test_idle_session_times_out() -> None:
    loop = ScriptedVoiceLoop()
    async with voice_server(loop, idle_timeout=0.3) as (url, endpoint), connect(url) as ws:
        await ws.send(START)
        await ws.recv()
        await ws.send(FRAME)
        started = time.monotonic()
        code, reason, _ = await closed_with(ws)
        waited = time.monotonic() - started
    assert code == CloseCode.IDLE_TIMEOUT
    assert "idle" in reason
    assert 0.25 <= waited < 2.0
    assert loop.sessions[0].frames_in == 1
    assert endpoint.registry.live == set()


async def test_silent_client_that_never_starts_times_out() -> None:
    async with voice_server(ScriptedVoiceLoop(), idle_timeout=0.2) as (url, _), connect(url) as ws:
        code, _, _ = await closed_with(ws)
    assert code == CloseCode.IDLE_TIMEOUT


async def test_odd_byte_count_closes_as_invalid_audio() -> None:
    loop = ScriptedVoiceLoop()
    async with voice_server(loop) as (url, _), connect(url) as ws:
        await ws.send(START)
        await ws.recv()
        await ws.send(FRAME)
        await ws.send(b"\x01\x02\x03")
        code, reason, _ = await closed_with(ws)
    assert code == CloseCode.INVALID_AUDIO == 1007
    assert "3 bytes" in reason
    assert loop.sessions[0].frames_in == 1
    assert loop.sessions[0].cancelled


@pytest.mark.parametrize(
    ("start", "needle"),
    [
        ({"type": "start", "format": "pcm_s16le", "sample_rate": 44100, "channels": 1}, "44100"),
        ({"type": "start", "format": "pcm_s16le", "sample_rate": "16k", "channels": 1}, "16k"),
        ({"type": "start", "format": "opus", "sample_rate": 16000, "channels": 1}, "opus"),
        ({"type": "start", "format": "pcm_s16le", "sample_rate": 16000, "channels": 2}, "mono"),
    ],
)
async def test_unsupported_audio_header_is_refused(start: dict[str, Any], needle: str) -> None:
    loop = ScriptedVoiceLoop()
    async with voice_server(loop) as (url, _), connect(url) as ws:
        await ws.send(json.dumps(start))
        code, reason, seen = await closed_with(ws)
    assert code == CloseCode.UNSUPPORTED_AUDIO == 1003
    assert needle in reason
    assert seen == [] and loop.sessions == []


@pytest.mark.parametrize(
    ("first", "needle"),
    [(FRAME, "first frame"), ("not json", "JSON"), (json.dumps({"type": "hello"}), "start")],
)
async def test_protocol_violations_close_with_policy(first: bytes | str, needle: str) -> None:
    async with voice_server(ScriptedVoiceLoop()) as (url, _), connect(url) as ws:
        await ws.send(first)
        code, reason, _ = await closed_with(ws)
    assert code == CloseCode.POLICY == 1008
    assert needle in reason


async def test_unknown_control_message_mid_session_closes_with_policy() -> None:
    async with voice_server(ScriptedVoiceLoop()) as (url, _), connect(url) as ws:
        await ws.send(START)
        await ws.recv()
        await ws.send(json.dumps({"type": "dance"}))
        code, reason, _ = await closed_with(ws)
    assert code == 1008 and "dance" in reason


async def test_loop_failure_reports_error_and_closes_1011() -> None:
    loop = ScriptedVoiceLoop(turn_ms=100, fail_on_turn=1)
    async with voice_server(loop) as (url, endpoint), connect(url) as ws:
        await ws.send(START)
        await ws.recv()
        for _ in range(10):
            await ws.send(FRAME)
        code, _, seen = await closed_with(ws)
    assert code == CloseCode.INTERNAL == 1011
    errors = [m for m in seen if isinstance(m, dict) and m["type"] == "error"]
    assert errors and "scripted failure" in errors[0]["message"]
    assert endpoint.registry.live == set()


async def test_client_disconnect_cancels_the_loop_and_frees_the_slot() -> None:
    loop = ScriptedVoiceLoop(turn_ms=10_000)
    async with voice_server(loop, max_sessions=1) as (url, endpoint):
        ws = await connect(url)
        await ws.send(START)
        await ws.recv()
        await ws.send(FRAME)
        await ws.close()
        for _ in range(100):
            if not endpoint.registry.live:
                break
            await asyncio.sleep(0.01)
        assert endpoint.registry.live == set()
        assert loop.sessions[0].frames_in == 1
        async with connect(url) as again:
            await again.send(START)
            assert json.loads(await again.recv())["type"] == "ready"


def _task_count() -> int:
    return len(asyncio.all_tasks())


async def _one_session(url: str) -> None:
    async with connect(url) as ws:
        await ws.send(START)
        await ws.recv()
        for _ in range(3):
            await ws.send(FRAME)
        await ws.send(json.dumps({"type": "stop"}))
        code, _, _ = await closed_with(ws)
        assert code == 1000


async def test_soak_many_sessions_leave_no_tasks_or_memory_behind() -> None:
    """72 sessions (in waves of 6 concurrent) on loopback: memory and task count return to baseline."""
    loop = ScriptedVoiceLoop(turn_ms=40, reply_ms=20)
    async with voice_server(loop, max_sessions=6) as (url, endpoint):
        for _ in range(3):  # warm up imports, caches and uvicorn's pools
            await asyncio.gather(*(_one_session(url) for _ in range(6)))
        await asyncio.sleep(0.05)
        loop.sessions.clear()
        gc.collect()
        tasks_before = _task_count()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        started = time.monotonic()
        for _ in range(12):
            await asyncio.gather(*(_one_session(url) for _ in range(6)))
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.05)
        loop.sessions.clear()
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        tasks_after = _task_count()
        diffs = after.compare_to(before, "filename")
        growth = sum(stat.size_diff for stat in diffs)
        ours = sum(stat.size_diff for stat in diffs if "polymodal" in stat.traceback[0].filename)
        assert endpoint.registry.live == set()
        assert endpoint.registry.total == 90 and endpoint.registry.refused == 0
    assert tasks_after <= tasks_before, (tasks_before, tasks_after)
    print(f"soak: 72 sessions in {elapsed:.2f} s, traced growth {growth} B (polymodal code: {ours} B)")
    # Our own code must hold nothing per session; the whole stack (uvicorn, websockets, asyncio) stays small.
    assert ours < 2048, f"polymodal code kept {ours} bytes over 72 sessions"
    assert growth < 256 * 1024, f"memory grew by {growth} bytes over 72 sessions"
    assert elapsed < 60  # a hang guard, not a benchmark


async def test_slow_loop_gets_backpressure_not_lost_frames() -> None:
    received: list[int] = []

    async def slow(channel: Any) -> None:
        async for chunk in channel.audio():
            received.append(len(chunk))
            await asyncio.sleep(0.005)

    async with voice_server(slow, inbound_queue_frames=2) as (url, _), connect(url) as ws:
        await ws.send(START)
        await ws.recv()
        for _ in range(30):
            await ws.send(FRAME)
        await ws.send(json.dumps({"type": "stop"}))
        code, _, _ = await closed_with(ws)
    assert code == 1000
    assert received == [len(FRAME)] * 30


async def test_a_loop_that_dies_without_reading_does_not_wedge_the_session() -> None:
    async def stuck(channel: Any) -> None:
        await asyncio.sleep(0.3)
        raise RuntimeError("gave up without reading")

    async with voice_server(stuck, inbound_queue_frames=2) as (url, endpoint), connect(url) as ws:
        await ws.send(START)
        await ws.recv()
        started = time.monotonic()
        with contextlib.suppress(ConnectionClosed):
            for _ in range(200):
                await ws.send(FRAME)
        code, _, seen = await closed_with(ws)
        assert time.monotonic() - started < 3
    assert code == CloseCode.INTERNAL
    assert any(isinstance(m, dict) and "gave up" in m.get("message", "") for m in seen)
    assert endpoint.registry.live == set()
