"""Transport overhead of the voice WebSocket endpoint, side by side with a bare ``websockets`` echo server.

Both servers run on loopback in this process; the same client sends 20 ms PCM16 frames at real-time pace and
each server's loop answers every frame with a frame of the same size. Measured per run:

* ``connect_ms``: open the socket and get the first answer (``ready`` for the voice endpoint);
* ``frame_rtt_ms``: client send of an audio frame -> the loop's echo of it back at the client (p50/p95);
* ``sessions_per_s``: short sessions (connect, 5 frames, stop) opened and closed back to back.

Usage: ``python benchmarks/voice_server_bench.py [--frames 250] [--sessions 60] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes_ws.asgi import serve_asgi

from polymodal.server.voice_ws import VoiceChannel, VoiceServerLimits, create_voice_app

START = json.dumps({"type": "start", "format": "pcm_s16le", "sample_rate": 16000, "channels": 1})
FRAME_BYTES = 640


async def echo_loop(channel: VoiceChannel) -> None:
    async for chunk in channel.audio():
        await channel.send_audio(chunk, channel.sample_rate)


async def bare_echo(ws: ServerConnection) -> None:
    await ws.recv()  # start
    await ws.send('{"type":"ready"}')
    async for message in ws:
        if isinstance(message, bytes):
            await ws.send(message)
        elif json.loads(message).get("type") == "stop":
            return


def frame(seq: int) -> bytes:
    return struct.pack("<I", seq) + b"\x00" * (FRAME_BYTES - 4)


async def rtt_run(url: str, frames: int) -> dict[str, float]:
    sent: dict[int, float] = {}
    rtts: list[float] = []
    t0 = time.perf_counter()
    async with connect(url, compression=None) as ws:
        await ws.send(START)
        while True:  # the voice endpoint answers ready; skip any non-audio message
            if isinstance(await ws.recv(), str):
                break
        connect_ms = (time.perf_counter() - t0) * 1000

        async def reader() -> None:
            while len(rtts) < frames:
                message = await ws.recv()
                if isinstance(message, bytes):
                    (seq,) = struct.unpack_from("<I", message)
                    rtts.append((time.perf_counter() - sent[seq]) * 1000)

        task = asyncio.create_task(reader())
        start = time.perf_counter()
        for seq in range(frames):
            due = start + seq * 0.02
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            sent[seq] = time.perf_counter()
            await ws.send(frame(seq))
        await asyncio.wait_for(task, timeout=30)
        await ws.send('{"type":"stop"}')
    rtts.sort()
    return {
        "connect_ms": connect_ms,
        "frame_rtt_p50_ms": statistics.median(rtts),
        "frame_rtt_p95_ms": rtts[int(0.95 * (len(rtts) - 1))],
    }


async def churn(url: str, sessions: int) -> float:
    start = time.perf_counter()
    for _ in range(sessions):
        async with connect(url, compression=None) as ws:
            await ws.send(START)
            await ws.recv()
            for seq in range(5):
                await ws.send(frame(seq))
            await ws.send('{"type":"stop"}')
            try:
                while True:
                    await ws.recv()
            except Exception:
                pass
    return sessions / (time.perf_counter() - start)


async def main(frames: int, sessions: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    app = create_voice_app(None, echo_loop, VoiceServerLimits(max_sessions=64))
    async with serve_asgi(app) as host:
        url = f"ws://{host}/voice/ws"
        results["polymodal voice endpoint (FastAPI+uvicorn)"] = {
            **(await rtt_run(url, frames)),
            "sessions_per_s": await churn(url, sessions),
        }
    async with serve(bare_echo, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}"
        results["bare websockets echo"] = {
            **(await rtt_run(url, frames)),
            "sessions_per_s": await churn(url, sessions),
        }
    return results


def table(results: dict[str, Any]) -> str:
    cols = ["connect_ms", "frame_rtt_p50_ms", "frame_rtt_p95_ms", "sessions_per_s"]
    width = max(len(name) for name in results) + 2
    lines = ["server".ljust(width) + "".join(c.rjust(18) for c in cols)]
    for name, row in results.items():
        lines.append(name.ljust(width) + "".join(f"{row[c]:18.2f}" for c in cols))
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=250, help="20 ms frames per RTT run (250 = 5 s)")
    parser.add_argument("--sessions", type=int, default=60, help="short sessions for the churn rate")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    out = asyncio.run(main(args.frames, args.sessions))
    print(json.dumps(out, indent=2) if args.json else table(out))
