"""The service layer (REST -> AgentService -> Dispatcher -> AgentActor) in the simulator,
named after the plan in shared/seed/: every use case under storage faults either
happens whole or fails cleanly, and what it reported is what the store holds.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import trio

from kelpie_trio.errors import NotFound, ServiceError
from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.nursery.errors import RuntimeFailure
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.llm import SimLlmClient, text
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import StoreError
from tests.dst.agent_harness import (
    CLEAN as SENT_CLEAN,
)
from tests.dst.agent_harness import (
    AgentCluster,
    history_of,
    new_agent,
    page,
    simulate,
    simulate_cluster,
)

STORAGE = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.1))
CLEAN = (StoreError, ServiceError, RuntimeFailure)


def test_dst_service_create_agent() -> None:
    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            created, failed = [], 0
            for i in range(10):
                try:
                    created.append(await new_agent(service, name=f"a{i}"))
                except CLEAN:
                    failed += 1
            world.faults.enabled = False
            listed = [a.agent.id for a in await service.list_agents(page())]
            return created, failed, listed

        created, failed, listed = simulate(seed, scenario, STORAGE)
        assert set(created) <= set(listed)  # a created agent is there
        assert len(listed) <= len(created) + failed  # and nothing but what was asked for

    run_seeds(one, 10)


def test_dst_service_get_agent() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        world.faults.enabled = False
        agent = await new_agent(service, name="kept")
        world.faults.enabled = True
        seen = []
        for _ in range(20):
            try:
                seen.append((await service.get_agent(agent)).agent.name)
            except CLEAN:
                seen.append(None)
        with pytest.raises(NotFound):
            world.faults.enabled = False
            await service.get_agent("agent-00000000-0000-4000-8000-000000000000")
        return seen

    seen = simulate(30, scenario, FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.3)))
    assert set(seen) <= {"kept", None} and "kept" in seen


def test_dst_service_send_message() -> None:
    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            world.faults.enabled = False
            agent = await new_agent(service)
            world.faults.enabled = True
            acked = []
            for i in range(5):
                try:
                    reply = await service.send_message(agent, {"input": f"m{i}"})
                    acked.append(reply)
                except CLEAN:
                    pass
            world.faults.enabled = False
            return acked, await history_of(service, agent)

        acked, history = simulate(seed, scenario, STORAGE)
        stored = {m.id for m in history}
        for reply in acked:  # every acknowledged message is stored, in one run
            assert {m["id"] for m in reply["messages"]} <= stored
            assert len({m["run_id"] for m in reply["messages"]}) == 1
        assert [m.seq for m in history] == list(range(len(history)))  # no gap, no repeat

    run_seeds(one, 10)


def test_dst_service_delete_agent() -> None:
    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            agent = await new_agent(service)
            await service.send_message(agent, {"input": "hi"})
            world.faults.enabled = True
            for _ in range(10):
                try:
                    await service.delete_agent(agent)
                    break
                except CLEAN:
                    continue
            world.faults.enabled = False
            with pytest.raises(NotFound):
                await service.send_message(agent, {"input": "anyone?"})
            return await history_of(service, agent), await service.list_runs(page())

        history, runs = simulate(seed, scenario, STORAGE)
        assert history == [] and runs == []  # nothing of it left behind

    run_seeds(one, 10)


def test_dst_service_dispatcher_failure() -> None:
    """The node running a turn crashes: the caller gets a clean error; the same send
    again (same otid) through the other node resumes the run there and finishes it
    once. The run's checkpoint tells the new activation where to go on."""

    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> Any:
            home, away = sim.service("n0"), sim.service("n1")
            agent = await new_agent(home)
            body = {"messages": [{"role": "user", "content": "hi", "otid": "o-1"}]}
            sim.llm.latency = (2.0, 2.0)
            answered = []

            async def first() -> None:
                # A clean error, as the node dies under it (a hang fails the run).
                with contextlib.suppress(*SENT_CLEAN):
                    answered.append(await sim.send("n0", agent, body))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(first)
                await trio.sleep(1)  # the LLM call is in flight on n0
                sim.crash("n0")
            assert answered == []
            sim.llm.latency = (0.01, 0.1)
            for _ in range(20):
                try:
                    reply = await sim.send("n1", agent, body)
                    break
                except SENT_CLEAN:
                    await trio.sleep(1)
            return reply, await history_of(away, agent)

        reply, history = simulate_cluster(
            seed, scenario, nodes=2, script=[text("hello"), text("unused")],
            config=RuntimeConfig(lease_ttl=3.0, renew_interval=1.0),
        )  # fmt: skip
        assert reply["stop_reason"]["stop_reason"] == "end_turn"
        assert [m.role for m in history] == ["user", "assistant"]  # once, not twice
        assert history[1].content == "hello"

    run_seeds(one, 5)


def test_dst_service_timeout_handling() -> None:
    """A model that never answers in time: the turn ends with llm_api_error after the
    retry policy's tries, in bounded virtual time, and the agent takes the next message."""

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        world.faults.enabled = True
        started = trio.current_time()
        failed = await service.send_message(agent, {"input": "a"})
        took = trio.current_time() - started
        world.faults.enabled = False
        ok = await service.send_message(agent, {"input": "b"})
        return failed, took, ok, await service.get_run(failed["usage"]["run_ids"][0])

    failed, took, ok, run = simulate(
        31, scenario, FaultConfig({FaultType.LLM_TIMEOUT: 1.0}), script=[text("fine")]
    )
    assert failed["stop_reason"]["stop_reason"] == "llm_api_error"
    assert run["status"] == "failed" and "LlmTimeout" in run["metadata"]["error"]
    assert took < 4 * 5.0 + 30  # four tries of 5 s, and the backoff between them
    assert ok["stop_reason"]["stop_reason"] == "end_turn"
