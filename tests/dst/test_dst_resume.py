"""The resume sweep's triggers (service/resume.py), in the simulator under storage faults,
with its safety net off (`SAFETY_INTERVALS` infinite): only a trigger can resume a run.

- A run a crashed node left mid-turn is resumed by the surviving node within an interval of
  the crashed node's heartbeat running out (the peer watch), not at the next periodic
  sweep: there is none.
- A paused run is resumed when its pause ends, without a periodic sweep to find it.
- A run whose background driver failed on this node is resumed within about an interval.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio

from kelpie_trio.agent import runs
from kelpie_trio.llm.types import LlmRequest
from kelpie_trio.nursery.dispatcher import Dispatcher, RuntimeConfig
from kelpie_trio.nursery.errors import AgentUnavailable
from kelpie_trio.service import resume
from kelpie_trio.sim import FaultConfig
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.llm import SimLlmClient, send_message, tool_call
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.sim.world import SimWorld
from tests.dst.agent_harness import AgentCluster, new_agent, wait_until

FAULTS = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.03))
TAKEOVER = RuntimeConfig(lease_ttl=3.0, renew_interval=1.0)
INTERVAL = 2.0  # the resume sweep's: how often the node records are read
THINKS = 4.0  # virtual seconds each model call takes: a turn is long enough to crash in
# After the heartbeat runs out: up to an interval for the watch to see it, a model call for
# the resumed turn, and room for the storage faults' retries (and one failed attempt).
BOUND = INTERVAL + THINKS + 2 * INTERVAL


class SlowLlm(SimLlmClient):
    async def _before_reply(self, request: LlmRequest, op: str) -> None:
        await super()._before_reply(request, op)
        await trio.sleep(THINKS)


def simulate(seed: int, scenario: Any, script: list | None = None) -> Any:
    async def main(world: SimWorld) -> Any:
        sim = AgentCluster(world, nodes=2, config=TAKEOVER, resume_interval=INTERVAL)
        sim.llm = SlowLlm.for_world(world, script=script, latency=(0.01, 0.1), timeout=30.0)
        world.faults.enabled = False
        async with trio.open_nursery() as nursery:
            await sim.start(nursery)
            result = await scenario(sim)
            nursery.cancel_scope.cancel()
        return result

    return SimWorld(seed, FAULTS).run(main)


async def _run(sim: AgentCluster, run_id: str) -> runs.Run:
    record = await sim.service("n0").store.transact(lambda tr: runs.load_run(tr, run_id))
    assert record is not None
    return record


@pytest.fixture(autouse=True)
def _no_safety_net(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resume, "SAFETY_INTERVALS", math.inf)


def test_dst_a_run_a_crashed_node_left_is_resumed_soon_after_its_heartbeat_runs_out() -> None:
    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> tuple[float, float]:
            agent = await new_agent(sim.service("n0"))
            body = {"messages": [{"role": "user", "content": "hi"}]}
            run_id = (await sim.on_node("n1", sim.service("n1").send_async, agent, body))["id"]
            sim.world.faults.enabled = True

            async def started() -> bool:
                return (await _run(sim, run_id)).first_seq is not None

            await wait_until(started, every=0.1)  # n1 holds the agent; its model thinks
            dispatcher = sim.service("n1").dispatcher
            assert dispatcher is not None and dispatcher.membership is not None
            node = sim.nodes["n1"]
            expires = trio.current_time() + dispatcher.membership.live_until - node.env.now()
            sim.crash("n1")  # mid-turn: the run stays open, nobody drives it

            async def finished() -> bool:
                return (await _run(sim, run_id)).finished

            with trio.fail_after(60):
                await wait_until(finished, every=0.1)
            sim.world.faults.enabled = False
            assert (await _run(sim, run_id)).status == "completed"
            return expires, trio.current_time()

        expires, done = simulate(seed, scenario)
        assert done - expires <= BOUND, (seed, done - expires)

    run_seeds(one, 3)


def test_dst_a_paused_run_is_resumed_when_its_pause_ends() -> None:
    pause = 0.5  # minutes
    script = [
        tool_call("pause_heartbeats", {"minutes": pause, "request_heartbeat": True}),
        send_message("awake"),
    ]

    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> tuple[float, float]:
            agent = await new_agent(sim.service("n0"), agent_type="memgpt_v2_agent",
                                    tools=["pause_heartbeats"])  # fmt: skip
            body = {"messages": [{"role": "user", "content": "hi"}]}
            run_id = (await sim.on_node("n0", sim.service("n0").send_async, agent, body))["id"]
            sim.world.faults.enabled = True

            async def paused() -> bool:
                return (await _run(sim, run_id)).checkpoint.is_paused

            await wait_until(paused, every=0.1)
            ends = trio.current_time() + pause * 60

            async def finished() -> bool:
                return (await _run(sim, run_id)).finished

            with trio.fail_after(pause * 60 + 60):
                await wait_until(finished, every=0.1)
            sim.world.faults.enabled = False
            return ends, trio.current_time()

        ends, done = simulate(seed, scenario, script=script)
        assert done - ends <= THINKS + 2 * INTERVAL, (seed, done - ends)

    run_seeds(one, 2)


def test_dst_a_run_whose_driver_failed_is_resumed_within_an_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invoke = Dispatcher.invoke
    failed_at: list[float] = []

    async def fails_once(self: Dispatcher, agent_id: str, message: Any, **kw: Any) -> Any:
        if isinstance(message, dict) and message.get("kind") == "run" and not failed_at:
            failed_at.append(trio.current_time())  # the background driver's first try
            raise AgentUnavailable("the first route fails")
        return await invoke(self, agent_id, message, **kw)

    monkeypatch.setattr(Dispatcher, "invoke", fails_once)

    def one(seed: int) -> None:
        failed_at.clear()

        async def scenario(sim: AgentCluster) -> float:
            agent = await new_agent(sim.service("n0"))
            sim.world.faults.enabled = True
            body = {"messages": [{"role": "user", "content": "hi"}]}
            run_id = (await sim.on_node("n0", sim.service("n0").send_async, agent, body))["id"]

            async def finished() -> bool:
                return (await _run(sim, run_id)).finished

            with trio.fail_after(60):
                await wait_until(finished, every=0.1)
            sim.world.faults.enabled = False
            return trio.current_time()

        done = simulate(seed, scenario)
        assert failed_at and done - failed_at[0] <= BOUND, (seed, failed_at, done)

    run_seeds(one, 2)
