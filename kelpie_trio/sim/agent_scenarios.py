"""Named scenarios on the real agent server (kelpie_trio/sim/agents.py), run by
`kelpie-trio sim --scenario NAME` and by the DST tests that carry the same name.

Each is `async def scenario(world) -> report`: it builds its cluster, drives clients
against it under the world's faults, then, with the faults off, checks what is stored
and raises InvariantViolation when a guarantee broke. The harness adds its own checks
to every run (activations, fenced and superseded writes, requests that hang). A
report's `summary()` is what the command prints.

- `turns`: clients send turns with otids through any of two nodes, retrying until
  answered; the agent calls a custom tool each step.
- `chaos`: the same on three nodes under every fault of the table, crashed nodes
  restarted by a process manager.
- `sessions`: crashes at every await point of an iteration (storage-level crashes
  before, during and after commits), with the LLM failing now and then.
- `transfer`: a session moves between agents on two nodes while the source or the
  target crashes, or the nodes are partitioned.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
import trio

from kelpie_trio.agent.runs import OPEN_RUNS
from kelpie_trio.errors import Conflict, NotFound
from kelpie_trio.llm.types import LlmRequest, LlmResponse
from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.service import AgentService
from kelpie_trio.sim.agents import (
    CLEAN,
    AgentCluster,
    cluster_main,
    history_of,
    live_service,
    new_agent,
    restart_crashed,
    send_anywhere,
    wait_until,
)
from kelpie_trio.sim.faults import CRASH_FAULTS, STORAGE_FAULTS, FaultConfig, FaultType, preset
from kelpie_trio.sim.invariants import InvariantViolation
from kelpie_trio.sim.llm import send_message, tool_call
from kelpie_trio.sim.world import SimWorld
from kelpie_trio.storage.base import Transaction

__all__ = [
    "CHAOS_FAULTS",
    "SESSIONS_FAULTS",
    "TRANSFER_FAULTS",
    "TURNS_FAULTS",
    "SessionsReport",
    "TransferReport",
    "TurnsReport",
    "chaos",
    "sessions",
    "transfer",
    "turns",
]

ROLL = '''
def roll(n: int) -> int:
    """Roll.

    Args:
        n: which roll
    """
    return n
'''
TAKEOVER = RuntimeConfig(lease_ttl=3.0, renew_interval=1.0)
TURN_STOPS = ("end_turn", "max_steps", "llm_api_error", "error")

TURNS_FAULTS = FaultConfig(
    {
        **dict.fromkeys(STORAGE_FAULTS, 0.03),
        FaultType.LLM_FAILURE: 0.05,
        FaultType.LLM_TIMEOUT: 0.02,
        FaultType.LLM_RATE_LIMITED: 0.05,
        FaultType.AGENT_LOOP_PANIC: 0.01,
        FaultType.TOOL_TIMEOUT: 0.05,
        FaultType.TOOL_FAIL: 0.05,
    }
)
# The chaos preset plus a disk that fills now and then, tools failing often, and panics
# often enough (the preset's 1 % of ~12 deliveries a seed fired in about half of the
# default six-seed sweeps) that every fault fires in the sweep the chaos DST checks.
CHAOS_FAULTS = preset("chaos").with_rates(
    {
        FaultType.STORAGE_FULL: 0.003,
        FaultType.TOOL_TIMEOUT: 0.1,
        FaultType.TOOL_FAIL: 0.1,
        FaultType.AGENT_LOOP_PANIC: 0.08,
    }
)
SESSIONS_FAULTS = FaultConfig(
    {
        **dict.fromkeys(CRASH_FAULTS, 0.02),
        **dict.fromkeys(STORAGE_FAULTS, 0.02),
        FaultType.LLM_FAILURE: 0.05,
        FaultType.LLM_TIMEOUT: 0.02,
    }
)
TRANSFER_FAULTS = FaultConfig(
    {**dict.fromkeys(STORAGE_FAULTS, 0.05), FaultType.NETWORK_DELAY: 0.2,
     FaultType.LLM_FAILURE: 0.05}
)  # fmt: skip


def _fail(world: SimWorld, problems: list[str]) -> None:
    if problems:
        raise InvariantViolation(f"seed {world.seed}: " + "; ".join(problems[:10]))


def _whole(agent: str, history: list[Any]) -> list[str]:
    """NoAckedMessageLost's shape of a history: positions 0..n-1, no message twice."""
    problems = []
    seqs = [m.seq for m in history]
    if seqs != list(range(len(history))):
        problems.append(f"NoAckedMessageLost: {agent}'s history has gaps: {seqs[:30]}")
    if len({m.id for m in history}) != len(history):
        problems.append(f"NoAckedMessageLost: {agent}'s history has a message twice")
    return problems


