from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from polymodal.backends._http import category_for_status, parse_retry_after, status_error, transport_error
from polymodal.errors import ErrorCategory


@pytest.mark.parametrize(
    ("status", "category"),
    [
        (400, ErrorCategory.INVALID_REQUEST),
        (401, ErrorCategory.AUTH),
        (402, ErrorCategory.QUOTA),
        (403, ErrorCategory.PERMISSION),
        (404, ErrorCategory.NOT_FOUND),
        (413, ErrorCategory.CONTEXT_LENGTH),
        (422, ErrorCategory.INVALID_REQUEST),
        (429, ErrorCategory.RATE_LIMIT),
        (500, ErrorCategory.SERVER),
        (502, ErrorCategory.SERVER),
        (503, ErrorCategory.OVERLOADED),
        (504, ErrorCategory.SERVER),
        (529, ErrorCategory.OVERLOADED),
        (599, ErrorCategory.SERVER),
        (418, ErrorCategory.INVALID_REQUEST),
    ],
)
def test_status_categories(status: int, category: ErrorCategory) -> None:
    assert category_for_status(status) is category


@pytest.mark.parametrize(
    "body",
    [
        {
            "error": {
                "message": "You exceeded your current quota",
                "type": "insufficient_quota",
                "code": "insufficient_quota",
            }
        },
        {
            "message": "quota",
            "type": "insufficient_quota",
            "code": "insufficient_quota",
        },  # openai SDK's exc.body
        {
            "type": "error",
            "error": {"type": "rate_limit_error", "details": {"error_code": "enforced_spend_limit_reached"}},
        },
    ],
)
def test_spend_limit_429_is_quota(body: object) -> None:
    assert category_for_status(429, body) is ErrorCategory.QUOTA


def test_plain_429_is_rate_limit() -> None:
    assert (
        category_for_status(429, {"error": {"type": "rate_limit_error", "message": "slow down"}})
        is ErrorCategory.RATE_LIMIT
    )


def test_context_overflow_recognised_in_400() -> None:
    body = {"error": {"message": "This model's maximum context length is 8192 tokens", "code": None}}
    assert category_for_status(400, body) is ErrorCategory.CONTEXT_LENGTH


def test_retry_after_forms() -> None:
    now = 1_800_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 30, tz=UTC), usegmt=True)
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30.0, abs=1.0)
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({"Retry-After": "-4"}) == 0.0
    past = format_datetime(datetime.fromtimestamp(now - 60, tz=UTC), usegmt=True)
    assert parse_retry_after({"Retry-After": past}, now=now) == 0.0
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_status_error_carries_everything() -> None:
    error = status_error("p", "m", 429, headers={"Retry-After": "3"}, body={"error": {"message": "slow"}})
    assert (error.category, error.status, error.retry_after, error.message) == (
        ErrorCategory.RATE_LIMIT,
        429,
        3.0,
        "slow",
    )
    assert not error.is_permanent


def test_transport_errors() -> None:
    request = httpx.Request("POST", "http://x")
    assert (
        transport_error("p", "m", httpx.ReadTimeout("slow", request=request)).category
        is ErrorCategory.TIMEOUT
    )
    assert (
        transport_error("p", "m", httpx.ConnectError("refused", request=request)).category
        is ErrorCategory.CONNECTION
    )
