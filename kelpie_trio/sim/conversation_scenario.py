"""The `conversations` scenario: one agent talks in four threads at once (its default
conversation and three others), each thread's turns editing the agent's memory block
`notes`, through any of two nodes, under storage faults, crashes and panics. Three threads
share the agent's block; the last isolates it (its own copy, Letta's isolated blocks).

Every turn's model reply appends the turn's otid to `notes` (`memory_insert`), then
answers. With the faults off, it checks on the real actor's
stored state:

- NoAckedMessageLost / ExactlyOnce per thread: each thread's history is whole (positions
  0..n-1, no message twice), holds every answered send of that thread once, and only
  those; every answer's messages are stored in its own thread.
- NoLostEdit / EditOnce across threads: every turn whose answer shows its memory edit
  succeeded left its otid in the block its thread sees, and no otid is there twice (a
  retried step never edits twice; two threads' concurrent edits never overwrite each
  other); the isolated thread's edits are in its copy only, the others' in the shared
  block only.
- Isolation: no thread holds another thread's sends.
- RunsFinish: once every turn is answered, no run is left open in any thread.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
import trio

from kelpie_trio.llm.types import LlmRequest, LlmResponse
from kelpie_trio.service import AgentService
from kelpie_trio.sim.agent_scenarios import TAKEOVER, TURN_STOPS, _fail, _open_entries, _whole
from kelpie_trio.sim.agents import (
    CLEAN,
    AgentCluster,
    cluster_main,
    history_of,
    live_service,
    new_agent,
    restart_crashed,
)
from kelpie_trio.sim.faults import (
    CRASH_FAULTS,
    LIVENESS_CRASH_BUDGET,
    STORAGE_FAULTS,
    FaultConfig,
    FaultType,
)
from kelpie_trio.sim.llm import text, tool_call
from kelpie_trio.sim.world import SimWorld

__all__ = ["CONVERSATION_FAULTS", "ConversationsReport", "conversations"]

CONVERSATION_FAULTS = FaultConfig(
    {
        **dict.fromkeys(STORAGE_FAULTS, 0.03),
        **dict.fromkeys(CRASH_FAULTS, 0.01),
        FaultType.AGENT_LOOP_PANIC: 0.02,
        FaultType.LLM_FAILURE: 0.03,
    },
    # Up to 12 node crashes a run (seeds draw 0-12; 24 in seed 320 before the cap, when
    # every try of one client met a crash and none could be answered).
    budgets=LIVENESS_CRASH_BUDGET,
)
THREADS = 4  # the default conversation and three others, the last with its own `notes`
TURNS = 3


def note_then_answer(request: LlmRequest) -> LlmResponse:
    """Note the turn's otid in the shared block, then answer: chosen by the request (its
    last message), so a call a fault cut short does not shift the turn."""
    last = request.messages[-1]
    step = f"{len(request.messages)}"
    if last.role == "tool":
        return text(f"noted ({step})")
    otid = str(last.content)
    return tool_call("memory_insert", {"label": "notes", "new_str": otid,
                                       "request_heartbeat": True}, call_id=f"n{step}")  # fmt: skip


@attrs.define
class ConversationsReport:
    replies: dict[str, tuple[str, dict]]  # otid -> (thread, answer)
    histories: dict[str, list[Any]]  # thread -> stored history
    notes: str  # the shared block
    own_notes: str  # the isolated thread's copy
    restarts: int
    open_entries: list[Any]  # runs' open entries left when every turn was answered

    def summary(self) -> str:
        sizes = ", ".join(f"{len(h)}" for h in self.histories.values())
        return (
            f"conversations: {len(self.replies)} turns answered in {len(self.histories)} "
            f"threads (histories of {sizes} messages), {self.restarts} node restarts, "
            f"{len(self.notes.splitlines())} notes in the shared block, "
            f"{len(self.own_notes.splitlines())} in the isolated copy"
        )


async def _send_in(service: AgentService, thread: str, body: dict) -> dict:
    """A send into a thread, as the conversation route makes it."""
    named = await service.resolve(thread)
    return await service.send_message(named.agent_id, body, conversation=named.conversation)


async def _send_anywhere(sim: AgentCluster, thread: str, body: dict, first: int) -> dict:
    """Through the nodes in turn until one answers (a clean error is retried)."""
    for attempt in range(100):
        name = sim.names[(first + attempt) % len(sim.names)]
        if sim.nodes[name].crashed:
            await trio.sleep(0.5)
            continue
        service = sim.services[name]
        try:
            return await sim.call(
                f"send to {thread} via {name}", sim.on_node, name, _send_in, service, thread, body
            )
        except CLEAN:
            pass
        await trio.sleep(0.5)
    raise AssertionError(f"no answer from {thread} after 100 tries")


async def conversations(world: SimWorld) -> ConversationsReport:
    async def scenario(sim: AgentCluster) -> ConversationsReport:
        home = sim.service("n0")
        agent = await new_agent(
            home,
            tools=["memory_insert"],
            memory_blocks=[{"label": "notes", "value": "", "limit": 20_000}],
        )
        threads = [agent]
        for i in range(1, THREADS):
            body = {"isolated_block_labels": ["notes"]} if i == THREADS - 1 else {}
            made = await home.create_conversation(agent, body)
            threads.append(made["id"])
        copy_id = made["isolated_block_ids"][0]
        replies: dict[str, tuple[str, dict]] = {}

        async def client(c: int) -> None:
            for i in range(TURNS):
                otid = f"t{c}-{i}"
                body = {"messages": [{"role": "user", "content": otid, "otid": otid}],
                        "max_steps": 4}  # fmt: skip
                replies[otid] = (threads[c], await _send_anywhere(sim, threads[c], body, c + i))

        sim.world.faults.enabled = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(restart_crashed, sim)
            async with trio.open_nursery() as group:
                for c in range(THREADS):
                    group.start_soon(client, c)
            nursery.cancel_scope.cancel()
        sim.world.faults.enabled = False
        live = live_service(sim)
        histories = {t: await history_of(live, t) for t in threads}
        view = await live.get_agent(agent)
        notes = next(b.value for b in view.blocks if b.label == "notes")
        own = (await live.get_block(copy_id)).value
        restarts = sum(node.incarnation - 1 for node in sim.nodes.values())
        left = await _open_entries(live)
        return ConversationsReport(replies, histories, notes, own, restarts, left)

    report = await cluster_main(
        scenario, quiet_start=True, nodes=2, script=[note_then_answer] * 400,
        config=TAKEOVER, resume_interval=2.0,
    )(world)  # fmt: skip
    _fail(world, check_conversations(report))
    return report


def check_conversations(report: ConversationsReport) -> list[str]:
    problems: list[str] = []
    if report.open_entries:  # every turn was answered: every run is finished, in its thread
        problems.append(f"RunsFinish: {len(report.open_entries)} open-run entries left")
    for thread, history in report.histories.items():
        problems += _whole(thread, history)
        sends = Counter(m.content for m in history if m.role == "user" and m.otid is not None)
        answered = {otid for otid, (t, _) in report.replies.items() if t == thread}
        if set(sends) != answered:
            problems.append(f"NoAckedMessageLost: {thread} stored sends {sorted(sends)} "
                            f"!= answered {sorted(answered)}")  # fmt: skip
        twice = sorted(otid for otid, n in sends.items() if n > 1)
        if twice:
            problems.append(f"ExactlyOnce: {thread} stored sends twice: {twice}")
        stored = {m.id for m in history}
        for otid in answered:
            reply = report.replies[otid][1]
            if not {m["id"] for m in reply["messages"]} <= stored:
                problems.append(f"NoAckedMessageLost: the answer to {otid} is not all "
                                f"stored in {thread}")  # fmt: skip
            if reply["stop_reason"]["stop_reason"] not in TURN_STOPS:
                problems.append(f"{otid} stopped with {reply['stop_reason']}")
    isolated = list(report.histories)[-1]
    blocks = {"the shared block": report.notes, "the isolated copy": report.own_notes}
    notes = {name: Counter(line for line in value.splitlines() if line)
             for name, value in blocks.items()}  # fmt: skip
    for name, seen in notes.items():
        twice = sorted(otid for otid, n in seen.items() if n > 1)
        if twice:
            problems.append(f"EditOnce: {name} holds {twice} more than once")
    for otid, (thread, reply) in report.replies.items():
        # memory_insert is the one tool whose return shows (the answer is plain text)
        edited = any(m["message_type"] == "tool_return_message" and m["status"] == "success"
                     for m in reply["messages"])  # fmt: skip
        mine = "the isolated copy" if thread == isolated else "the shared block"
        if edited and otid not in notes[mine]:
            problems.append(f"NoLostEdit: {otid}'s memory edit is not in {mine}")
        for name, seen in notes.items():
            if name != mine and otid in seen:
                problems.append(f"Isolation: {otid} of {thread} edited {name}")
    unknown = sorted(set(notes["the shared block"]) | set(notes["the isolated copy"]))
    unknown = [otid for otid in unknown if otid not in report.replies]
    if unknown:
        problems.append(f"EditOnce: a block holds edits of unanswered turns {unknown}")
    return problems
