"""RetryingLlmClient: what is retried, how long it waits, and when it gives up.

Waits run on trio's clock through the env (`autojump_clock`: no wall time passes), and the
env records each one, so the tests can check the schedule exactly.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
import trio

from kelpie_trio.env import SimEnv
from kelpie_trio.llm.openai_compat import OpenAiCompatibleClient
from kelpie_trio.llm.retry import RetryingLlmClient, is_retryable, parse_retry_after
from kelpie_trio.llm.types import (
    ChatMessage,
    Completed,
    ContentDelta,
    LlmClient,
    LlmError,
    LlmFailure,
    LlmRateLimited,
    LlmRequest,
    LlmResponse,
    LlmStreamEvent,
    LlmTimeout,
)
from kelpie_trio.sim.faults import FaultConfig, FaultInjector, FaultType
from kelpie_trio.sim.llm import SimLlmClient, text
from tests.llm.fake_providers import openai_completion, openai_error, openai_stream, serving

REQUEST = LlmRequest(model="gpt-test", messages=(ChatMessage("user", "hi"),))
# The same, for the simulated provider, which serves the model named `agent`.
SIM_REQUEST = attrs.evolve(REQUEST, model="agent")
OK = text("fine")


class RecordingEnv(SimEnv):
    """A seeded env whose sleeps (on trio's clock) are written down."""

    def __init__(self, on_sleep: Callable[[float], None] | None = None) -> None:
        super().__init__(random.Random(0))
        self.sleeps: list[float] = []
        self._on_sleep = on_sleep

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self._on_sleep is not None:
            self._on_sleep(seconds)
        await trio.sleep(seconds)


# One scripted outcome per attempt: an error to raise, a reply to return, or for streams a
# list of events (any of which may be an error, raised when reached).
Outcome = LlmError | LlmResponse | list[Any]


class ScriptedLlm(LlmClient):
    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.closed = False

    def _next(self) -> Outcome:
        self.calls += 1
        return self.outcomes.pop(0)

    async def complete(self, request: LlmRequest) -> LlmResponse:
        outcome = self._next()
        await trio.lowlevel.checkpoint()
        if isinstance(outcome, LlmError):
            raise outcome
        assert isinstance(outcome, LlmResponse)
        return outcome

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmStreamEvent]:
        outcome = self._next()
        await trio.lowlevel.checkpoint()
        if isinstance(outcome, LlmError):
            raise outcome
        for event in outcome:
            if isinstance(event, LlmError):
                raise event
            yield event

    async def aclose(self) -> None:
        self.closed = True


async def collect(events: AsyncIterator[LlmStreamEvent]) -> list[LlmStreamEvent]:
    return [event async for event in events]


# -- complete -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        LlmFailure("boom", status=500),
        LlmFailure("overloaded", status=529),
        LlmFailure("connection reset", status=None),
        LlmTimeout("slow"),
        LlmRateLimited("429"),
    ],
    ids=["500", "529", "no-status", "timeout", "429-without-retry-after"],
)
async def test_transient_errors_are_retried_with_jittered_exponential_backoff(
    autojump_clock: trio.testing.MockClock, error: LlmError
) -> None:
    inner, env = ScriptedLlm(error, error, OK), RecordingEnv()
    response = await RetryingLlmClient(inner, env, base_delay=0.5).complete(REQUEST)
    assert response == OK
    assert inner.calls == 3
    first, second = env.sleeps
    assert 0.25 <= first <= 0.5  # within [d/2, d], d = 0.5 * 2**retry
    assert 0.5 <= second <= 1.0


