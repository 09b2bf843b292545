"""A fake ElevenLabs ``/v1/text-to-speech/{voice_id}/stream-input`` server (documented WebSocket protocol).

Client -> server: the first message ("BOS") is ``{"text": " ", "voice_settings": {...}, "generation_config":
{...}}`` (optionally ``xi_api_key``); then ``{"text": "...", "flush": true|false}`` chunks; ``{"text": ""}``
ends the input ("EOS"). Server -> client: ``{"audio": BASE64, "isFinal": null, "normalizedAlignment": {...},
"alignment": {"chars": [...], "charStartTimesMs": [...], "charDurationsMs": [...]}}`` per audio chunk and
``{"isFinal": true}`` after EOS, then a normal close. Errors are a JSON message
``{"message", "error", "code"}`` followed by a close with 1008; a bad ``xi-api-key`` header is refused at
the handshake with HTTP 401 and ``{"detail": {"status": "invalid_api_key", "message": ...}}``.

Audio is deterministic: ``ms_per_char`` of a tone per character, PCM16 at the rate in ``output_format``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import struct
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes_ws._server import FakeWsServer, Session, json_response, query_of

PATH = re.compile(r"^/v1/text-to-speech/(?P<voice>[\w-]+)/stream-input$")


class FakeElevenLabs(FakeWsServer):
    """Configurable fake; see the module docstring."""

    def __init__(
        self,
        *,
        api_key: str = "xi-test-key",
        ms_per_char: int = 20,
        first_audio_delay: float = 0.0,
        quota_chars: int | None = None,
        refuse_status: int | None = None,
        send_alignment: bool = True,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.ms_per_char = ms_per_char
        self.first_audio_delay = first_audio_delay
        self.quota_chars = quota_chars
        self.refuse_status = refuse_status
        self.send_alignment = send_alignment
        self.handshakes = 0
        self.generated_text: list[str] = []

    def check_handshake(self, request: Request) -> Response | None:
        self.handshakes += 1
        path = request.path.split("?", 1)[0]
        if not PATH.match(path):
            return json_response(404, {"detail": {"status": "not_found", "message": "Not Found"}})
        if self.refuse_status is not None:
            return json_response(self.refuse_status, {"detail": {"status": "busy", "message": "try later"}})
        key = request.headers.get("xi-api-key")
        if key is not None and key != self.api_key:
            return json_response(401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})
        fmt = query_of(request).get("output_format", "mp3_44100_128")
        if not fmt.startswith("pcm_"):
            return json_response(422, {"detail": {"status": "invalid_output_format", "message": fmt}})
        return None

    async def serve_session(self, ws: ServerConnection, session: Session) -> None:
        rate = int(session.query["output_format"].split("_")[1])
        timeout = float(session.query.get("inactivity_timeout", "20"))
        buffer = ""
        total = 0
        first = True
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=timeout)
            except TimeoutError:
                await self.fail(
                    ws,
                    f"Have not received a new text input within the timeout of {timeout} seconds. "
                    "Streaming input requires continuous text input, closing connection.",
                    "input_timeout_exceeded",
                )
                return
            except ConnectionClosed:
                return
            message = json.loads(raw)
            session.text.append(message)
            if first:
                first = False
                if message.get("text") != " ":
                    await self.fail(ws, "The first message must be a single space.", "invalid_request")
                    return
                if "xi-api-key" not in session.headers and message.get("xi_api_key") != self.api_key:
                    await self.fail(ws, "Invalid API key", "invalid_api_key")
                    return
                continue
            text = message.get("text", "")
            if text == "":
                if buffer.strip():
                    await self.speak(ws, buffer, rate)
                await ws.send(json.dumps({"isFinal": True}))
                await ws.close(1000)
                return
            buffer += text
            total += len(text)
            if self.quota_chars is not None and total > self.quota_chars:
                await self.fail(ws, "This request exceeds your quota of characters.", "quota_exceeded")
                return
            if message.get("flush") or message.get("try_trigger_generation"):
                await self.speak(ws, buffer, rate)
                buffer = ""

    async def speak(self, ws: ServerConnection, text: str, rate: int) -> None:
        """Two audio messages per flushed piece of text, each with its own alignment."""
        if self.first_audio_delay:
            await asyncio.sleep(self.first_audio_delay)
        self.generated_text.append(text)
        half = max(1, len(text) // 2)
        for part in (text[:half], text[half:]):
            if not part:
                continue
            samples = rate * self.ms_per_char * len(part) // 1000
            pcm = struct.pack(
                f"<{samples}h", *(int(9000 * math.sin(2 * math.pi * 300 * i / rate)) for i in range(samples))
            )
            alignment = {
                "chars": list(part),
                "charStartTimesMs": [k * self.ms_per_char for k in range(len(part))],
                "charDurationsMs": [self.ms_per_char] * len(part),
            }
            event: dict[str, Any] = {"audio": base64.b64encode(pcm).decode(), "isFinal": None}
            if self.send_alignment:
                event["alignment"] = alignment
                event["normalizedAlignment"] = alignment
            await ws.send(json.dumps(event))
            await asyncio.sleep(0)

    async def fail(self, ws: ServerConnection, message: str, error: str) -> None:
        await ws.send(json.dumps({"message": message, "error": error, "code": 1008}))
        await ws.close(1008, error)
