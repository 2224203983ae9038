"""The multi-agent tools against the real agent actor in the simulator (agent/multi_agent.py):
a supervisor asks two workers and combines their answers, on two nodes, under storage
faults, node crashes (restarted by a process manager) and partitions; waits that would close a cycle
fail at once; a wait on a slow agent ends at its time limit. Checked with the faults off:
each worker got each request exactly once, each supervisor turn ended with both answers,
and every request was answered (the harness's EveryRequestAnswered)."""

from __future__ import annotations

import ast
from collections import Counter
from typing import Any

import pytest
import trio

from kelpie_trio.llm.types import LlmRequest, LlmResponse
from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig
from kelpie_trio.sim.agent_scenarios import concurrent_turns
from kelpie_trio.sim.faults import (
    CRASH_FAULTS,
    LIVENESS_CRASH_BUDGET,
    NETWORK_FAULTS,
    STORAGE_FAULTS,
)
from kelpie_trio.sim.llm import SimLlmClient, send_message, tool_calls
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.sim.world import SimWorld
from tests.dst.agent_harness import AgentCluster, history_of, live_service, new_agent

# Node crashes capped at 12 a run (FaultConfig.budgets): seed 98 of the deep run drew 40,
# a crash every few seconds of virtual time, and a client's 100 tries all met one.
FAULTS = FaultConfig({**dict.fromkeys(STORAGE_FAULTS, 0.06), **dict.fromkeys(CRASH_FAULTS, 0.01),
                      **dict.fromkeys(NETWORK_FAULTS, 0.03)},
                     budgets=LIVENESS_CRASH_BUDGET)  # fmt: skip
TAKEOVER = RuntimeConfig(lease_ttl=3.0, renew_interval=1.0)
INCOMING = "[Incoming message from agent with ID '"
WAIT = "send_message_to_agent_and_wait_for_reply"
FAN = "send_message_to_agents_matching_tags"


def _role(request: LlmRequest) -> str:
    """Which agent asks: each is created with a system prompt naming its role."""
    system = request.messages[0].content or ""
    return system.split("ROLE:", 1)[1].split()[0]


def _last_incoming(request: LlmRequest) -> str | None:
    """The message another agent sent this turn (after the sender's tag), if any."""
    for message in reversed(request.messages):
        content = message.content or ""
        if INCOMING in content:
            return content.split("] ", 1)[1]
        if message.role == "user" and content and not content.startswith("{"):
            return None  # a user's message came later: not a turn another agent started
    return None


def _last_user(request: LlmRequest) -> str:
    for message in reversed(request.messages):
        content = message.content or ""
        if message.role == "user" and INCOMING not in content and not content.startswith("{"):
            return content
    raise AssertionError("no user message")