# -- turns and chaos ------------------------------------------------------------------


def roll_then_answer(request: LlmRequest) -> LlmResponse:
    """Roll once, then answer: chosen by the request (its last message), not by call order,
    so a call that a fault cut short does not shift the turn; call ids unique per step."""
    step = f"{len(request.messages)}"
    if request.messages[-1].role == "tool":
        return send_message(f"rolled ({step})", call_id=f"s{step}")
    return tool_call("roll", {"n": len(request.messages), "request_heartbeat": True},
                     call_id=f"r{step}")  # fmt: skip


@attrs.define
class TurnsReport:
    replies: dict[str, dict]
    history: list[Any]
    fired: Counter[FaultType]
    requests: dict[str, int]
    restarts: int

    def summary(self) -> str:
        users = sum(1 for m in self.history if m.role == "user")
        return (
            f"turns: {len(self.replies)} answered, {len(self.history)} messages stored "
            f"({users} user), requests {self.requests}, {self.restarts} node restarts"
        )


async def concurrent_turns(
    sim: AgentCluster, agent: str, *, clients: int, turns: int
) -> dict[str, dict]:
    """`clients` clients send `turns` messages each to one agent, through every node in
    turn, each with an otid (its content too) and retried until answered, while a process
    manager restarts crashed nodes; the replies by otid."""
    replies: dict[str, dict] = {}

    async def client(c: int) -> None:
        for i in range(turns):
            otid = f"o{c}-{i}"
            body = {"messages": [{"role": "user", "content": otid, "otid": otid}],
                    "max_steps": 6}  # fmt: skip
            replies[otid] = await send_anywhere(sim, agent, body, first=c + i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(restart_crashed, sim)
        async with trio.open_nursery() as group:
            for c in range(clients):
                group.start_soon(client, c)
        nursery.cancel_scope.cancel()
    return replies


async def _turns(
    world: SimWorld, *, nodes: int, clients: int, turns: int, config: RuntimeConfig
) -> TurnsReport:
    async def scenario(sim: AgentCluster) -> TurnsReport:
        home = sim.service("n0")
        tool = await home.create_tool({"source_code": ROLL})
        agent = await new_agent(home, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
        sim.world.faults.enabled = True
        replies = await concurrent_turns(sim, agent, clients=clients, turns=turns)
        sim.world.faults.enabled = False
        restarts = sum(node.incarnation - 1 for node in sim.nodes.values())
        history = await history_of(live_service(sim), agent)
        return TurnsReport(replies, history, Counter(sim.world.faults.fired),
                           sim.requests.counts(), restarts)  # fmt: skip

    report = await cluster_main(
        scenario, quiet_start=True, nodes=nodes, script=[roll_then_answer] * 400,
        config=config, resume_interval=2.0,
    )(world)  # fmt: skip
    _fail(world, check_turns(report))
    return report


def check_turns(report: TurnsReport) -> list[str]:
    """Every answered send is stored once, retries or not; every answer's messages are
    stored; the history is whole."""
    history = report.history
    problems = _whole("the agent", history)
    users = Counter(m.content for m in history  # the sends, not the heartbeat notes
                    if m.role == "user" and not m.content.startswith("{"))  # fmt: skip
    if set(users) != set(report.replies):
        problems.append(f"NoAckedMessageLost: sends stored {sorted(users)} "
                        f"!= answered {sorted(report.replies)}")  # fmt: skip
    twice = sorted(otid for otid, count in users.items() if count > 1)
    if twice:
        problems.append(f"ExactlyOnce: sends stored more than once: {twice}")
    stored = {m.id for m in history}
    for otid, reply in report.replies.items():
        if not {m["id"] for m in reply["messages"]} <= stored:
            problems.append(f"NoAckedMessageLost: the answer to {otid} is not all stored")
        if reply["stop_reason"]["stop_reason"] not in TURN_STOPS:
            problems.append(f"{otid} stopped with {reply['stop_reason']}")
    return problems


async def turns(world: SimWorld) -> TurnsReport:
    return await _turns(world, nodes=2, clients=2, turns=3, config=TAKEOVER)


async def chaos(world: SimWorld) -> TurnsReport:
    return await _turns(world, nodes=3, clients=3, turns=4, config=TAKEOVER)


# -- sessions: crashes at every await point of an iteration ----------------------------


@attrs.define
class SessionsReport:
    replies: list[dict]
    history: list[Any]
    crashes: int
    nodes_crashed: int  # nodes that crashed at least once
    requests: dict[str, int]

    def summary(self) -> str:
        return (
            f"sessions: {len(self.replies)} turns answered, {len(self.history)} messages, "
            f"{self.crashes} node crashes, requests {self.requests}"
        )


async def sessions(world: SimWorld) -> SessionsReport:
    async def scenario(sim: AgentCluster) -> SessionsReport:
        agent = await new_agent(sim.service("n0"), agent_type="memgpt_v2_agent")
        sim.world.faults.enabled = True
        replies = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(restart_crashed, sim)
            for i in range(3):
                body = {"messages": [{"role": "user", "content": f"m{i}", "otid": f"o{i}"}],
                        "max_steps": 10}  # fmt: skip
                replies.append(await send_anywhere(sim, agent, body))
            nursery.cancel_scope.cancel()
        sim.world.faults.enabled = False
        crashes = sum(node.incarnation - 1 for node in sim.nodes.values())
        nodes_crashed = sum(1 for node in sim.nodes.values() if node.incarnation > 1)
        history = await history_of(live_service(sim), agent)
        return SessionsReport(replies, history, crashes, nodes_crashed, sim.requests.counts())

    report = await cluster_main(
        scenario, quiet_start=True, nodes=2, config=TAKEOVER, resume_interval=2.0
    )(world)
    problems = _whole("the agent", report.history)
    users = [m.content for m in report.history if m.role == "user"]
    if users != ["m0", "m1", "m2"]:
        problems.append(f"NoAckedMessageLost: user messages stored {users}")
    for reply in report.replies:
        run_id = reply["usage"]["run_ids"][0]
        steps = [m.step for m in report.history if m.run_id == run_id and m.role == "assistant"]
        if steps != list(range(1, len(steps) + 1)):
            problems.append(f"ResumePoint: run {run_id} steps {steps}: an iteration twice")
        if reply["stop_reason"]["stop_reason"] not in ("end_turn", "max_steps", "llm_api_error"):
            problems.append(f"run {run_id} stopped with {reply['stop_reason']}")
    _fail(world, problems)
    return report


# -- transfer under faults -------------------------------------------------------------


@attrs.define
class TransferReport:
    chaos: str
    outcome: str
    source: str
    target: str
    run: Any
    histories: dict[str, list[Any]]
    open_entries: list[Any]
    network_messages: int = 0  # node-to-node messages the simulated network delivered

    def summary(self) -> str:
        return (
            f"transfer: chaos={self.chaos} outcome={self.outcome}; the session ended on "
            f"{'the target' if self.run.agent_id == self.target else 'the source'}; "
            f"{self.network_messages} node-to-node messages"
        )


async def _crash_later(sim: AgentCluster, name: str, delay: float) -> None:
    await trio.sleep(delay)
    if not sim.nodes[name].crashed:
        sim.crash(name)


async def _settled(service: AgentService, run_id: str) -> bool:
    try:
        return (await service.get_run_record(run_id)).finished
    except CLEAN:
        return False


async def _open_entries(service: AgentService) -> list:
    async def read(tr: Transaction) -> list:
        return await tr.get_prefix(OPEN_RUNS.key())

    return await service.store.transact(read)


SESSION_STEPS = 8  # a transferred session's steps: long enough to be moved midway


def long_session(request: LlmRequest) -> LlmResponse:
    """Search with a heartbeat, step after step, then answer: chosen by the request (the
    steps since its last user message), so a call a fault cut short does not shift it."""
    since, said = 0, ""
    for message in reversed(request.messages):
        if message.role == "user" and not str(message.content).startswith("{"):
            said = str(message.content)
            break  # the input (heartbeat notes are user-role JSON)
        since += message.role == "assistant"
    step = f"{len(request.messages)}"
    if since >= SESSION_STEPS or said == "wake up":
        return send_message(f"done ({step})", call_id=f"s{step}")
    return tool_call("conversation_search", {"query": step, "request_heartbeat": True},
                     call_id=f"q{step}")  # fmt: skip


async def transfer(world: SimWorld) -> TransferReport:
    async def scenario(sim: AgentCluster) -> TransferReport:
        # Steps of 0.2-0.4 s: the transfer, asked within the first second, finds the
        # session running (it used to have finished first in most seeds).
        sim.llm.latency = (0.2, 0.4)
        a_node, b_node = sim.service("n0"), sim.service("n1")
        source = await new_agent(a_node, agent_type="memgpt_v2_agent")
        target = await new_agent(b_node, agent_type="memgpt_v2_agent")
        await b_node.send_message(target, {"input": "wake up"})  # the target lives on n1
        started = await a_node.send_async(source, {"input": "go", "max_steps": 12})
        sim.world.faults.enabled = True
        await trio.sleep(sim.world.rng("when").uniform(0.0, 1.0))
        rng = sim.world.rng("what")
        chaos = rng.choice(["none", "crash-source", "crash-target", "partition"])
        if chaos == "partition":
            sim.network.partition(sim.nodes["n0"].id, sim.nodes["n1"].id, duration=5)
        outcome = "?"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(restart_crashed, sim)
            if chaos.startswith("crash"):
                victim = "n0" if chaos == "crash-source" else "n1"
                nursery.start_soon(_crash_later, sim, victim, rng.uniform(0, 1))
            for _ in range(20):
                # Asked of n1, which does not run the session: the handoff crosses nodes.
                asked = sim.service("n1") if not sim.nodes["n1"].crashed else live_service(sim)
                try:
                    await sim.call("transfer", asked.transfer_session,
                                   source, started["id"], {"target_agent_id": target})  # fmt: skip
                    outcome = "moved"
                    break
                except (Conflict, NotFound) as refused:
                    outcome = type(refused).__name__  # finished first, or moved already
                    break
                except CLEAN:
                    await trio.sleep(1)
            sim.world.faults.enabled = False
            sim.network.heal()
            await wait_until(lambda: _settled(live_service(sim), started["id"]), every=0.5)
            nursery.cancel_scope.cancel()
        service = live_service(sim)
        return TransferReport(
            chaos, outcome, source, target, await service.get_run_record(started["id"]),
            {source: await history_of(service, source),
             target: await history_of(service, target)},
            await _open_entries(service), sim.network.delivered,
        )  # fmt: skip

    report = await cluster_main(
        scenario, quiet_start=True, nodes=2, config=TAKEOVER, resume_interval=2.0,
        script=[long_session] * 400,
    )(world)  # fmt: skip
    _fail(world, check_transfer(report))
    return report


def check_transfer(report: TransferReport) -> list[str]:
    """The session ended in one place, whole, each iteration once, and what happened at
    the source came along in order."""
    run, source, target = report.run, report.source, report.target
    problems = []
    if not run.finished or report.open_entries:
        problems.append("the session did not end, or is still open somewhere")
    if run.agent_id not in (source, target):
        problems.append(f"the session ended on {run.agent_id}, neither source nor target")
        return problems
    if report.outcome == "moved" and run.agent_id != target:
        problems.append("the transfer was acknowledged but the session is not at the target")
    for agent, history in report.histories.items():
        problems += _whole(agent, history)
    session = [m for m in report.histories[run.agent_id] if m.run_id == run.id]
    steps = [m.step for m in session if m.role == "assistant"]
    if steps != list(range(1, len(steps) + 1)):
        problems.append(f"ResumePoint: the session's steps {steps}")
    if run.agent_id == target:
        at_source = [m.id for m in report.histories[source] if m.run_id == run.id]
        if [m.id for m in session[: len(at_source)]] != at_source:
            problems.append("the target's copy of the session differs from the source's")
    return problems
