"""A fake OpenAI Realtime server (``/v1/realtime``) speaking the documented event protocol.

Handshake: ``Authorization: Bearer KEY`` or HTTP 401 with OpenAI's error body. After connect it sends
``session.created``; ``session.update`` is answered with ``session.updated``. Audio arrives as
``input_audio_buffer.append`` (base64 PCM16 24 kHz); ``input_audio_buffer.commit`` with less than 100 ms
buffered is the documented ``input_audio_buffer_commit_empty`` error, otherwise
``input_audio_buffer.committed``, ``conversation.item.added`` and (when transcription is configured) the
scripted user transcript. ``response.create`` streams the scripted answer word by word
(``response.output_audio_transcript.delta`` + ``response.output_audio.delta``, or the beta names with
``legacy_names``), paced by ``delta_interval``, then ``response.done``. ``response.cancel`` stops it
(``response.done`` with status ``cancelled``), or is the ``response_cancel_not_active`` error when nothing
runs. ``conversation.item.truncate`` checks the item and that ``audio_end_ms`` does not exceed its audio, then
answers ``conversation.item.truncated``. With server VAD on, an energy detector emits
``input_audio_buffer.speech_started``/``speech_stopped`` and answers by itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes_ws._server import FakeWsServer, Session, json_response

RATE = 24_000


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@dataclass
class _Conversation:
    buffer: bytearray = field(default_factory=bytearray)
    items: dict[str, int] = field(default_factory=dict)  # assistant item id -> audio samples sent
    truncated: dict[str, int] = field(default_factory=dict)
    response: asyncio.Task[None] | None = None
    session: dict[str, Any] = field(default_factory=dict)
    speaking_since: int | None = None
    silent_samples: int = 0
    total_samples: int = 0


class FakeOpenAIRealtime(FakeWsServer):
    """Configurable fake; see the module docstring."""

    def __init__(
        self,
        *,
        api_key: str = "sk-test",
        user_text: str = "What is the weather like?",
        reply_text: str = "It is sunny and warm today.",
        ms_per_word: int = 100,
        delta_interval: float = 0.0,
        legacy_names: bool = False,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.user_text = user_text
        self.reply_text = reply_text
        self.ms_per_word = ms_per_word
        self.delta_interval = delta_interval
        self.legacy_names = legacy_names
        self.conversations: list[_Conversation] = []

    def check_handshake(self, request: Request) -> Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return json_response(
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                        "param": None,
                    }
                },
            )
        return None

    async def serve_session(self, ws: ServerConnection, session: Session) -> None:
        conv = _Conversation(
            session={
                "type": "realtime",
                "model": session.query.get("model"),
                "audio": {"input": {"turn_detection": {"type": "server_vad"}}},
            }
        )
        self.conversations.append(conv)
        await self.emit(ws, {"type": "session.created", "session": conv.session})
        try:
            async for raw in ws:
                event = json.loads(raw)
                session.text.append(event)
                await self.dispatch(ws, conv, event)
        except ConnectionClosed:
            pass
        finally:
            if conv.response is not None:
                conv.response.cancel()

    async def dispatch(self, ws: ServerConnection, conv: _Conversation, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "session.update":
            conv.session.update(event.get("session") or {})
            await self.emit(ws, {"type": "session.updated", "session": conv.session})
        elif kind == "input_audio_buffer.append":
            try:
                data = base64.b64decode(event["audio"], validate=True)
            except (binascii.Error, KeyError):
                await self.error(
                    ws, event, "invalid_request_error", "invalid_value", "audio is not valid base64"
                )
                return
            conv.buffer += data
            await self.server_vad(ws, conv, data)
        elif kind == "input_audio_buffer.commit":
            await self.commit(ws, conv, event)
        elif kind == "response.create":
            if conv.response is not None and not conv.response.done():
                await self.error(
                    ws,
                    event,
                    "invalid_request_error",
                    "conversation_already_has_active_response",
                    "Conversation already has an active response in progress.",
                )
                return
            conv.response = asyncio.create_task(self.respond(ws, conv))
        elif kind == "response.cancel":
            if conv.response is None or conv.response.done():
                await self.error(
                    ws,
                    event,
                    "invalid_request_error",
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found",
                )
                return
            conv.response.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conv.response
        elif kind == "conversation.item.truncate":
            await self.truncate(ws, conv, event)
        else:
            await self.error(ws, event, "invalid_request_error", "unknown_event", f"Invalid value: '{kind}'")

    def vad_on(self, conv: _Conversation) -> bool:
        detection = ((conv.session.get("audio") or {}).get("input") or {}).get("turn_detection")
        return bool(detection)

    async def server_vad(self, ws: ServerConnection, conv: _Conversation, data: bytes) -> None:
        if not self.vad_on(conv):
            return
        pcm = np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2").astype(np.float32) / 32768
        loud = len(pcm) > 0 and float(np.sqrt(np.mean(pcm**2))) > 0.02
        conv.total_samples += len(pcm)
        now_ms = conv.total_samples * 1000 // RATE
        if loud:
            conv.silent_samples = 0
            if conv.speaking_since is None:
                conv.speaking_since = now_ms
                await self.emit(
                    ws,
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": now_ms,
                        "item_id": _id("item"),
                    },
                )
        elif conv.speaking_since is not None:
            conv.silent_samples += len(pcm)
            if conv.silent_samples * 1000 // RATE >= 200:
                conv.speaking_since = None
                await self.emit(
                    ws,
                    {
                        "type": "input_audio_buffer.speech_stopped",
                        "audio_end_ms": now_ms,
                        "item_id": _id("item"),
                    },
                )
                await self.commit(ws, conv, {})
                if conv.response is None or conv.response.done():
                    conv.response = asyncio.create_task(self.respond(ws, conv))

    async def commit(self, ws: ServerConnection, conv: _Conversation, event: dict[str, Any]) -> None:
        if len(conv.buffer) < RATE * 2 // 10:
            ms = len(conv.buffer) * 1000 // (2 * RATE)
            await self.error(
                ws,
                event,
                "invalid_request_error",
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least 100ms "
                f"of audio, but buffer only has {ms:.2f}ms of audio.",
            )
            return
        conv.buffer.clear()
        item = _id("item")
        await self.emit(
            ws, {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None}
        )
        await self.emit(
            ws,
            {
                "type": "conversation.item.added",
                "item": {"id": item, "type": "message", "role": "user", "status": "completed"},
            },
        )
        if ((conv.session.get("audio") or {}).get("input") or {}).get("transcription"):
            await self.emit(
                ws,
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item,
                    "content_index": 0,
                    "transcript": self.user_text,
                },
            )

    async def respond(self, ws: ServerConnection, conv: _Conversation) -> None:
        response, item = _id("resp"), _id("item")
        audio_event = "response.audio.delta" if self.legacy_names else "response.output_audio.delta"
        text_event = (
            "response.audio_transcript.delta"
            if self.legacy_names
            else "response.output_audio_transcript.delta"
        )
        base = {"response_id": response, "item_id": item, "output_index": 0, "content_index": 0}
        await self.emit(
            ws, {"type": "response.created", "response": {"id": response, "status": "in_progress"}}
        )
        await self.emit(
            ws,
            {
                "type": "response.output_item.added",
                "response_id": response,
                "output_index": 0,
                "item": {"id": item, "type": "message", "role": "assistant", "status": "in_progress"},
            },
        )
        conv.items[item] = 0
        status = "completed"
        try:
            for k, word in enumerate(self.reply_text.split()):
                await self.emit(ws, {"type": text_event, **base, "delta": word if k == 0 else " " + word})
                samples = RATE * self.ms_per_word // 1000
                pcm = struct.pack(
                    f"<{samples}h",
                    *(int(8000 * math.sin(2 * math.pi * 200 * i / RATE)) for i in range(samples)),
                )
                await self.emit(ws, {"type": audio_event, **base, "delta": base64.b64encode(pcm).decode()})
                conv.items[item] += samples
                await asyncio.sleep(self.delta_interval)
        except asyncio.CancelledError:
            status = "cancelled"
        done = {
            "id": response,
            "status": status,
            "output": [{"id": item, "type": "message", "role": "assistant"}],
        }
        if status == "cancelled":
            done["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
        with contextlib.suppress(ConnectionClosed):
            await self.emit(ws, {"type": "response.done", "response": done})

    async def truncate(self, ws: ServerConnection, conv: _Conversation, event: dict[str, Any]) -> None:
        item = event.get("item_id")
        if item not in conv.items:
            await self.error(ws, event, "invalid_request_error", "item_not_found", f"Item {item} not found")
            return
        end_ms = int(event.get("audio_end_ms", -1))
        have_ms = conv.items[item] * 1000 // RATE
        if end_ms < 0 or end_ms > have_ms:
            await self.error(
                ws,
                event,
                "invalid_request_error",
                "invalid_value",
                f"audio_end_ms {end_ms} is out of range (audio is {have_ms} ms)",
            )
            return
        conv.truncated[item] = end_ms
        await self.emit(
            ws,
            {
                "type": "conversation.item.truncated",
                "item_id": item,
                "content_index": event.get("content_index", 0),
                "audio_end_ms": end_ms,
            },
        )

    async def error(
        self, ws: ServerConnection, event: dict[str, Any], kind: str, code: str, message: str
    ) -> None:
        await self.emit(
            ws,
            {
                "type": "error",
                "error": {
                    "type": kind,
                    "code": code,
                    "message": message,
                    "param": None,
                    "event_id": event.get("event_id"),
                },
            },
        )

    async def emit(self, ws: ServerConnection, event: dict[str, Any]) -> None:
        event.setdefault("event_id", _id("event"))
        await ws.send(json.dumps(event))
