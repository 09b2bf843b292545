"""Behaviour every remote chat adapter must show against its fake server.

Each provider's test module calls these with its own fake, so the same scenarios (retry on 429 honouring the
server's wait, no retry on auth or spend-limit errors, bounded timeouts, malformed bodies, truncation) are
checked the same way for every wire format.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image as PILImage
from pydantic import BaseModel

from polymodal.backends.base import BaseChatModel, GenerateOptions
from polymodal.backends.messages import ImagePart, Message
from polymodal.backends.registry import load_chat_model
from polymodal.config import RetrySettings
from polymodal.errors import BackendError, ErrorCategory
from polymodal.media.image import Image
from tests.fakes import FakeProvider


class Invoice(BaseModel):
    """An invoice."""

    number: str
    total: float
    currency: str | None = None


INVOICE = {"number": "A-17", "total": 12.5, "currency": "EUR"}


def red_image(width: int = 64, height: int = 48) -> Image:
    """A small solid image (its pixels are checked after the round trip)."""
    return Image.from_pil(PILImage.new("RGB", (width, height), (200, 10, 10)))


def decoded_size(b64: str) -> tuple[int, int]:
    """Pixel size of a base64-encoded image as a server would decode it."""
    with PILImage.open(io.BytesIO(base64.b64decode(b64))) as image:
        return image.size


def invoice_messages() -> list[Message]:
    """A system prompt plus a user turn with text and one labelled image."""
    return [
        Message.system("You extract invoices."),
        Message.user("Read this invoice.", ImagePart(red_image(), label="page 1")),
    ]


_OPEN_MODELS: list[BaseChatModel] = []


def model_for(fake: FakeProvider, **settings: Any) -> BaseChatModel:
    """The adapter the fake's model id resolves to, with optional settings overrides.

    Models are closed by the :func:`close_models` fixture in the test's own event loop (a connection pool
    left to the garbage collector would be closed later from another test's loop).
    """
    model = load_chat_model(fake.model_id, fake.make_settings(**settings))
    assert isinstance(model, BaseChatModel)
    _OPEN_MODELS.append(model)
    return model


@pytest.fixture(autouse=True)
async def close_models() -> AsyncIterator[None]:
    """Close every model :func:`model_for` made during the test."""
    yield
    while _OPEN_MODELS:
        await _OPEN_MODELS.pop().aclose()


async def assert_streams(fake: FakeProvider) -> None:
    """Deltas concatenate to the answer; the last delta carries finish reason and usage."""
    fake.reply_text("The total is 12.50 EUR.")
    deltas = [d async for d in model_for(fake).stream([Message.user("total?")])]
    assert len([d for d in deltas if d.text]) > 1, "expected several pieces"
    assert "".join(d.text for d in deltas) == "The total is 12.50 EUR."
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage is not None and deltas[-1].usage.output_tokens == 7
    assert len(fake.requests) == 1


async def assert_rate_limit_honoured(fake: FakeProvider, caplog: pytest.LogCaptureFixture) -> None:
    """A 429 with a wait is retried after that wait (not the tiny backoff of the fake settings)."""
    fake.fail(429, headers={"Retry-After": "1"}).reply_json(INVOICE)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="polymodal.retry"):
        completion = await model_for(fake).generate([Message.user("x")], Invoice)
    elapsed = time.monotonic() - started
    assert Invoice.model_validate_json(completion.text).total == 12.5
    assert len(fake.requests) == 2
    assert "retrying in 1.00s" in caplog.text
    assert 0.9 <= elapsed < 3.0


async def assert_server_error_retried(fake: FakeProvider) -> None:
    """A 500 is retried with backoff and the second answer is returned."""
    fake.fail(500).reply_text("fine")
    completion = await model_for(fake).generate([Message.user("x")])
    assert completion.text == "fine"
    assert len(fake.requests) == 2


async def assert_overloaded_retried(fake: FakeProvider) -> None:
    """A 503 is retried as OVERLOADED."""
    fake.fail(503).reply_text("fine")
    assert (await model_for(fake).generate([Message.user("x")])).text == "fine"
    assert len(fake.requests) == 2


async def assert_auth_not_retried(fake: FakeProvider, status: int = 401) -> None:
    """An auth failure is permanent: one request, BackendError(auth)."""
    fake.fail(status, message="invalid api key").reply_text("never sent")
    with pytest.raises(BackendError) as caught:
        await model_for(fake).generate([Message.user("x")])
    assert caught.value.category is ErrorCategory.AUTH
    assert caught.value.is_permanent
    assert "invalid api key" in str(caught.value)
    assert len(fake.requests) == 1


async def assert_spend_limit_not_retried(fake: FakeProvider) -> None:
    """A spend-limit 429 is QUOTA (permanent), unlike a rate limit: exactly one request."""
    fake.spend_limit().reply_text("never sent")
    with pytest.raises(BackendError) as caught:
        await model_for(fake).generate([Message.user("x")])
    assert caught.value.category is ErrorCategory.QUOTA
    assert caught.value.status == 429
    assert len(fake.requests) == 1


async def assert_timeout_bounded(fake: FakeProvider, caplog: pytest.LogCaptureFixture) -> None:
    """A server that never answers yields TIMEOUT after max_attempts attempts, each cut at request_timeout."""
    fake.hang(5).hang(5).hang(5)
    retry = RetrySettings(max_attempts=2, base_delay=0.01, max_delay=0.05, total_timeout=30)
    model = model_for(fake, request_timeout=0.3, retry=retry)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="polymodal.retry"), pytest.raises(BackendError) as caught:
        await model.generate([Message.user("x")])
    elapsed = time.monotonic() - started
    assert caught.value.category is ErrorCategory.TIMEOUT
    retries = [r for r in caplog.records if r.name == "polymodal.retry"]
    assert len(retries) == 1, "two attempts: one retry, then the error"
    assert 1 <= len(fake.requests) <= 2  # under heavy load a request may time out before the server logs it
    assert 0.5 <= elapsed < 4.0


async def assert_malformed_detected(fake: FakeProvider) -> None:
    """A 200 with invalid JSON is MALFORMED_RESPONSE (retried like any transient failure, then raised)."""
    fake.malformed().malformed().malformed()
    with pytest.raises(BackendError) as caught:
        await model_for(fake).generate([Message.user("x")])
    assert caught.value.category is ErrorCategory.MALFORMED_RESPONSE
    assert len(fake.requests) == 3


async def assert_malformed_stream_detected(fake: FakeProvider) -> None:
    """An invalid JSON event in a stream is MALFORMED_RESPONSE too."""
    fake.malformed().malformed().malformed()
    with pytest.raises(BackendError) as caught:
        _ = [d async for d in model_for(fake).stream([Message.user("x")])]
    assert caught.value.category is ErrorCategory.MALFORMED_RESPONSE


async def assert_truncation_reported(fake: FakeProvider) -> None:
    """Output cut by the token limit comes back with finish_reason "length" (not as an error)."""
    fake.truncated('{"number": "A-1')
    completion = await model_for(fake).generate([Message.user("x")], options=GenerateOptions(max_tokens=5))
    assert completion.finish_reason == "length"
    assert completion.truncated
    assert len(fake.requests) == 1


async def assert_stream_error_before_first_delta_retried(fake: FakeProvider) -> None:
    """A stream that fails before its first piece is opened again."""
    fake.fail(500).reply_text("again")
    deltas = [d async for d in model_for(fake).stream([Message.user("x")])]
    assert "".join(d.text for d in deltas) == "again"
    assert len(fake.requests) == 2
