"""A fake OpenAI HTTP API for the audio endpoints (``/v1/audio/transcriptions``, ``/v1/audio/speech``).

Transcriptions accept the multipart upload (a WAV file plus ``model``/``language``/``stream``) and answer
``{"text": ...}`` or, with ``stream=true``, server-sent events ``transcript.text.delta`` ... then
``transcript.text.done``. Speech answers ``response_format=pcm`` with 24 kHz PCM16 in several body chunks
(``ms_per_char`` of tone per character). ``fail`` holds (status, code, headers) answers to give first, in
OpenAI's error body shape.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import struct
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class FakeOpenAIAudio:
    """State and behaviour of the fake; ``app`` is the ASGI app to serve."""

    api_key: str = "sk-test"
    transcript: str = "Turn the lights off please."
    ms_per_char: int = 10
    fail: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"]),
                Route("/v1/audio/speech", self.speech, methods=["POST"]),
            ]
        )

    def _refusal(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(401, "invalid_api_key", "Incorrect API key provided.", {})
        if self.fail:
            status, code, headers = self.fail.pop(0)
            return self._error(status, code, f"failure {status}", headers)
        return None

    @staticmethod
    def _error(status: int, code: str, message: str, headers: dict[str, str]) -> JSONResponse:
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(body, status_code=status, headers=headers)

    async def transcriptions(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        form = await request.form()
        upload = form["file"]
        data = await upload.read()  # type: ignore[union-attr]
        with wave.open(io.BytesIO(data)) as wav:
            info = {"rate": wav.getframerate(), "channels": wav.getnchannels(), "frames": wav.getnframes()}
        record = {"endpoint": "transcriptions", **{k: str(v) for k, v in form.items() if k != "file"}, **info}
        self.requests.append(record)
        if form.get("stream") == "true":
            return StreamingResponse(self._sse(), media_type="text/event-stream")
        return JSONResponse({"text": self.transcript, "usage": {"type": "duration", "seconds": 1}})

    async def _sse(self) -> AsyncIterator[bytes]:
        words = self.transcript.split(" ")
        for k, word in enumerate(words):
            delta = word if k == 0 else " " + word
            yield f"data: {json.dumps({'type': 'transcript.text.delta', 'delta': delta})}\n\n".encode()
            await asyncio.sleep(0)
        yield f"data: {json.dumps({'type': 'transcript.text.done', 'text': self.transcript})}\n\n".encode()

    async def speech(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        body = await request.json()
        self.requests.append({"endpoint": "speech", **body})
        if body.get("response_format") != "pcm":
            return self._error(400, "invalid_value", "this fake only speaks pcm", {})
        samples = 24_000 * self.ms_per_char * len(body["input"]) // 1000
        pcm = struct.pack(
            f"<{samples}h", *(int(7000 * math.sin(2 * math.pi * 250 * i / 24_000)) for i in range(samples))
        )

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(pcm), 999):  # odd-sized pieces: the client must re-align samples
                yield pcm[i : i + 999]
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="audio/pcm")
