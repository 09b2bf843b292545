"""The single retry layer: exponential backoff with full jitter, Retry-After honoured, permanent errors never
retried, attempts and total time bounded. Adapters disable their SDKs' own retries and rely on this."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from polymodal.errors import BackendError

if TYPE_CHECKING:
    from polymodal.config import RetrySettings

T = TypeVar("T")
log = logging.getLogger("polymodal.retry")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed model call is repeated."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    total_timeout: float = 300.0

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        """Build from the ``retry`` block of :class:`~polymodal.config.Settings`."""
        return cls(settings.max_attempts, settings.base_delay, settings.max_delay, settings.total_timeout)

    def delay(self, attempt: int, error: BackendError, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.max_delay)
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return (rng or random).uniform(0.0, ceiling)


Sleep = Callable[[float], Awaitable[None]]


def _should_retry(
    error: BackendError, attempt: int, policy: RetryPolicy, started: float, wait: float
) -> bool:
    if error.is_permanent or attempt >= policy.max_attempts:
        return False
    return (time.monotonic() - started) + wait <= policy.total_timeout


async def call_with_retries(
    call: Callable[[], Awaitable[T]], policy: RetryPolicy, *, sleep: Sleep = asyncio.sleep
) -> T:
    """Run ``call`` until it succeeds, a permanent error occurs, or the policy's bounds are reached."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except BackendError as error:
            wait = policy.delay(attempt, error)
            if not _should_retry(error, attempt, policy, started, wait):
                raise
            log.warning("attempt %d failed (%s); retrying in %.2fs", attempt, error, wait)
            await sleep(wait)


async def stream_with_retries(
    open_stream: Callable[[], AsyncIterator[T]], policy: RetryPolicy, *, sleep: Sleep = asyncio.sleep
) -> AsyncIterator[T]:
    """Yield from a fresh stream, retrying only failures that happen before the first item arrives."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        produced = False
        try:
            async for item in open_stream():
                produced = True
                yield item
            return
        except BackendError as error:
            wait = policy.delay(attempt, error)
            if produced or not _should_retry(error, attempt, policy, started, wait):
                raise
            log.warning("stream attempt %d failed (%s); retrying in %.2fs", attempt, error, wait)
            await sleep(wait)


__all__ = ["RetryPolicy", "call_with_retries", "stream_with_retries"]