class Team:
    """Agents' roles -> ids, filled in once created; the script reads it."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def reply(self, request: LlmRequest) -> LlmResponse:
        role = _role(request)
        if role.startswith("worker"):
            task = _last_incoming(request)
            return send_message(f"{role} answers: {task}" if task else "ready")
        # The supervisor: ask both workers at once, then combine what they said. Read from
        # the turn's own messages: another turn's may follow them (one resumed after a crash).
        turn = _last_user(request)
        asked = f"task {turn} for worker"
        results = [m.content or "" for m in request.messages
                   if m.role == "tool" and asked in (m.content or "")]  # fmt: skip
        if results:
            return send_message("combined: " + " | ".join(results))
        return tool_calls(
            ("w1", WAIT, {"message": f"task {turn} for worker1",
                          "other_agent_id": self.ids["worker1"], "request_heartbeat": True}),
            ("w2", WAIT, {"message": f"task {turn} for worker2",
                          "other_agent_id": self.ids["worker2"], "request_heartbeat": True}),
        )  # fmt: skip


class FanOutTeam(Team):
    """The same team, the supervisor asking both workers by their tag in one call."""

    def reply(self, request: LlmRequest) -> LlmResponse:
        if _role(request) != "supervisor":
            return super().reply(request)
        turn = _last_user(request)
        asked = f"task {turn} for worker"
        results = [m.content or "" for m in request.messages
                   if m.role == "tool" and asked in (m.content or "")]  # fmt: skip
        if results:
            return send_message("combined: " + " | ".join(results))
        args = {"message": f"task {turn} for workers", "match_all": ["worker"],
                "match_some": [], "request_heartbeat": True}  # fmt: skip
        return tool_calls(("f", FAN, args))


class TeamCluster(AgentCluster):
    """The agent harness with the multi-agent wait limit of a scenario on every node."""

    def __init__(self, world: Any, *, wait_timeout: float = 60.0, **kw: Any) -> None:
        super().__init__(world, **kw)
        self.wait_timeout = wait_timeout

    def prepare_service(self, service: AgentService) -> None:
        service.agent_wait_timeout = self.wait_timeout  # type: ignore[attr-defined]


def simulate_team(
    seed: int, scenario: Any, faults: FaultConfig = FAULTS, **cluster: Any
) -> tuple[TeamCluster, Any]:
    async def main(world: SimWorld) -> tuple[TeamCluster, Any]:
        sim = TeamCluster(world, **cluster)
        world.faults.enabled = False
        async with trio.open_nursery() as nursery:
            await sim.start(nursery)
            result = await scenario(sim)
            sim.requests.check()
            nursery.cancel_scope.cancel()
        return sim, result

    return SimWorld(seed, faults).run(main)


async def _agent(service: AgentService, role: str, **fields: Any) -> str:
    return await new_agent(service, agent_type="memgpt_v2_agent", system=f"ROLE:{role} .",
                           **fields)  # fmt: skip


def _sent_to(history: list[Any], text: str) -> int:
    """How many input messages of a history carry `text` (the other agent's request)."""
    return sum(1 for m in history if m.role in ("user", "system") and text in (m.content or ""))


@pytest.mark.parametrize("how", ["two waits", "tag fan-out"])
def test_dst_a_supervisor_asks_two_workers_each_once_under_faults_and_crashes(how: str) -> None:
    restarts = Counter[int]()

    def one(seed: int) -> None:
        team = Team() if how == "two waits" else FanOutTeam()

        async def scenario(sim: TeamCluster) -> Any:
            home = sim.service("n0")
            for role in ("worker1", "worker2"):
                team.ids[role] = await _agent(home, role, tags=["worker"])
                # Each worker is active on the other node first: the supervisor's waits
                # go through the dispatcher to a node of their own.
                await sim.send(
                    "n1", team.ids[role], {"messages": [{"role": "user", "content": "hello"}]}
                )
            team.ids["supervisor"] = await _agent(
                home, "supervisor", include_multi_agent_tools=True
            )
            sim.world.faults.enabled = True
            replies = await concurrent_turns(sim, team.ids["supervisor"], clients=2, turns=2)
            sim.world.faults.enabled = False
            service = live_service(sim)
            histories = {r: await history_of(service, i) for r, i in team.ids.items()}
            return replies, histories

        sim, (replies, histories) = simulate_team(
            seed, scenario, nodes=2, script=[team.reply] * 400, config=TAKEOVER,
            resume_interval=2.0,
        )  # fmt: skip
        restarts[seed] = sum(node.incarnation - 1 for node in sim.nodes.values())
        assert len(replies) == 4
        for otid, reply in replies.items():
            assert reply["stop_reason"]["stop_reason"] == "end_turn", (otid, reply["stop_reason"])
            said = [
                m["content"] for m in reply["messages"] if m["message_type"] == "assistant_message"
            ]
            assert said, reply["messages"]
            for worker in ("worker1", "worker2"):
                task = f"task {otid} for {worker if how == 'two waits' else 'workers'}"
                assert f"{worker} answers: {task}" in said[-1], (otid, said)
                # The worker got the request once, whatever the retries, resumes and crashes.
                assert _sent_to(histories[worker], task) == 1, otid
        # Each wait's result is stored once in the supervisor's history.
        results = Counter((m.run_id, m.tool_call_id) for m in histories["supervisor"]
                          if m.role == "tool")  # fmt: skip
        assert results and all(n == 1 for n in results.values()), results

    run_seeds(one, 4)
    assert sum(restarts.values()), "no node crashed: the crash path was not run"


def test_dst_the_target_is_told_who_asked_and_the_reply_comes_back_in_letta_s_shape() -> None:
    team = Team()

    async def scenario(sim: TeamCluster) -> Any:
        home = sim.service("n0")
        for role in ("worker1", "worker2"):
            team.ids[role] = await _agent(home, role)
        boss = team.ids["supervisor"] = await _agent(home, "supervisor",
                                                     include_multi_agent_tools=True)  # fmt: skip
        reply = await sim.send("n0", boss, {"messages": [{"role": "user", "content": "t1"}]})
        return reply, await history_of(home, team.ids["worker1"])

    _, (reply, worker) = simulate_team(0, scenario, faults=FaultConfig({}), script=[team.reply] * 8)
    returns = [m for m in reply["messages"] if m["message_type"] == "tool_return_message"]
    w1 = team.ids["worker1"]
    assert returns[0]["status"] == "success"
    assert returns[0]["tool_return"] == str(
        {"agent_id": w1, "response": ["worker1 answers: task t1 for worker1"]}
    )
    told = [m for m in worker if m.role == "system" and INCOMING in (m.content or "")]
    assert [m.content for m in told] == [
        f"[Incoming message from agent with ID '{team.ids['supervisor']}' - your response "
        "will be delivered to the sender] task t1 for worker1"
    ]


class Ring:
    """Agents a0 -> a1 -> ... -> a(n-1) -> a0: each waits on the next; the one whose wait
    would close the ring gets a tool error and answers with it."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def reply(self, request: LlmRequest) -> LlmResponse:
        me = int(_role(request)[1:])
        if request.messages[-1].role == "tool":
            return send_message(f"a{me} got: {request.messages[-1].content}")
        target = self.ids[(me + 1) % len(self.ids)]
        return tool_calls(("c", WAIT, {"message": f"from a{me}", "other_agent_id": target,
                                       "request_heartbeat": True}))  # fmt: skip


def test_dst_a_cycle_of_waits_fails_at_once_and_every_turn_ends() -> None:
    for size in (2, 3):
        ring = Ring()

        async def scenario(sim: TeamCluster, size: int = size, ring: Ring = ring) -> Any:
            for i in range(size):  # spread over the two nodes
                service = sim.service(sim.names[i % 2])
                ring.ids.append(await _agent(service, f"a{i}", include_multi_agent_tools=True))
            started = trio.current_time()
            body = {"messages": [{"role": "user", "content": "go"}]}
            reply = await sim.send("n0", ring.ids[0], body)
            took = trio.current_time() - started
            histories = [await history_of(sim.service(), i) for i in ring.ids]
            return reply, took, histories

        # The wait limit is far above the harness's answer bound: a cycle that deadlocked
        # would show as a hang (EveryRequestAnswered), not be cut short by the limit.
        _, (reply, took, histories) = simulate_team(
            size, scenario, faults=FaultConfig({}), script=[ring.reply] * 20, nodes=2,
            wait_timeout=1000.0,
        )  # fmt: skip
        assert reply["stop_reason"]["stop_reason"] == "end_turn"
        assert took < 30.0, took
        last = histories[-1]  # the innermost wait: on a0, which waits already
        refused = [m for m in last if m.role == "tool" and m.tool_name == WAIT]
        assert [m.tool_status for m in refused] == ["error"], refused
        chain = " -> ".join([*ring.ids, ring.ids[0]])
        assert f"a cycle of waiting agents ({chain})" in refused[0].content
        # a0 got no second turn: the refused message was never sent.
        assert _sent_to(histories[0], "from a") == 0
        for history in histories[:-1]:  # the others got the answer from below
            assert [m.tool_status for m in history if m.tool_name == WAIT] == ["success"]


class SlowWorkerLlm(SimLlmClient):
    """The simulated model, taking `delay` seconds of virtual time for the worker."""

    delay = 50.0

    async def complete(self, request: LlmRequest) -> LlmResponse:
        if _role(request) == "worker1":
            await trio.sleep(self.delay)
        return await super().complete(request)


def test_dst_a_wait_on_a_slow_agent_ends_at_the_time_limit_as_a_tool_error() -> None:
    team = Team()

    def supervisor_or_worker(request: LlmRequest) -> LlmResponse:
        if _role(request) == "supervisor" and request.messages[-1].role != "tool":
            return tool_calls(("w1", WAIT, {"message": "slow task",
                                            "other_agent_id": team.ids["worker1"]}))  # fmt: skip
        if _role(request) == "supervisor":
            return send_message("the worker did not answer in time")
        return team.reply(request)

    async def scenario(sim: TeamCluster) -> Any:
        home = sim.service("n0")
        sim.llm.__class__ = SlowWorkerLlm  # the same seeded client, slow for the worker
        team.ids["worker1"] = await _agent(home, "worker1")
        boss = await _agent(home, "supervisor", include_multi_agent_tools=True)
        started = trio.current_time()
        reply = await sim.send("n0", boss, {"messages": [{"role": "user", "content": "t1"}]})
        took = trio.current_time() - started
        await trio.sleep(60.0)  # the worker's turn goes on, and ends, on its own
        return reply, took, await history_of(home, team.ids["worker1"])

    _, (reply, took, worker) = simulate_team(
        1, scenario, faults=FaultConfig({}), script=[supervisor_or_worker] * 8,
        wait_timeout=20.0,
    )  # fmt: skip
    returns = [m for m in reply["messages"] if m["message_type"] == "tool_return_message"]
    assert returns[0]["status"] == "error"
    assert "no reply from agent" in returns[0]["tool_return"]
    assert "within 20 s" in returns[0]["tool_return"]
    assert reply["stop_reason"]["stop_reason"] == "end_turn"
    assert 20.0 <= took < 30.0, took
    said = [m for m in worker if m.role == "assistant"]
    assert said, "the worker's turn did not go on after the wait ended"


def test_dst_a_tag_fan_out_asks_the_matching_agents_at_once_and_a_failure_keeps_its_slot() -> None:
    """worker1 is slow (its slot times out), worker2 answers, worker3 lacks a tag, and the
    supervisor, tagged too, is not asked; the two waits run at once."""
    team = Team()
    fan = "send_message_to_agents_matching_tags"

    def script(request: LlmRequest) -> LlmResponse:
        if _role(request) == "supervisor" and request.messages[-1].role != "tool":
            return tool_calls(("f", fan, {"message": "count", "match_all": ["team"],
                                          "match_some": ["a", "b"]}))  # fmt: skip
        if _role(request) == "supervisor":
            return send_message("done")
        return team.reply(request)

    async def scenario(sim: TeamCluster) -> Any:
        sim.llm.__class__ = SlowWorkerLlm
        for role, tags in (("worker1", ["team", "a"]), ("worker2", ["team", "b"]),
                           ("worker3", ["team"])):  # fmt: skip
            team.ids[role] = await _agent(sim.service(sim.names[len(team.ids) % 2]), role,
                                          tags=tags)  # fmt: skip
        boss = await _agent(sim.service("n0"), "supervisor", include_multi_agent_tools=True,
                            tags=["team", "a", "b"])  # fmt: skip
        started = trio.current_time()
        reply = await sim.send("n0", boss, {"messages": [{"role": "user", "content": "t"}]})
        return reply, trio.current_time() - started

    _, (reply, took) = simulate_team(
        2, scenario, faults=FaultConfig({}), script=[script] * 12, nodes=2, wait_timeout=20.0
    )
    returns = [m for m in reply["messages"] if m["message_type"] == "tool_return_message"]
    assert returns[0]["status"] == "success"
    slots = {s["agent_id"]: s["response"] for s in ast.literal_eval(returns[0]["tool_return"])}
    assert set(slots) == {team.ids["worker1"], team.ids["worker2"]}
    assert slots[team.ids["worker2"]] == ["worker2 answers: count"]
    [error] = slots[team.ids["worker1"]]
    assert error.startswith("<error: no reply from agent") and "within 20 s" in error
    assert took < 30.0, took  # at once: one time limit, not one per agent


def test_dst_an_async_send_starts_the_target_s_turn_once_and_an_unknown_agent_is_a_tool_error() -> (
    None
):
    sent = "send_message_to_agent_async"
    team = Team()

    def script(request: LlmRequest) -> LlmResponse:
        if _role(request) == "supervisor" and request.messages[-1].role != "tool":
            return tool_calls(
                ("a1", sent, {"message": "fyi", "other_agent_id": team.ids["worker1"]}),
                ("a2", sent, {"message": "fyi", "other_agent_id": "agent-nobody"}),
                ("a3", WAIT, {"message": "hi", "other_agent_id": "agent-nobody"}),
            )
        if _role(request) == "supervisor":
            return send_message("done")
        return team.reply(request)

    async def scenario(sim: TeamCluster) -> Any:
        home = sim.service("n0")
        team.ids["worker1"] = await _agent(home, "worker1")
        boss = await _agent(home, "supervisor", include_multi_agent_tools=True)
        reply = await sim.send("n0", boss, {"messages": [{"role": "user", "content": "t"}]})
        await trio.sleep(10.0)  # the worker's background turn
        return reply, boss, await history_of(home, team.ids["worker1"])

    _, (reply, boss, worker) = simulate_team(
        3, scenario, faults=FaultConfig({}), script=[script] * 12, resume_interval=2.0
    )
    returns = [(m["status"], m["tool_return"]) for m in reply["messages"]
               if m["message_type"] == "tool_return_message"]  # fmt: skip
    assert returns[0] == ("success", "Successfully sent message")
    assert returns[1] == ("error", "no agent with id 'agent-nobody' exists")
    assert returns[2] == ("error", "no agent with id 'agent-nobody' exists")
    told = [m.content for m in worker if m.role == "system"]
    assert told == [f"[Incoming message from agent with ID '{boss}' - this is a one-way "
                    "notification; to answer, message the sender with an agent-to-agent tool "
                    "if you have one] fyi"]  # fmt: skip
    assert [m for m in worker if m.role == "assistant"], "the worker's turn did not run"
