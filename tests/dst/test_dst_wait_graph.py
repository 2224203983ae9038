"""Cycles of waiting agents formed by separate requests (agent/wait_graph.py): one user's
turn of p0 waits on p1 while another user's turn of p1 waits on p0 (or, with three, on p2,
whose own user's turn waits on p0). No chain of calls holds the other agents, so only the
store's wait-for graph sees the cycle: the wait that closes it is refused at once with the
cycle as a tool error, the others get their answers, and every turn ends long before the
wait limit, under storage faults and node crashes."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kelpie_trio.agent import runs
from kelpie_trio.agent.wait_graph import WAITS, cycle_through
from kelpie_trio.llm.types import LlmRequest, LlmResponse
from kelpie_trio.sim import FaultConfig
from kelpie_trio.sim.faults import CRASH_FAULTS, STORAGE_FAULTS
from kelpie_trio.sim.llm import send_message, tool_calls
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage.base import Transaction
from tests.dst.agent_harness import history_of, live_service, restart_crashed, send_anywhere
from tests.dst.test_dst_multi_agent import (
    INCOMING,
    TAKEOVER,
    WAIT,
    TeamCluster,
    _agent,
    _role,
    simulate_team,
)

FAULTS = FaultConfig({**dict.fromkeys(STORAGE_FAULTS, 0.05), **dict.fromkeys(CRASH_FAULTS, 0.01)})
ROUNDS = 2
LIMIT = 1000.0  # far beyond the bound below: only the graph can end these waits in time


class Ring:
    """p0, p1, ...: a user's turn of each asks the next (the last asks p0) and waits; a
    message from another agent is answered at once."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def reply(self, request: LlmRequest) -> LlmResponse:
        me = int(_role(request)[1:])
        last = request.messages[-1]
        if last.role == "tool":
            return send_message(f"p{me} got: {last.content}")
        if INCOMING in (last.content or ""):
            return send_message(f"p{me} answers")
        following = self.ids[(me + 1) % len(self.ids)]
        return tool_calls(("c", WAIT, {"message": f"from p{me}", "request_heartbeat": True,
                                       "other_agent_id": following}))  # fmt: skip


@pytest.mark.parametrize("size", [2, 3])
def test_dst_a_cycle_of_waits_across_requests_fails_the_wait_that_closes_it(size: int) -> None:
    restarts: list[int] = []
    cycles: list[int] = []  # waits refused as closing a cycle, per seed

    def one(seed: int) -> None:
        pair = Ring()

        async def scenario(sim: TeamCluster) -> Any:
            for i in range(size):
                service = sim.service(sim.names[i % 2])
                pair.ids.append(await _agent(service, f"p{i}", include_multi_agent_tools=True))
            sim.llm.latency = (0.5, 1.0)  # both users' first steps overlap
            replies: dict[str, dict] = {}
            started = trio.current_time()
            sim.world.faults.enabled = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restart_crashed, sim)
                for r in range(ROUNDS):  # both users at once, each round
                    async with trio.open_nursery() as users:
                        for i, agent in enumerate(pair.ids):
                            otid = f"u{i}-{r}"
                            body = {"messages": [{"role": "user", "content": otid,
                                                  "otid": otid}], "max_steps": 6}  # fmt: skip

                            async def user(otid: str = otid, agent: str = agent,
                                           body: dict = body, i: int = i) -> None:  # fmt: skip
                                replies[otid] = await send_anywhere(sim, agent, body, first=i)

                            users.start_soon(user)
                nursery.cancel_scope.cancel()
            took = trio.current_time() - started
            sim.world.faults.enabled = False
            await trio.sleep(5)
            service = live_service(sim)
            histories = [await history_of(service, agent) for agent in pair.ids]

            async def edges(tr: Transaction) -> list[tuple]:
                left = [WAITS.unpack(k) for k, _ in await tr.get_prefix(WAITS.key())]
                live = []
                for _, run_id, call_id, _ in left:  # one a crash left: its call must be over
                    run = await runs.load_run(tr, run_id)
                    if run and any(c.id == call_id for c in run.checkpoint.pending_tool_calls):
                        live.append(run_id)
                return live

            return replies, took, histories, await service.store.transact(edges)

        sim, (replies, took, histories, live_edges) = simulate_team(
            seed, scenario, FAULTS, nodes=2, script=[pair.reply] * 400, config=TAKEOVER,
            resume_interval=2.0, wait_timeout=LIMIT,
        )  # fmt: skip
        assert took < 200.0, took  # a cycle left to the limit would take 1000 s
        assert len(replies) == size * ROUNDS
        assert all(r["stop_reason"]["stop_reason"] == "end_turn" for r in replies.values())
        waits = [m for h in histories for m in h if m.role == "tool" and m.tool_name == WAIT]
        results = {(m.run_id, m.tool_call_id): m for m in waits}  # one per call, resumes too
        refused = [m for m in results.values() if m.tool_status == "error"]
        assert all("a cycle of waiting agents" in (m.content or "") for m in refused), refused
        assert all("within" not in (m.content or "") for m in refused)  # no wait timed out
        for r in range(ROUNDS):  # of a round's waits, at most the one closing a cycle fails
            statuses = [_wait_status(histories[i], f"u{i}-{r}") for i in range(size)]
            assert statuses.count("success") >= size - 1, statuses
        cycles.append(len(refused))
        assert live_edges == []
        restarts.append(sum(node.incarnation - 1 for node in sim.nodes.values()))

    if run_seeds(one, 6) > 1:
        assert sum(restarts), "no node crashed: the resumed waits were not run"
        # Most rounds close a cycle (both users' waits overlap); faults may move one apart.
        assert sum(cycles) >= len(cycles) * ROUNDS // 2, cycles


def _wait_status(history: list[Any], otid: str) -> str:
    """How the wait of the user's turn `otid` ended (its run's stored tool result)."""
    [run_id] = {m.run_id for m in history if m.role == "user" and m.content == otid}
    [status] = {m.tool_status for m in history if m.run_id == run_id and m.tool_name == WAIT}
    return status or ""


def test_a_path_back_to_the_waiting_thread_is_found_over_the_edges() -> None:
    edges = {"b": ["c", "d"], "c": [], "d": ["a"], "e": ["b"]}
    assert cycle_through(edges, "b", "a") == ["b", "d", "a"]
    assert cycle_through(edges, "c", "a") is None
    assert cycle_through({"b": ["c"], "c": ["b"]}, "b", "a") is None  # a loop not via a
