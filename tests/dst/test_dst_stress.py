"""Stress in the simulator (the plan's test_dst_stress_*): many agents at once, agents
created and deleted while they are talked to, and one agent with a long history,
under storage and LLM faults. Checked at the end of each seed: every history is
whole (contiguous sequence, each tool result right after its call, each run's
messages together), nothing acknowledged is missing, nothing of a deleted agent
is left in the store.
"""

from __future__ import annotations

from typing import Any

import trio

from kelpie_trio.agent.runs import OPEN_RUNS
from kelpie_trio.errors import NotFound, ServiceError
from kelpie_trio.nursery.errors import RuntimeFailure
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.llm import SimLlmClient
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import StoreError, keys
from kelpie_trio.storage.base import Transaction
from tests.dst.agent_harness import history_of, new_agent, simulate

FAULTS = FaultConfig({**dict.fromkeys(STORAGE_FAULTS, 0.02), FaultType.LLM_FAILURE: 0.03})
CLEAN = (StoreError, ServiceError, RuntimeFailure)


def check_whole(history: list[Any], acked: list[dict]) -> None:
    assert [m.seq for m in history] == list(range(len(history)))  # no gap, no repeat
    for i, message in enumerate(history):
        if message.role == "assistant" and message.tool_calls:
            following = [m.tool_call_id for m in history[i + 1 : i + 1 + len(message.tool_calls)]]
            assert following == [c.id for c in message.tool_calls]
    runs = [m.run_id for m in history]
    for run_id in set(runs):  # a run's messages are together, not interleaved
        at = [i for i, r in enumerate(runs) if r == run_id]
        assert at == list(range(at[0], at[-1] + 1))
    stored = {m.id for m in history}
    for reply in acked:
        assert {m["id"] for m in reply["messages"]} <= stored


async def talk(service: AgentService, agent: str, count: int, acked: list[dict]) -> None:
    for i in range(count):
        try:
            acked.append(await service.send_message(agent, {"input": f"message {i}"}))
        except NotFound:
            return  # deleted meanwhile
        except CLEAN:
            continue


def test_dst_stress_100_concurrent_agents() -> None:
    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            agents = [await new_agent(service, agent_type="memgpt_v2_agent") for _ in range(100)]
            world.faults.enabled = True
            acked: dict[str, list[dict]] = {a: [] for a in agents}
            async with trio.open_nursery() as nursery:
                for agent in agents:
                    nursery.start_soon(talk, service, agent, 2, acked[agent])
            world.faults.enabled = False
            return [(await history_of(service, a), acked[a]) for a in agents]

        results = simulate(seed, scenario, FAULTS)
        for history, acked in results:
            check_whole(history, acked)
        assert sum(len(acked) for _, acked in results) > 150

    run_seeds(one, 3)


def test_dst_stress_rapid_create_delete() -> None:
    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            world.faults.enabled = True
            deleted: list[str] = []

            async def life(i: int) -> None:
                try:
                    agent = await new_agent(service, name=f"a{i}")
                except CLEAN:
                    return
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(talk, service, agent, 3, [])
                    await trio.sleep(world.rng("delete").uniform(0, 0.5))
                    for _ in range(10):
                        try:
                            await service.delete_agent(agent)
                            deleted.append(agent)
                            break
                        except NotFound:
                            break
                        except CLEAN:
                            continue

            async with trio.open_nursery() as nursery:
                for i in range(30):
                    nursery.start_soon(life, i)
            world.faults.enabled = False
            await trio.sleep(5)  # turns still running on a deleted agent end

            async def leftovers(tr: Transaction) -> list[str]:
                found = []
                for agent in deleted:
                    if await tr.get_prefix(keys.MESSAGES.pack((agent,)), limit=1):
                        found.append(f"messages of {agent}")
                    if await tr.get_prefix(OPEN_RUNS.pack((agent,)), limit=1):
                        found.append(f"an open run of {agent}")
                return found

            return deleted, await service.store.transact(leftovers)

        deleted, leftovers = simulate(seed, scenario, FAULTS)
        assert deleted and leftovers == []

    run_seeds(one, 5)


def test_dst_stress_many_messages_per_agent() -> None:
    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            agent = await new_agent(service, agent_type="memgpt_v2_agent")
            world.faults.enabled = True
            acked: list[dict] = []
            async with trio.open_nursery() as nursery:
                for _ in range(4):  # four clients, one agent: its turns run one at a time
                    nursery.start_soon(talk, service, agent, 40, acked)
            world.faults.enabled = False
            return await history_of(service, agent), acked

        history, acked = simulate(seed, scenario, FAULTS)
        check_whole(history, acked)
        assert len(acked) > 120
        assert len([m for m in history if m.role == "user"]) >= len(acked)

    run_seeds(one, 3)
