"""A scripted local HTTP server that provider fakes build on.

Each fake speaks one provider's documented wire format. Tests queue what the next requests get (an answer,
an HTTP error, a hang, a malformed body) and then assert on :attr:`FakeProvider.requests`. When the queue is
empty the server repeats the ``default`` reply (set with :meth:`FakeProvider.always`), or answers 500 so a
missing script shows up as an error rather than a silent pass.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from polymodal.config import RetrySettings, Settings

TEST_KEY = "test-key"


# -- scripted replies --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A successful model answer; each fake renders it in its provider's format (streamed or not)."""

    text: str
    finish: str = "stop"  # "stop" or "length"
    input_tokens: int = 11
    output_tokens: int = 7
    data: Any = None  # the JSON value when the answer is structured (Anthropic renders it as a tool call)


@dataclass(frozen=True)
class Failure:
    """An HTTP error response; ``code`` is rendered as the provider's machine-readable error code."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # overrides the provider-shaped error body when given
    code: str | None = None
    message: str = "scripted failure"


@dataclass(frozen=True)
class Hang:
    """Wait ``seconds`` before answering (with ``then``), to trigger client timeouts."""

    seconds: float
    then: Answer | Failure | None = None


@dataclass(frozen=True)
class Malformed:
    """A 200 response whose body is not valid JSON (or, streamed, an event that is not)."""


Scripted = Answer | Failure | Hang | Malformed


def json_reply(obj: Any, *, finish: str = "stop") -> Answer:
    """An answer carrying ``obj`` as JSON."""
    return Answer(json.dumps(obj), finish=finish, data=obj)


def text_reply(text: str, *, finish: str = "stop") -> Answer:
    """A plain-text answer."""
    return Answer(text, finish=finish)


def status(
    code: int, *, headers: dict[str, str] | None = None, body: Any = None, error_code: str | None = None
) -> Failure:
    """An HTTP error reply."""
    return Failure(code, headers=dict(headers or {}), body=body, code=error_code)


def delay(seconds: float) -> Hang:
    """A reply that hangs for ``seconds`` first."""
    return Hang(seconds)


def malformed() -> Malformed:
    """A reply with an invalid JSON body."""
    return Malformed()


# -- recorded requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text when it was not JSON

    @property
    def json(self) -> dict[str, Any]:
        """The body as a JSON object (fails loudly when it was not one)."""
        assert isinstance(self.body, dict), f"request body is not a JSON object: {self.body!r}"
        return self.body


@dataclass
class Rendered:
    """What the handler writes back: a whole body, or a list of chunks streamed with ``Connection: close``."""

    status: int
    body: bytes = b""
    chunks: list[bytes] | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


# -- the server --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        split = urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=split.path,
            query={k: v[-1] for k, v in parse_qs(split.query).items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        fake._record(request)
        try:
            if fake.latency_s:
                time.sleep(fake.latency_s)
            rendered = fake._respond(request)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                self._write(rendered)
        finally:
            fake._done()

    def _write(self, rendered: Rendered) -> None:
        self.send_response(rendered.status)
        self.send_header("Content-Type", rendered.content_type)
        for name, value in rendered.headers.items():
            self.send_header(name, value)
        if rendered.chunks is None:
            self.send_header("Content-Length", str(len(rendered.body)))
            self.end_headers()
            self.wfile.write(rendered.body)
            return
        self.send_header("Connection", "close")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for chunk in rendered.chunks:
            self.wfile.write(chunk)
            self.wfile.flush()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, fake: FakeProvider) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class FakeProvider:
    """Base of the provider fakes: a scripted server on 127.0.0.1 with a uniform test interface.

    Subclasses implement the wire format: :meth:`render_answer`, :meth:`render_failure`,
    :meth:`is_stream`, :meth:`render_malformed`, plus :attr:`model_id` and the settings they need.
    """

    #: The provider name used in model ids.
    provider = ""
    #: The model name the fake's id asks for.
    model = "test-model"

    def __init__(self, *, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self._script: deque[Scripted] = deque()
        self._default: Scripted | None = None
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        #: The most requests that were being handled at the same time (for concurrency tests).
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name=f"fake-{self.provider}", daemon=True
        )

    # -- lifecycle --

    def start(self) -> Self:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release hanging handlers."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of this server."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- scripting (uniform across providers) --

    def queue(self, *items: Scripted) -> Self:
        """Append scripted replies, consumed one per request in order."""
        with self._lock:
            self._script.extend(items)
        return self

    def always(self, item: Scripted) -> Self:
        """The reply used whenever the queue is empty (e.g. for load tests)."""
        self._default = item
        return self

    def reply_json(self, obj: Any, *, finish: str = "stop") -> Self:
        """Next request gets ``obj`` as the model's JSON answer."""
        return self.queue(json_reply(obj, finish=finish))

    def reply_text(self, text: str, *, finish: str = "stop") -> Self:
        """Next request gets ``text`` as the model's answer."""
        return self.queue(text_reply(text, finish=finish))

    def truncated(self, text: str) -> Self:
        """Next request gets ``text`` cut off by the output-token limit (finish reason "length")."""
        return self.queue(text_reply(text, finish="length"))

    def fail(
        self,
        status_code: int,
        headers: dict[str, str] | None = None,
        body: Any = None,
        *,
        code: str | None = None,
        message: str = "scripted failure",
    ) -> Self:
        """Next request gets an HTTP error (``code``: the provider's error code, e.g. insufficient_quota)."""
        return self.queue(Failure(status_code, dict(headers or {}), body, code, message))

    def spend_limit(self) -> Self:
        """Next request gets this provider's "spend limit reached" 429 (a permanent QUOTA error)."""
        return self.fail(429, code=self.spend_limit_code)

    def hang(self, seconds: float) -> Self:
        """Next request waits ``seconds`` before a 504 (long enough for the client to time out)."""
        return self.queue(Hang(seconds))

    def malformed(self) -> Self:
        """Next request gets a 200 whose body (or stream event) is not valid JSON."""
        return self.queue(Malformed())

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def settings(self) -> Settings:
        """Settings with dummy keys and this server's endpoints, fast retries and a 5 s request timeout."""
        return self.make_settings()

    def make_settings(self, **overrides: Any) -> Settings:
        """Like :attr:`settings` with fields replaced (e.g. ``request_timeout=0.3``)."""
        values: dict[str, Any] = {
            "openai_api_key": TEST_KEY,
            "anthropic_api_key": TEST_KEY,
            "gemini_api_key": TEST_KEY,
            "mistral_api_key": TEST_KEY,
            "openrouter_api_key": TEST_KEY,
            "together_api_key": TEST_KEY,
            "openai_compat_api_key": TEST_KEY,
            "request_timeout": 5.0,
            "retry": RetrySettings(max_attempts=3, base_delay=0.01, max_delay=2.0, total_timeout=30.0),
            **self.endpoint_settings(),
        }
        values.update(overrides)
        return Settings(**values)

    # -- to implement per provider --

    #: The error code this provider uses for a spend-limit 429.
    spend_limit_code = "insufficient_quota"

    @property
    def model_id(self) -> str:
        """The polymodal model id that points at this fake."""
        raise NotImplementedError

    def endpoint_settings(self) -> dict[str, Any]:
        """Settings fields that point the provider at this server."""
        raise NotImplementedError

    def is_stream(self, request: RecordedRequest) -> bool:
        """Whether the request asked for a streamed answer."""
        raise NotImplementedError

    def render_answer(self, answer: Answer, request: RecordedRequest, stream: bool) -> Rendered:
        """The provider's success response for ``answer``."""
        raise NotImplementedError

    def error_body(self, failure: Failure) -> Any:
        """The provider's error body for ``failure``."""
        raise NotImplementedError

    def render_malformed(self, stream: bool) -> Rendered:
        """A 200 response that is not valid for the provider (invalid JSON)."""
        if stream:
            return Rendered(
                200, chunks=[b'data: {"choices": [{"delta": \n\n'], content_type="text/event-stream"
            )
        return Rendered(200, body=b'{"id": "x", "choices": [')

    # -- internals --

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _next(self) -> Scripted | None:
        with self._lock:
            return self._script.popleft() if self._script else self._default

    def _respond(self, request: RecordedRequest) -> Rendered:
        item = self._next()
        stream = self.is_stream(request)
        if isinstance(item, Hang):
            self._stopping.wait(item.seconds)
            item = item.then or Failure(504, message="scripted hang ended")
        if item is None:
            return self._render_failure(
                Failure(500, message="fake server: nothing scripted for this request")
            )
        if isinstance(item, Malformed):
            return self.render_malformed(stream)
        if isinstance(item, Failure):
            return self._render_failure(item)
        return self.render_answer(item, request, stream)

    def _render_failure(self, failure: Failure) -> Rendered:
        body = failure.body if failure.body is not None else self.error_body(failure)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return Rendered(failure.status, body=raw, headers=dict(failure.headers))


def sse(events: list[Any], *, named: bool = False, done: bool = False) -> list[bytes]:
    """Encode JSON events as server-sent events (``event:`` lines from each event's ``type`` when named)."""
    out: list[bytes] = []
    for event in events:
        head = f"event: {event['type']}\n" if named else ""
        out.append(f"{head}data: {json.dumps(event)}\n\n".encode())
    if done:
        out.append(b"data: [DONE]\n\n")
    return out


def pieces(text: str, size: int = 4) -> list[str]:
    """``text`` cut into streaming pieces of ``size`` characters."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
