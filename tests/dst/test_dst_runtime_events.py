"""The runtime's recent events in the simulator: each node's ring records the transfers,
recoveries and restarts that really happen there, stamped with the node's own (virtual)
clock, and stays bounded under faults. (The console's runtime view shows these rings:
nursery/recent.py.)"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import attrs
import trio

from kelpie_trio.env import SIM_EPOCH
from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.sim import FaultConfig
from kelpie_trio.sim.agent_scenarios import ROLL, TAKEOVER
from kelpie_trio.sim.faults import STORAGE_FAULTS, FaultType
from kelpie_trio.sim.llm import text, tool_call, tool_calls
from kelpie_trio.sim.seeds import run_seeds
from tests.dst.agent_harness import (
    CLEAN,
    AgentCluster,
    history_of,
    new_agent,
    page,
    simulate_cluster,
    wait_until,
)
from tests.dst.test_dst_sessions import _open_with_steps, _send_quietly, _send_until_answered


def _ring(sim: AgentCluster, name: str) -> list[Any]:
    return sim.service(name).dispatcher.recent.newest_first()


def _memory_chain(steps: int) -> list:
    beats = [
        tool_call("core_memory_append", {"label": "human", "content": f"fact {i}",
                                         "request_heartbeat": True}, call_id=f"c{i}")
        for i in range(steps)
    ]  # fmt: skip
    return [*beats, text("All done.")]


def test_dst_a_transfer_is_recorded_out_of_the_source_and_into_the_target() -> None:
    async def scenario(sim: AgentCluster) -> Any:
        a_node, b_node = sim.service("n0"), sim.service("n1")
        source = await new_agent(a_node, agent_type="memgpt_v2_agent")
        target = await new_agent(b_node, agent_type="memgpt_v2_agent")
        await b_node.send_message(target, {"input": "wake up on n1"})  # it lives on n1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a_node.send_message, source, {"input": "go", "max_steps": 10})
            await wait_until(lambda: _open_with_steps(a_node, source, 2))
            [session] = await a_node.list_sessions(source, page())
            moved_at = trio.current_time()
            await a_node.transfer_session(
                source, session["session_id"], {"target_agent_id": target}
            )
        run = await b_node.get_run_record(session["session_id"])
        return source, target, run, moved_at, _ring(sim, "n0"), _ring(sim, "n1")

    source, target, run, moved_at, n0, n1 = simulate_cluster(
        51, scenario, nodes=2, script=[text("Hi."), *_memory_chain(5)]
    )
    assert run.agent_id == target and run.finished
    [out] = [e for e in n0 if e.kind == "transfer_out"]
    assert (out.key, out.run_id, out.peer) == (source, run.id, target)
    [into] = [e for e in n1 if e.kind == "transfer_in"]
    assert (into.key, into.run_id, into.peer) == (target, run.id, source)
    assert into.iteration >= 2  # it came with the steps done at the source
    # Stamped by each node's env clock: virtual time, from the simulated epoch on.
    assert SIM_EPOCH + moved_at - 1 <= out.at <= into.at < SIM_EPOCH + moved_at + 60
    assert not [e for e in n0 + n1 if e.kind == "recovery"]  # a transfer is no recovery


def test_dst_a_run_resumed_after_a_crash_is_recorded_as_a_recovery() -> None:
    """The node dies while a step's second tool runs; the other node resumes the run
    from its checkpoint (the step's reply stored, iteration 0 done) and records it."""
    ran: Counter[int] = Counter()
    cluster: list[AgentCluster] = []

    def roll(tool: Any, args: dict) -> int:
        ran[args["n"]] += 1
        if args["n"] == 2 and ran[2] == 1:
            cluster[0].crash("n0")
        return args["n"]

    both = tool_calls(("r1", "roll", {"n": 1}), ("r2", "roll", {"n": 2, "request_heartbeat": True}))

    async def scenario(sim: AgentCluster) -> Any:
        cluster.append(sim)
        home = sim.service("n0")
        tool = await home.create_tool({"source_code": ROLL})
        agent = await new_agent(home, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
        body = {"messages": [{"role": "user", "content": "roll", "otid": "o"}]}
        await _send_quietly(sim, "n0", agent, body)
        reply = await _send_until_answered(sim, "n1", agent, body)
        return agent, reply, _ring(sim, "n1"), await history_of(sim.service("n1"), agent)

    agent, reply, n1, history = simulate_cluster(
        54, scenario, nodes=2, script=[both, text("Rolled.")], tools=roll, config=TAKEOVER
    )
    run_id = reply["usage"]["run_ids"][0]
    [recovery] = [e for e in n1 if e.kind == "recovery"]
    assert (recovery.key, recovery.run_id, recovery.iteration) == (agent, run_id, 0)
    assert recovery.at >= SIM_EPOCH
    assert [m.role for m in history].count("user") == 1  # and it did go on, once


PANICS = FaultConfig(
    {FaultType.AGENT_LOOP_PANIC: 0.3, **dict.fromkeys(STORAGE_FAULTS, 0.02)}
)  # fmt: skip
SMALL_RING = 2


def test_dst_every_restart_is_recorded_and_the_ring_stays_bounded() -> None:
    """Handlers panic often (and the store fails now and then): every restart the
    runtime reports is recorded on its node, the ring keeps only the newest few, in
    order, and says how many it let go."""
    let_go: list[int] = []

    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> Any:
            service = sim.service()
            agent = await new_agent(service)
            # Enough messages that most seeds restart more often than the ring holds: the
            # sweep below must see the bound reached whatever the faults' schedule (one
            # store read fewer a message, 2026-12-06, left 6 messages at 4 restarts at most;
            # one commit fewer an activation left seeds 0-5 at 1-3 restarts for 10 messages,
            # about 4 a seed over 20 more seeds, whence a ring of 2).
            for n in range(10):
                # A message that failed every try is refused cleanly; its restarts count.
                with contextlib.suppress(*CLEAN):
                    await sim.send("n0", agent, {"input": f"message {n}"})
            recent = service.dispatcher.recent
            return sim.checker.restarts, recent.recorded, recent.newest_first()

        config = attrs.evolve(RuntimeConfig(), recent_events=SMALL_RING, restart_backoff=0.01)
        reported, recorded, ring = simulate_cluster(seed, scenario, PANICS, config=config)
        assert recorded == reported  # every restart, none twice
        assert len(ring) == min(SMALL_RING, recorded)
        assert [e.seq for e in ring] == list(range(recorded, recorded - len(ring), -1))
        assert all(e.kind == "restart" and e.detail for e in ring)
        assert [e.at for e in ring] == sorted((e.at for e in ring), reverse=True)
        let_go.append(recorded - len(ring))

    if run_seeds(one, 6) > 1:  # a replayed seed checks only itself
        assert any(let_go), let_go  # the bound was reached, in some seed at least
