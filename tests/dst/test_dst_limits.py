"""Sends the store cannot hold, through the real service, dispatcher and actor.

A message too large for one step's transaction, or an otid past the key budget, is
refused by the service before any actor sees it: a 413 / 422 naming the field and
the limit, nothing stored, the model never asked. Should one get through anyway, the
store's own refusal reaches the caller as a 413 at the first try: the actor's
restarts are for faults that may pass, not for a request that fails the same way.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kelpie_trio.errors import Invalid, TooLarge
from kelpie_trio.nursery.observer import RuntimeObserver
from kelpie_trio.service import AgentService
from kelpie_trio.service import limits as service_limits
from kelpie_trio.service.limits import MAX_KEY_PART_BYTES, MAX_SEND_BYTES
from kelpie_trio.sim import SimWorld
from kelpie_trio.sim.llm import SimLlmClient, text
from tests.dst.agent_harness import history_of, new_agent, page, simulate

HUGE = "é" * 3_500_000  # 7 MB of UTF-8: the message and its run's copy overflow 10 MB


class Restarts(RuntimeObserver):
    def __init__(self) -> None:
        self.count = 0

    def restarted(self, node_id: str, agent_id: str) -> None:
        self.count += 1


async def refused(service: AgentService, agent: str, body: dict) -> tuple[Exception, float]:
    started = trio.current_time()
    try:
        await service.send_message(agent, body)
    except (Invalid, TooLarge) as error:
        return error, trio.current_time() - started
    raise AssertionError("the send was not refused")


def send_and_look(body: dict) -> Any:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        restarts = Restarts()
        assert service.dispatcher is not None
        service.dispatcher.observer = restarts
        error, took = await refused(service, agent, body)
        stored = await history_of(service, agent), await service.list_runs(page())
        ok = await service.send_message(agent, {"input": "still here?"})
        return error, took, stored, restarts.count, ok

    return simulate(3, scenario, script=[text("yes")])


def test_a_message_too_large_for_a_step_is_a_413_before_any_actor() -> None:
    error, took, (history, runs), restarts, ok = send_and_look(
        {"messages": [{"role": "user", "content": HUGE}]}
    )
    assert isinstance(error, TooLarge)
    assert str(error).startswith("body.messages.0.content:")
    assert f"{MAX_SEND_BYTES:,} bytes" in str(error)
    assert history == [] and runs == [] and restarts == 0
    assert took < 0.1
    assert ok["stop_reason"]["stop_reason"] == "end_turn"  # the agent is fine


def test_several_messages_too_large_together_are_a_413() -> None:
    part = "a" * (MAX_SEND_BYTES // 2 + 1)
    error, _, (history, runs), _, _ = send_and_look(
        {"messages": [{"role": "user", "content": part}, {"role": "user", "content": part}]}
    )
    assert isinstance(error, TooLarge) and str(error).startswith("body.messages:")
    assert history == [] and runs == []


def test_an_otid_over_the_key_budget_is_a_422_naming_it() -> None:
    otid = "o" * (MAX_KEY_PART_BYTES + 1)
    error, _, (history, runs), restarts, _ = send_and_look(
        {"messages": [{"role": "user", "content": "hi", "otid": otid}]}
    )
    assert isinstance(error, Invalid)
    assert error.detail()[0]["loc"] == ["body", "messages", 0, "otid"]  # type: ignore[index]
    assert history == [] and runs == [] and restarts == 0


def test_the_stores_own_refusal_is_a_413_at_the_first_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the service's check (here: lifted), the store refuses the turn's first
    transaction; the actor does not try it again, and nothing is stored."""
    monkeypatch.setattr(service_limits, "MAX_SEND_BYTES", 10**9)
    error, took, (history, runs), restarts, ok = send_and_look(
        {"messages": [{"role": "user", "content": HUGE}]}
    )
    assert isinstance(error, TooLarge)
    assert "exceeds the limit of 10000000 bytes" in str(error)
    assert restarts == 1  # the actor starts afresh once, and the message is not retried
    assert took < 0.1  # no backoff between tries
    assert history == [] and runs == []
    assert ok["stop_reason"]["stop_reason"] == "end_turn"
