"""The /v1/embeddings client against a local server speaking OpenAI's documented wire format."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from polymodal.backends._retry import RetryPolicy
from polymodal.backends.embedding import DenseEmbedder
from polymodal.backends.openai_embeddings import OpenAIEmbeddings, create_embedder
from polymodal.backends.registry import parse_model_id
from polymodal.config import Settings
from polymodal.errors import BackendError, ConfigError, ErrorCategory
from polymodal.media.image import Image

DIM = 8


def vector_for(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [b - 128.0 for b in digest[:DIM]]  # deliberately not normalised: the client normalises


class EmbeddingServer:
    """Answers POST /v1/embeddings; a script of (status, body, headers) overrides the next answers."""

    def __init__(self) -> None:
        self.script: deque[tuple[int, Any, dict[str, str]]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, payload, headers = (
                    server.script.popleft() if server.script else (200, server.answer(body), {})
                )
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("input")
        if inputs is None:  # multimodal form: one image in "messages"
            inputs = [body["messages"][0]["content"][0]["image_url"]["url"][:200]]
        data = [{"object": "embedding", "index": i, "embedding": vector_for(t)} for i, t in enumerate(inputs)]
        data.reverse()  # servers may answer out of order; "index" says where each row belongs
        return {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }


@pytest.fixture
def server() -> Iterator[EmbeddingServer]:
    fake = EmbeddingServer()
    yield fake
    fake.httpd.shutdown()


def _client(server: EmbeddingServer, **kw: Any) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        "bge-m3",
        base_url=server.url,
        api_key="sk-test",
        retry=RetryPolicy(max_attempts=3, base_delay=0.01),
        **kw,
    )


def test_texts_are_batched_ordered_and_normalised(server: EmbeddingServer) -> None:
    client = _client(server, batch_size=2)
    texts = ["a cat", "ein Hund", "猫", "x", "y"]
    rows = client.embed_texts(texts)
    assert isinstance(client, DenseEmbedder)  # (on Python 3.11 isinstance reads .dim: known by now, no probe)
    assert rows.shape == (5, DIM) and rows.dtype == np.float32
    expected = np.asarray([vector_for(t) for t in texts], dtype=np.float32)
    np.testing.assert_allclose(rows, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)
    assert [r["input"] for r in server.requests] == [["a cat", "ein Hund"], ["猫", "x"], ["y"]]
    assert all(r["model"] == "bge-m3" and r["encoding_format"] == "float" for r in server.requests)
    assert server.headers[0]["authorization"] == "Bearer sk-test"
    assert client.dim == DIM and client.id == "openai-embeddings:bge-m3"


def test_dimension_probe_and_dimensions_parameter(server: EmbeddingServer) -> None:
    assert _client(server).dim == DIM
    assert server.requests[-1]["input"] == ["dimension probe"]
    shortened = _client(server, dimensions=DIM)
    shortened.embed_texts(["q"])
    assert server.requests[-1]["dimensions"] == DIM and shortened.id.endswith("#8")


async def test_async_api_and_sync_wrapper_inside_a_loop(server: EmbeddingServer) -> None:
    client = _client(server)
    rows = await client.aembed_texts(["a", "b"])
    assert rows.shape == (2, DIM)
    assert client.embed_texts(["a"]).shape == (1, DIM)  # the sync form works inside a running loop too
    await client.aclose()


def test_transient_errors_are_retried_with_retry_after(server: EmbeddingServer) -> None:
    server.script.extend(
        [
            (429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"Retry-After": "0"}),
            (503, {"error": {"message": "busy"}}, {}),
        ]
    )
    rows = _client(server).embed_texts(["hello"])
    assert rows.shape == (1, DIM) and len(server.requests) == 3


@pytest.mark.parametrize(
    ("status", "body", "category"),
    [
        (401, {"error": {"message": "bad key", "type": "invalid_request_error"}}, ErrorCategory.AUTH),
        (
            400,
            {"error": {"message": "input too long", "type": "invalid_request_error"}},
            ErrorCategory.INVALID_REQUEST,
        ),
        (404, {"error": {"message": "no such model"}}, ErrorCategory.NOT_FOUND),
    ],
)
def test_permanent_errors_are_translated_not_retried(
    server: EmbeddingServer, status: int, body: dict[str, Any], category: ErrorCategory
) -> None:
    server.script.append((status, body, {}))
    with pytest.raises(BackendError) as info:
        _client(server).embed_texts(["hello"])
    assert info.value.category == category and info.value.status == status
    assert len(server.requests) == 1


def test_malformed_answers_are_typed_errors(server: EmbeddingServer) -> None:
    server.script.extend([(200, {"object": "list", "data": [], "model": "m"}, {})] * 3)
    with pytest.raises(BackendError) as info:
        _client(server).embed_texts(["a"])
    assert info.value.category == ErrorCategory.MALFORMED_RESPONSE and "got 0" in str(info.value)
    server.script.extend([(200, b"{not json", {})] * 3)
    with pytest.raises(BackendError) as info:
        _client(server).embed_texts(["a"])
    assert info.value.category == ErrorCategory.MALFORMED_RESPONSE


def test_connection_refused_is_a_connection_error() -> None:
    client = OpenAIEmbeddings("m", base_url="http://127.0.0.1:9/v1", retry=RetryPolicy(max_attempts=1))
    with pytest.raises(BackendError) as info:
        client.embed_texts(["a"])
    assert info.value.category == ErrorCategory.CONNECTION


def test_images_only_when_the_endpoint_embeds_them(server: EmbeddingServer) -> None:
    picture = Image.from_pil(PILImage.new("RGB", (40, 30), (200, 0, 0)))
    with pytest.raises(ConfigError, match="text only"):
        _client(server).embed_images([picture])
    rows = _client(server, images=True).embed_images([picture, picture])
    assert rows.shape == (2, DIM)
    part = server.requests[-1]["messages"][0]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_factory_reads_endpoint_and_keys() -> None:
    local = create_embedder(
        parse_model_id("openai-embeddings:bge-m3@http://127.0.0.1:8000/v1"), Settings(_env_file=None)
    )
    assert local.base_url == "http://127.0.0.1:8000/v1"
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        create_embedder(
            parse_model_id("openai-embeddings:text-embedding-3-small"),
            Settings(_env_file=None, openai_api_key=None),
        )
    remote = create_embedder(
        parse_model_id("openai-embeddings:text-embedding-3-small"),
        Settings(_env_file=None, openai_api_key="sk"),
    )
    assert remote.base_url == "https://api.openai.com/v1"
