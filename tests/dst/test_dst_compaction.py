"""Compaction on demand (POST /v1/agents/{id}/summarize) in the simulator: a client
compacts again and again while another sends messages, on two nodes whose store fails
and whose processes crash (and come back).

What must hold at the end, whatever the faults did:
- no acknowledged message is lost: every message the sender got an answer for is
  stored, once;
- the summary is stored once per compaction, and the context's start never moves past
  a message the stored summary does not cover: the summary names exactly the messages
  before the start (the scripted model folds the previous summary and the evicted
  messages into the list of their markers; the recap fallback keeps them too), and the
  record's count of evicted messages is the number of messages before the start;
- every request is answered or fails cleanly (the harness's EveryRequestAnswered), and
  every write of the context record is fenced by the agent's lease (FencedWrites and
  SingleActivation, checked on every commit by the simulated store).
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from typing import Any

import trio

from kelpie_trio.agent.context import AgentContext
from kelpie_trio.agent.window import read_context
from kelpie_trio.llm.types import LlmRequest, LlmResponse
from kelpie_trio.sim import FaultConfig, FaultType
from kelpie_trio.sim.agent_scenarios import TAKEOVER
from kelpie_trio.sim.faults import CRASH_FAULTS, STORAGE_FAULTS
from kelpie_trio.sim.llm import text
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage.base import Transaction
from tests.dst.agent_harness import (
    CLEAN,
    AgentCluster,
    history_of,
    new_agent,
    restart_crashed,
    revived_service,
    send_anywhere,
    simulate_cluster,
)

MESSAGES = 8
MARKER = re.compile(r"\bm\d+\b")
FAULTS = FaultConfig(
    {
        **dict.fromkeys(CRASH_FAULTS, 0.01),
        **dict.fromkeys(STORAGE_FAULTS, 0.03),
        FaultType.LLM_FAILURE: 0.05,
    }
)


def is_summary(request: LlmRequest) -> bool:
    return "You maintain the memory" in (request.messages[0].content or "")


def responder(request: LlmRequest) -> LlmResponse:
    if is_summary(request):  # the markers of the previous summary and the evicted messages
        return text(" ".join(MARKER.findall(request.messages[1].content or "")))
    return text("ok")


async def compact_anywhere(sim: AgentCluster, agent: str, answers: list[dict]) -> None:
    """A client that asks for a compaction every second, through the nodes in turn; a
    clean error (a crash, too little to compact) is fine, a hang fails the run."""
    for attempt in range(1000):
        await trio.sleep(1.0)
        name = sim.names[attempt % len(sim.names)]
        if sim.nodes[name].crashed:
            continue
        service = sim.services[name]
        with contextlib.suppress(*CLEAN):
            answers.append(
                await sim.call(f"compact {agent} via {name}", sim.on_node, name,
                               service.compact_messages, agent, {})
            )  # fmt: skip


def compacting_while_sending(seed: int) -> tuple[list, list, AgentContext, list, int]:
    async def scenario(sim: AgentCluster) -> Any:
        agent = await new_agent(sim.service("n0"))
        sim.world.faults.enabled = True
        answers: list[dict] = []
        replies = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(restart_crashed, sim)
            nursery.start_soon(compact_anywhere, sim, agent, answers)
            for i in range(MESSAGES):
                body = {"messages": [{"role": "user", "content": f"m{i}", "otid": f"o{i}"}]}
                replies.append(await send_anywhere(sim, agent, body, first=i))
                await trio.sleep(0.7)
            await trio.sleep(3.0)  # a last compaction or two after the last turn
            nursery.cancel_scope.cancel()
        sim.world.faults.enabled = False
        service = await revived_service(sim)  # every node may be down right now (seed 45)

        async def read(tr: Transaction) -> AgentContext:
            return (await read_context(tr, agent))[0]

        context = await service.store.transact(read)
        history = await history_of(service, agent)
        crashes = sum(node.incarnation - 1 for node in sim.nodes.values())
        return replies, answers, context, history, crashes

    return simulate_cluster(
        seed, scenario, FAULTS, quiet_start=True, nodes=2, config=TAKEOVER,
        resume_interval=2.0, script=[responder] * 400,
    )  # fmt: skip


def check(replies: list, answers: list, context: AgentContext, history: list) -> None:
    users = [m.content for m in history if m.role == "user"]
    assert users == [f"m{i}" for i in range(MESSAGES)], f"NoAckedMessageLost: {users}"
    assert len(replies) == MESSAGES
    before = [m for m in history if m.seq < context.start_seq and m.role != "approval"]
    summarized = set(MARKER.findall(context.summary or ""))
    expected = {m.content for m in before if m.role == "user"}
    assert summarized == expected, (
        f"the context starts at {context.start_seq}: messages before it {sorted(expected)}, "
        f"the summary covers {sorted(summarized)}"
    )
    assert context.evicted == len(before), f"evicted {context.evicted}, {len(before)} before"
    for answer in answers:
        assert answer["num_messages_after"] < answer["num_messages_before"] + 1
        assert set(MARKER.findall(answer["summary"])) <= {f"m{i}" for i in range(MESSAGES)}


def test_dst_compaction_on_demand_under_faults_and_crashes() -> None:
    seen: Counter[str] = Counter()

    def one(seed: int) -> None:
        replies, answers, context, history, crashes = compacting_while_sending(seed)
        check(replies, answers, context, history)
        seen["compactions"] += len(answers)
        seen["crashes"] += crashes
        seen["moved"] += context.start_seq > 0

    if run_seeds(one, 8) > 1:  # a replayed seed may compact nothing
        assert seen["compactions"] >= 8 and seen["moved"] >= 6, seen
        assert seen["crashes"] >= 2, seen  # crashes really happened


def test_dst_a_compaction_delivered_twice_compacts_once() -> None:
    """Delivery to an actor is at least once (a forward whose reply was lost is sent
    again): the same request, again and after a crash and restart of its node, gets the
    first answer back, and nothing is summarized or moved a second time."""

    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service("n0")
        agent = await new_agent(service)
        for i in range(6):
            await service.send_message(agent, {"input": f"m{i}"})
        request = {"kind": "compact", "request_id": "compaction-1", "share": 0.3}
        first = await service.dispatcher.invoke(agent, request)
        asked = len([r for r in sim.llm.requests if is_summary(r)])
        again = await service.dispatcher.invoke(agent, request)
        sim.crash("n0")
        await trio.sleep(5.0)  # its lease runs out
        service = await sim.start_node("n0")
        after_restart = await service.dispatcher.invoke(agent, request)

        async def read(tr: Transaction) -> AgentContext:
            return (await read_context(tr, agent))[0]

        context = await service.store.transact(read)
        summaries = len([r for r in sim.llm.requests if is_summary(r)])
        return first, again, after_restart, asked, summaries, context

    first, again, after_restart, asked, summaries, context = simulate_cluster(
        3, scenario, "none", config=TAKEOVER, script=[responder] * 20
    )
    assert first == again == after_restart
    assert first["compaction"]["summary"] == "m0 m1"  # 4 of 12 messages: m0, ok, m1, ok
    assert asked == summaries == 1
    assert (context.start_seq, context.evicted) == (4, 4)
