"""A fake Deepgram ``/v1/listen`` live-streaming server speaking the documented wire protocol.

It 'recognises' speech by energy: each run of non-silent audio is one utterance whose text is taken, in order,
from ``utterances``. While speech goes on it sends interim ``Results`` (``is_final: false``) with a growing
prefix of the words; after ``endpointing`` ms of silence it sends the final result (``is_final`` and
``speech_final`` true). ``Finalize`` flushes with ``from_finalize: true``; ``CloseStream`` flushes, sends
``Metadata`` and closes with 1000. Failures follow Deepgram's documentation: a refused handshake is an HTTP
status with a JSON body (``err_code``/``err_msg``), undecodable audio closes with 1008 ``DATA-0000``, and no
audio or ``KeepAlive`` within the timeout closes with 1011 ``NET-0001``.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes_ws._server import FakeWsServer, Session, json_response, query_of

SPEECH_RMS = 0.02


class FakeDeepgram(FakeWsServer):
    """Configurable fake; see the module docstring."""

    def __init__(
        self,
        utterances: list[str] | None = None,
        *,
        api_key: str = "dg-test-key",
        idle_timeout: float = 10.0,
        refuse_status: int | None = None,
        retry_after: str | None = None,
        undecodable_after_bytes: int | None = None,
        refuse_times: int = 1_000_000,
    ) -> None:
        super().__init__()
        self.utterances = list(utterances or [])
        self.api_key = api_key
        self.idle_timeout = idle_timeout
        self.refuse_status = refuse_status
        self.refuse_times = refuse_times
        self.retry_after = retry_after
        self.undecodable_after_bytes = undecodable_after_bytes
        self.handshakes = 0
        self.keepalives = 0

    def check_handshake(self, request: Request) -> Response | None:
        self.handshakes += 1
        if self.refuse_status is not None and self.handshakes <= self.refuse_times:
            headers = {"dg-error": "refused by test"}
            if self.retry_after is not None:
                headers["Retry-After"] = self.retry_after
            return json_response(
                self.refuse_status,
                {"err_code": "TEST", "err_msg": f"refused with {self.refuse_status}", "request_id": "req-x"},
                headers,
            )
        auth = request.headers.get("Authorization", "")
        if auth != f"Token {self.api_key}":
            return json_response(
                401, {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.", "request_id": "req-401"}
            )
        query = query_of(request)
        if query.get("encoding") != "linear16" or not query.get("sample_rate", "").isdigit():
            return json_response(400, {"err_code": "Bad Request", "err_msg": "encoding/sample_rate required"})
        return None

    async def serve_session(self, ws: ServerConnection, session: Session) -> None:
        state = _Recognizer(self, ws, session)
        await state.run()


class _Recognizer:
    def __init__(self, fake: FakeDeepgram, ws: ServerConnection, session: Session) -> None:
        self.fake = fake
        self.ws = ws
        self.session = session
        self.rate = int(session.query["sample_rate"])
        self.interim = session.query.get("interim_results", "false") == "true"
        self.endpointing = int(session.query.get("endpointing", "10")) / 1000
        self.request_id = str(uuid.uuid4())
        self.samples = 0  # audio received so far, in samples
        self.carry = b""
        self.bytes = 0
        self.speech_start: float | None = None
        self.last_speech = 0.0
        self.interims_sent = 0

    @property
    def now(self) -> float:
        return self.samples / self.rate

    async def run(self) -> None:
        while True:
            try:
                message = await asyncio.wait_for(self.ws.recv(), timeout=self.fake.idle_timeout)
            except TimeoutError:
                await self.ws.close(1011, "NET-0001")
                return
            except ConnectionClosed:
                return
            if isinstance(message, bytes):
                self.session.binary.append(message)
                if not await self.audio(message):
                    return
                continue
            event = json.loads(message)
            self.session.text.append(event)
            kind = event.get("type")
            if kind == "KeepAlive":
                self.fake.keepalives += 1
            elif kind == "Finalize":
                await self.flush(from_finalize=True)
            elif kind == "CloseStream":
                await self.flush(from_finalize=False)
                await self.send(
                    {
                        "type": "Metadata",
                        "transaction_key": "deprecated",
                        "request_id": self.request_id,
                        "sha256": "0" * 64,
                        "created": "2026-12-03T00:00:00.000Z",
                        "duration": round(self.now, 3),
                        "channels": 1,
                    }
                )
                await self.ws.close(1000)
                return

    async def audio(self, data: bytes) -> bool:
        self.bytes += len(data)
        limit = self.fake.undecodable_after_bytes
        if limit is not None and self.bytes > limit:
            await self.ws.close(1008, "DATA-0000")
            return False
        data = self.carry + data
        usable = len(data) - len(data) % 2
        self.carry = data[usable:]
        pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768
        frame = self.rate // 100  # 10 ms analysis frames
        for i in range(0, len(pcm), frame):
            chunk = pcm[i : i + frame]
            self.samples += len(chunk)
            loud = float(np.sqrt(np.mean(chunk**2))) > SPEECH_RMS if len(chunk) else False
            if loud:
                if self.speech_start is None:
                    self.speech_start = self.now - len(chunk) / self.rate
                    self.interims_sent = 0
                    await self.send(
                        {"type": "SpeechStarted", "channel": [0, 1], "timestamp": self.speech_start}
                    )
                self.last_speech = self.now
                if self.interim and self.now - self.speech_start >= 0.1 * (self.interims_sent + 1):
                    self.interims_sent += 1
                    await self.result(is_final=False)
            elif self.speech_start is not None and self.now - self.last_speech >= self.endpointing:
                await self.result(is_final=True, speech_final=True)
                self.speech_start = None
        return True

    def words(self, fraction: float) -> list[str]:
        text = self.fake.utterances[0] if self.fake.utterances else ""
        words = text.split()
        return words[: max(1, math.ceil(len(words) * min(1.0, fraction)))] if words else []

    async def result(
        self, *, is_final: bool, speech_final: bool = False, from_finalize: bool = False
    ) -> None:
        assert self.speech_start is not None
        start = self.speech_start
        duration = max(self.last_speech - start, 0.0)
        spoken = self.last_speech - start
        words = self.words(1.0 if is_final else spoken / max(spoken + 0.3, 1e-6))
        if is_final and self.fake.utterances:
            self.fake.utterances.pop(0)
        step = duration / max(len(words), 1)
        await self.send(
            {
                "type": "Results",
                "channel_index": [0, 1],
                "duration": round(duration, 3),
                "start": round(start, 3),
                "is_final": is_final,
                "speech_final": speech_final,
                "from_finalize": from_finalize,
                "channel": {
                    "alternatives": [
                        {
                            "transcript": " ".join(words),
                            "confidence": 0.98,
                            "words": [
                                {
                                    "word": w.lower().strip(".,!?"),
                                    "punctuated_word": w,
                                    "start": round(start + k * step, 3),
                                    "end": round(start + (k + 1) * step, 3),
                                    "confidence": 0.98,
                                }
                                for k, w in enumerate(words)
                            ],
                        }
                    ]
                },
                "metadata": {
                    "request_id": self.request_id,
                    "model_info": {"name": "fake", "version": "1", "arch": "x"},
                    "model_uuid": "00000000",
                },
            }
        )

    async def flush(self, *, from_finalize: bool) -> None:
        if self.speech_start is not None:
            await self.result(is_final=True, from_finalize=from_finalize)
            self.speech_start = None
        elif from_finalize:
            await self.send(
                {
                    "type": "Results",
                    "channel_index": [0, 1],
                    "duration": 0.0,
                    "start": round(self.now, 3),
                    "is_final": True,
                    "speech_final": False,
                    "from_finalize": True,
                    "channel": {"alternatives": [{"transcript": "", "confidence": 0.0, "words": []}]},
                    "metadata": {"request_id": self.request_id},
                }
            )

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))