async def test_a_429_waits_exactly_as_long_as_retry_after_says(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner, env = ScriptedLlm(LlmRateLimited("429", retry_after=7.5), OK), RecordingEnv()
    start = trio.current_time()
    assert await RetryingLlmClient(inner, env).complete(REQUEST) == OK
    assert env.sleeps == [7.5]
    assert trio.current_time() - start == pytest.approx(7.5)


async def test_a_retry_after_longer_than_max_retry_after_is_passed_on_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner, env = ScriptedLlm(LlmRateLimited("429", retry_after=3600), OK), RecordingEnv()
    with pytest.raises(LlmRateLimited):
        await RetryingLlmClient(inner, env, max_retry_after=60).complete(REQUEST)
    assert (inner.calls, env.sleeps) == (1, [])


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_4xx_other_than_429_is_not_retried(
    autojump_clock: trio.testing.MockClock, status: int
) -> None:
    inner, env = ScriptedLlm(LlmFailure("bad request", status=status), OK), RecordingEnv()
    with pytest.raises(LlmFailure) as failure:
        await RetryingLlmClient(inner, env).complete(REQUEST)
    assert failure.value.status == status
    assert (inner.calls, env.sleeps) == (1, [])


async def test_it_gives_up_after_attempts_and_re_raises_the_last_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors = [LlmFailure(f"boom {i}", status=503) for i in range(4)]
    inner, env = ScriptedLlm(*errors, OK), RecordingEnv()
    with pytest.raises(LlmFailure, match="boom 3"):
        await RetryingLlmClient(inner, env, attempts=4).complete(REQUEST)
    assert inner.calls == 4
    assert len(env.sleeps) == 3


async def test_backoff_is_capped_at_max_delay(autojump_clock: trio.testing.MockClock) -> None:
    inner, env = ScriptedLlm(*[LlmTimeout("slow")] * 5, OK), RecordingEnv()
    llm = RetryingLlmClient(inner, env, attempts=6, base_delay=1.0, max_delay=3.0)
    assert await llm.complete(REQUEST) == OK
    ceilings = [1.0, 2.0, 3.0, 3.0, 3.0]
    assert all(c / 2 <= s <= c for s, c in zip(env.sleeps, ceilings, strict=True))


async def test_one_attempt_means_no_retry(autojump_clock: trio.testing.MockClock) -> None:
    inner, env = ScriptedLlm(LlmTimeout("slow"), OK), RecordingEnv()
    with pytest.raises(LlmTimeout):
        await RetryingLlmClient(inner, env, attempts=1).complete(REQUEST)
    assert inner.calls == 1


def test_attempts_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryingLlmClient(ScriptedLlm(), RecordingEnv(), attempts=0)


async def test_cancellation_during_a_backoff_is_not_swallowed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner, env = ScriptedLlm(LlmRateLimited("429", retry_after=30), OK), RecordingEnv()
    with trio.move_on_after(5) as scope:
        await RetryingLlmClient(inner, env).complete(REQUEST)
    assert scope.cancelled_caught
    assert inner.calls == 1


async def test_aclose_closes_the_inner_client() -> None:
    inner = ScriptedLlm()
    await RetryingLlmClient(inner, RecordingEnv()).aclose()
    assert inner.closed


# -- stream ---------------------------------------------------------------------------------


async def test_a_stream_failing_before_its_first_event_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = [ContentDelta("fi"), ContentDelta("ne"), Completed(OK)]
    inner = ScriptedLlm(LlmFailure("502", status=502), [LlmTimeout("slow")], events)
    env = RecordingEnv()
    assert await collect(RetryingLlmClient(inner, env).stream(REQUEST)) == events
    assert inner.calls == 3
    assert len(env.sleeps) == 2


async def test_a_stream_failing_after_its_first_event_is_not_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broken = [ContentDelta("fi"), LlmFailure("stream broken midway", status=502)]
    inner, env = ScriptedLlm(broken, [ContentDelta("fine"), Completed(OK)]), RecordingEnv()
    seen: list[LlmStreamEvent] = []
    with pytest.raises(LlmFailure, match="midway"):
        async for event in RetryingLlmClient(inner, env).stream(REQUEST):
            seen.append(event)
    assert seen == [ContentDelta("fi")]  # nothing repeated
    assert (inner.calls, env.sleeps) == (1, [])


async def test_a_stream_refused_with_4xx_is_not_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner, env = ScriptedLlm(LlmFailure("bad", status=400), [Completed(OK)]), RecordingEnv()
    with pytest.raises(LlmFailure):
        await collect(RetryingLlmClient(inner, env).stream(REQUEST))
    assert inner.calls == 1


async def test_a_stream_honours_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    inner = ScriptedLlm(LlmRateLimited("429", retry_after=2.0), [Completed(OK)])
    env = RecordingEnv()
    assert await collect(RetryingLlmClient(inner, env).stream(REQUEST)) == [Completed(OK)]
    assert env.sleeps == [2.0]


# -- the simulator's faults take the same path ----------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (FaultType.LLM_TIMEOUT, LlmTimeout),
        (FaultType.LLM_FAILURE, LlmFailure),
        (FaultType.LLM_RATE_LIMITED, LlmRateLimited),
    ],
)
async def test_simulated_llm_faults_are_retried_until_they_stop(
    autojump_clock: trio.testing.MockClock, fault: FaultType, error: type[LlmError]
) -> None:
    faults = FaultInjector(FaultConfig({fault: 1.0}), random.Random(1))

    def fault_stops_after_two_retries(_: float) -> None:
        if len(env.sleeps) == 2:
            faults.enabled = False

    env = RecordingEnv(on_sleep=fault_stops_after_two_retries)
    sim = SimLlmClient(random.Random(2), faults=faults, script=[text("recovered")])
    response = await RetryingLlmClient(sim, env).complete(SIM_REQUEST)
    assert response.message.content == "recovered"
    assert len(sim.requests) == 3
    assert faults.fired[fault] == 2


