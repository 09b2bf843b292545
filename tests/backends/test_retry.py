from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from polymodal.backends._retry import RetryPolicy, call_with_retries, stream_with_retries
from polymodal.config import RetrySettings
from polymodal.errors import BackendError, ErrorCategory


def error(category: ErrorCategory, retry_after: float | None = None) -> BackendError:
    return BackendError("boom", category=category, provider="p", model="m", retry_after=retry_after)


class Sleeps:
    """A recording replacement for asyncio.sleep."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def failing(errors: list[BackendError], result: str = "ok") -> tuple[list[int], object]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return calls, call


def test_backoff_stays_within_exponential_bounds() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=4.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        samples = [policy.delay(attempt, error(ErrorCategory.SERVER), rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > 0.8 * ceiling, "full jitter should reach near the ceiling"


def test_jitter_spreads_delays() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    rng = random.Random(2)
    samples = [policy.delay(3, error(ErrorCategory.RATE_LIMIT), rng) for _ in range(100)]
    assert len({round(s, 6) for s in samples}) > 90
    assert 1.0 < sum(samples) / len(samples) < 3.0  # uniform on [0, 4]: mean near 2


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=5.0)
    assert policy.delay(1, error(ErrorCategory.RATE_LIMIT, retry_after=2.5)) == 2.5
    assert policy.delay(1, error(ErrorCategory.RATE_LIMIT, retry_after=600)) == 5.0
    assert policy.delay(1, error(ErrorCategory.RATE_LIMIT, retry_after=-3)) == 0.0


def test_policy_from_settings() -> None:
    policy = RetryPolicy.from_settings(
        RetrySettings(max_attempts=7, base_delay=0.2, max_delay=9, total_timeout=60)
    )
    assert policy == RetryPolicy(7, 0.2, 9.0, 60.0)


@pytest.mark.parametrize(
    "category",
    [ErrorCategory.AUTH, ErrorCategory.QUOTA, ErrorCategory.INVALID_REQUEST, ErrorCategory.CONTEXT_LENGTH],
)
async def test_permanent_errors_never_retried(category: ErrorCategory) -> None:
    calls, call = failing([error(category)])
    sleeps = Sleeps()
    with pytest.raises(BackendError) as caught:
        await call_with_retries(call, RetryPolicy(max_attempts=5), sleep=sleeps)  # type: ignore[arg-type]
    assert caught.value.category is category
    assert len(calls) == 1 and sleeps.waits == []


async def test_transient_errors_retried_until_success() -> None:
    calls, call = failing([error(ErrorCategory.SERVER), error(ErrorCategory.RATE_LIMIT, retry_after=1.5)])
    sleeps = Sleeps()
    result = await call_with_retries(call, RetryPolicy(max_attempts=4, base_delay=0.1), sleep=sleeps)  # type: ignore[arg-type]
    assert result == "ok"
    assert len(calls) == 3
    assert 0.0 <= sleeps.waits[0] <= 0.1 and sleeps.waits[1] == 1.5


async def test_total_attempts_bounded() -> None:
    calls, call = failing([error(ErrorCategory.OVERLOADED)] * 10)
    sleeps = Sleeps()
    with pytest.raises(BackendError):
        await call_with_retries(call, RetryPolicy(max_attempts=3, base_delay=0.01), sleep=sleeps)  # type: ignore[arg-type]
    assert len(calls) == 3 and len(sleeps.waits) == 2


async def test_total_timeout_stops_a_wait_that_would_overrun() -> None:
    calls, call = failing([error(ErrorCategory.RATE_LIMIT, retry_after=20)] * 3)
    with pytest.raises(BackendError):
        await call_with_retries(
            call, RetryPolicy(max_attempts=5, max_delay=30, total_timeout=10), sleep=Sleeps()
        )  # type: ignore[arg-type]
    assert len(calls) == 1


async def test_stream_retried_only_before_first_item() -> None:
    opened: list[int] = []

    async def flaky_then_fine() -> AsyncIterator[str]:
        opened.append(1)
        if len(opened) == 1:
            raise error(ErrorCategory.SERVER)
        yield "a"
        yield "b"

    items = [
        x async for x in stream_with_retries(flaky_then_fine, RetryPolicy(base_delay=0.0), sleep=Sleeps())
    ]  # type: ignore[arg-type]
    assert items == ["a", "b"] and len(opened) == 2


async def test_stream_failure_after_first_item_is_raised() -> None:
    opened: list[int] = []

    async def breaks_midway() -> AsyncIterator[str]:
        opened.append(1)
        yield "a"
        raise error(ErrorCategory.SERVER)

    received: list[str] = []
    with pytest.raises(BackendError):
        async for item in stream_with_retries(breaks_midway, RetryPolicy(max_attempts=5), sleep=Sleeps()):  # type: ignore[arg-type]
            received.append(item)
    assert received == ["a"] and len(opened) == 1
