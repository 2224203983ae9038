"""Steps in the simulator: each iteration of a turn has one Step record, written with its
checkpoint, even when the node running the turn crashes mid-turn and another resumes it."""

from __future__ import annotations

from typing import Any

import trio

from kelpie_trio.agent.steps import STEP_INDEX, load_step, run_step_ids
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage.base import Transaction
from tests.dst.agent_harness import AgentCluster, history_of, new_agent, simulate_cluster
from tests.dst.test_dst_sessions import (
    FAST_TAKEOVER,
    ROLL,
    _send_quietly,
    _send_until_answered,
    chain,
    keyed_to_step,
)


async def _steps_of(service: Any, run_id: str) -> tuple[list[Any], int]:
    async def read(tr: Transaction) -> tuple[list[Any], int]:
        records = [await load_step(tr, i) for i in await run_step_ids(tr, run_id)]
        r = STEP_INDEX.range()
        return records, len(await tr.get_range(r.start, r.stop))

    return await service.store.transact(read)


def test_dst_steps_of_a_crashed_and_resumed_turn_are_each_recorded_once() -> None:
    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> Any:
            home, away = sim.service("n0"), sim.service("n1")
            tool = await home.create_tool({"source_code": ROLL})
            agent = await new_agent(home, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
            body = {"messages": [{"role": "user", "content": "go", "otid": "o1"}],
                    "max_steps": 20}  # fmt: skip
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_quietly, sim, "n0", agent, body)
                await trio.sleep(sim.world.rng("crash").uniform(0.05, 2.0))
                sim.crash("n0")
            await _send_until_answered(sim, "n1", agent, body)
            history = await history_of(away, agent)
            run_id = next(m.run_id for m in history if m.run_id)
            records, indexed = await _steps_of(away, run_id)
            return history, run_id, records, indexed, await away.get_run_record(run_id)

        history, run_id, records, indexed, run = simulate_cluster(
            seed, scenario, nodes=2, script=keyed_to_step(chain(8, custom_every=2)),
            tools=lambda tool, args: args["n"], config=FAST_TAKEOVER,
        )  # fmt: skip
        assert [r.step_number for r in records] == list(range(1, 10))  # each once, in order
        assert indexed == len(records), "a step listed twice, or a record not listed"
        assert len({r.id for r in records}) == len(records)
        mine = [m for m in history if m.run_id == run_id and m.role != "user"]
        for record in records:  # a step's messages are those of its iteration
            assert record.message_ids == [m.id for m in mine if m.step == record.step_number]
        assert sorted(i for r in records for i in r.message_ids) == sorted(m.id for m in mine)
        assert sum(r.prompt_tokens for r in records) == run.prompt_tokens
        assert sum(r.completion_tokens for r in records) == run.completion_tokens
        assert records[-1].stop_reason == "end_turn"
        assert all(r.stop_reason is None for r in records[:-1])

    run_seeds(one, 8)
