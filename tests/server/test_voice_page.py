"""The voice page in headless Chromium with a fake microphone playing a WAV file, driven over CDP."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import shutil
import struct
import subprocess
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from polymodal.server.voice_ws import VoiceServerLimits, create_voice_app
from tests.fakes_ws.asgi import serve_asgi
from tests.fakes_ws.voice_loops import ScriptedVoiceLoop

CHROMIUM = os.environ.get("POLYMODAL_CHROMIUM", "/usr/bin/chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"headless Chromium not found at {CHROMIUM} (apt-get install chromium)",
    ),
]


def write_fake_microphone(path: Path, seconds: float = 2.0, rate: int = 16_000) -> None:
    """Speech-like bursts: 300 ms of a 220 Hz tone with harmonics, then 200 ms of silence, repeated."""
    samples = []
    for i in range(int(seconds * rate)):
        t = i / rate
        on = (t % 0.5) < 0.3
        value = 0.5 * math.sin(2 * math.pi * 220 * t) + 0.2 * math.sin(2 * math.pi * 660 * t) if on else 0.0
        samples.append(int(32767 * 0.8 * value))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(struct.pack(f"<{len(samples)}h", *samples))


class Cdp:
    """A minimal Chrome DevTools Protocol client over one page target."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")


@contextlib.asynccontextmanager
async def chromium_page(url: str, profile: Path, microphone: Path) -> AsyncIterator[Cdp]:
    """Start headless Chromium on ``url`` with a fake microphone; yield a CDP client on the page."""
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required",
        url,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with httpx.AsyncClient(trust_env=False) as http:
            for _ in range(100):
                targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
                pages = [
                    t for t in targets if t.get("type") == "page" and t.get("url", "").startswith(url[:20])
                ]
                if pages:
                    break
                await asyncio.sleep(0.05)
        async with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, proxy=None) as ws:
            yield Cdp(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_for(cdp: Cdp, expression: str, timeout: float = 20.0) -> Any:
    """Poll a page expression until it is truthy (errors while the page loads count as not yet)."""
    async with asyncio.timeout(timeout):
        while True:
            value = await cdp.evaluate(
                f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
            )
            if value:
                return value
            await asyncio.sleep(0.1)


async def test_page_streams_microphone_audio_and_shows_transcript_and_latency(tmp_path: Path) -> None:
    microphone = tmp_path / "mic.wav"
    write_fake_microphone(microphone)
    loop = ScriptedVoiceLoop(turn_ms=400, reply_ms=2000, interrupt_after=0.5)
    app = create_voice_app(None, loop, VoiceServerLimits(max_sessions=2))
    async with serve_asgi(app) as host:
        url = f"http://{host}/voice?autostart=1"
        async with chromium_page(url, tmp_path / "profile", microphone) as cdp:
            await wait_for(cdp, "window.voiceStats && window.voiceStats.transcripts.length >= 1")
            await wait_for(cdp, "window.voiceStats.latency !== null && window.voiceStats.audioChunks >= 1")
            await wait_for(cdp, "window.voiceStats.interrupts >= 1")
            await asyncio.sleep(0.2)  # let the page's "played" report reach the server
            stats = await cdp.evaluate("JSON.stringify(window.voiceStats)")
            shown = await cdp.evaluate("document.getElementById('transcript').textContent")
            latency_cell = await cdp.evaluate("document.getElementById('lat-transcript_final').textContent")
            await cdp.evaluate("document.getElementById('stop').click()")
            closed = await wait_for(cdp, "window.voiceStats.closeCode")

    page = json.loads(stats)
    assert page["framesSent"] >= 20  # >= 400 ms of 20 ms PCM16 frames left the page
    assert page["bytesSent"] == page["framesSent"] * 640
    assert page["transcripts"][0].startswith("turn 1: heard 0.40 s")
    assert page["replies"][0] == "Hello there."
    assert "You: turn 1" in shown and "Agent: Hello there." in shown
    assert latency_cell.isdigit()
    assert closed == 1000
    # Barge-in: the page stopped a 2 s reply about 0.5 s in and told the server how much it had played.
    assert 250 <= page["playedAtInterrupt"] <= 1500

    record = loop.sessions[0]
    assert record.frames_in >= 20 and record.bytes_in >= 20 * 640
    # The fake microphone's tone (peak ~0.56 of full scale) reached the server, not silence.
    assert record.peak > 8000
    assert page["playedAtInterrupt"] in record.played_ms