async def test_simulated_rate_limits_are_waited_out_as_the_sim_asks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    faults = FaultInjector(FaultConfig({FaultType.LLM_RATE_LIMITED: 1.0}), random.Random(3))
    env = RecordingEnv()
    sim = SimLlmClient(random.Random(4), faults=faults, script=[])
    with pytest.raises(LlmRateLimited) as limited:
        await RetryingLlmClient(sim, env, attempts=3).complete(SIM_REQUEST)
    assert len(sim.requests) == 3
    assert len(env.sleeps) == 2
    assert all(0.5 <= s <= 5.0 for s in env.sleeps)  # the sim's Retry-After range
    assert limited.value.retry_after is not None


# -- over real HTTP -------------------------------------------------------------------------


async def test_an_http_429_with_retry_after_then_a_reply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as provider:
        provider.script(openai_error(429, retry_after="30"), openai_completion("at last"))
        env = RecordingEnv()
        async with OpenAiCompatibleClient(provider.url + "/v1", timeout=10) as http:
            start = trio.current_time()
            response = await RetryingLlmClient(http, env).complete(REQUEST)
        assert response.message.content == "at last"
        assert env.sleeps == [30.0]
        assert trio.current_time() - start >= 30
        assert len(provider.received) == 2


async def test_http_5xx_and_a_timeout_then_a_streamed_reply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as provider:
        provider.script(
            openai_error(503, "busy"),
            openai_completion("never seen").slow(3600),
            openai_stream(["ok"]),
        )
        env = RecordingEnv()
        async with OpenAiCompatibleClient(provider.url + "/v1", timeout=10) as http:
            events = await collect(RetryingLlmClient(http, env).stream(REQUEST))
        assert events[-1].response.message.content == "ok"
        assert len(env.sleeps) == 2
        assert len(provider.received) == 3


async def test_an_http_400_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    async with serving() as provider:
        provider.script(openai_error(400, "bad schema"), openai_completion("unused"))
        async with OpenAiCompatibleClient(provider.url + "/v1", timeout=10) as http:
            with pytest.raises(LlmFailure, match="bad schema"):
                await RetryingLlmClient(http, RecordingEnv()).complete(REQUEST)
        assert len(provider.received) == 1


# -- the policy in pieces -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (LlmTimeout("t"), True),
        (LlmRateLimited("r"), True),
        (LlmFailure("f"), True),
        (LlmFailure("f", status=500), True),
        (LlmFailure("f", status=429), False),  # a 429 arrives as LlmRateLimited
        (LlmFailure("f", status=404), False),
        (LlmError("other"), False),
    ],
)
def test_is_retryable(error: LlmError, retryable: bool) -> None:
    assert is_retryable(error) is retryable


@pytest.mark.parametrize(
    ("value", "date", "seconds"),
    [
        ("120", None, 120.0),
        (" 2.5 ", None, 2.5),
        ("-3", None, 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", "Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:29:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", None, None),  # no clock of the server's to measure by
        ("soon", "Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("nan", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_parse_retry_after(value: str | None, date: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, date=date) == seconds
