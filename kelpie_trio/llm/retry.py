"""Retrying a provider: which LLM errors are worth another try, and how long to wait first.

`RetryingLlmClient` wraps any `LlmClient` (a real provider or the simulator's) and retries
what is transient: timeouts, 5xx and broken connections (`LlmFailure` with status None or
>= 500) and 429s (`LlmRateLimited`). Other 4xx mean the request itself is wrong; asking again
cannot help, so they surface at once. Waits go through the injected `Env` (`env.sleep`,
`env.jitter`), so under the simulator a retry storm costs virtual time and draws from the seed.

Also here: `parse_retry_after`, because what a provider's Retry-After means is part of the same
policy.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from kelpie_trio.env import Env
from kelpie_trio.llm.types import (
    LlmClient,
    LlmError,
    LlmFailure,
    LlmRateLimited,
    LlmRequest,
    LlmResponse,
    LlmStreamEvent,
    LlmTimeout,
)

__all__ = ["RetryingLlmClient", "is_retryable", "parse_retry_after"]

log = logging.getLogger("kelpie_trio.llm")


def is_retryable(error: LlmError) -> bool:
    """Whether asking again might get a different answer."""
    if isinstance(error, LlmTimeout | LlmRateLimited):
        return True
    if isinstance(error, LlmFailure):
        return error.status is None or error.status >= 500
    return False


def parse_retry_after(value: str | None, *, date: str | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date.

    An HTTP date is measured against `date`, the same response's Date header (the server's own
    clock, so a skewed local clock does not matter and no wall clock is read). A date with no
    Date to measure it against, or anything unparseable, gives None: no hint, back off instead.
    """
    if value is None or not (value := value.strip()):
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is no hint
    if date is None:
        return None
    try:
        until = email.utils.parsedate_to_datetime(value)
        now = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    if until.tzinfo is None or now.tzinfo is None:
        return None
    return max(0.0, (until - now).total_seconds())


class RetryingLlmClient(LlmClient):
    """`inner`, asked up to `attempts` times in all while its errors are retryable.

    Between tries it sleeps a 429's `retry_after` when the provider gave one (no more than
    `max_retry_after`: a provider asking for longer gets its error passed on instead of a
    stalled agent), else a jittered exponential backoff: a random wait in
    [d/2, d] with d = min(max_delay, base_delay * 2**retry).

    A stream is retried only while it has yielded nothing: once a delta has reached the
    caller, a fresh attempt would repeat it, so a later failure is passed on as it is.
    """

    def __init__(
        self,
        inner: LlmClient,
        env: Env,
        *,
        attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 20.0,
        max_retry_after: float = 60.0,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.inner = inner
        self._env = env
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_retry_after = max_retry_after

    async def complete(self, request: LlmRequest) -> LlmResponse:
        retry = 0
        while True:
            try:
                return await self.inner.complete(request)
            except LlmError as error:
                delay = self._delay_before_retry(error, retry)
                if delay is None:
                    raise
            await self._env.sleep(delay)
            retry += 1

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmStreamEvent]:
        retry = 0
        while True:
            yielded = False
            try:
                async with aclosing(self.inner.stream(request)) as events:
                    async for event in events:
                        yielded = True
                        yield event
                return
            except LlmError as error:
                delay = None if yielded else self._delay_before_retry(error, retry)
                if delay is None:
                    raise
            await self._env.sleep(delay)
            retry += 1

    async def aclose(self) -> None:
        """Close the wrapped client, if it holds anything to close."""
        aclose = getattr(self.inner, "aclose", None)
        if aclose is not None:
            await aclose()

    def _delay_before_retry(self, error: LlmError, retry: int) -> float | None:
        """Seconds to wait before the next try, or None to give up and re-raise `error`."""
        if retry + 1 >= self.attempts or not is_retryable(error):
            return None
        if isinstance(error, LlmRateLimited) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            delay = error.retry_after
        else:
            ceiling = min(self.max_delay, self.base_delay * 2**retry)
            delay = self._env.jitter(ceiling / 2, ceiling)
        log.info(
            "LLM call failed (%s: %s); retry %d of %d in %.2f s",
            type(error).__name__,
            error,
            retry + 1,
            self.attempts - 1,
            delay,
        )
        return delay
