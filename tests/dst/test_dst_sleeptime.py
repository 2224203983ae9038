"""Sleeptime agents against the real agent actor in the simulator (agent/sleeptime.py,
service/sleeptime.py): a primary with a companion at frequency 2 takes 6 turns on two
nodes under storage faults and node crashes (restarted by a process manager). Checked with
the faults off: the companion ran exactly 3 times (one run per idempotency key, each key a
primary's 2nd, 4th, 6th turn), each on the part of the transcript it had not seen, its
block edits in the primary's next prompt; the primary's turns never waited for it (its
model is slow, the primary's turns are not)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import trio

from kelpie_trio.agent import runs, sleeptime
from kelpie_trio.agent.sleeptime import SLEEPTIME_SYSTEM, trigger_key
from kelpie_trio.llm.types import LlmRequest, LlmResponse
from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig
from kelpie_trio.sim.faults import CRASH_FAULTS, STORAGE_FAULTS, FaultType
from kelpie_trio.sim.llm import SimLlmClient, send_message, tool_calls
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.sim.world import SimWorld
from kelpie_trio.storage.base import Transaction
from tests.dst.agent_harness import (
    AgentCluster,
    history_of,
    live_service,
    new_agent,
    restart_crashed,
    send_anywhere,
    wait_until,
)

# Skewed clocks too: the turns are counted by their places in the history, not by time.
FAULTS = FaultConfig({**dict.fromkeys(STORAGE_FAULTS, 0.05), **dict.fromkeys(CRASH_FAULTS, 0.01),
                      FaultType.CLOCK_SKEW: 0.5})  # fmt: skip
TAKEOVER = RuntimeConfig(lease_ttl=3.0, renew_interval=1.0)
COMPANION_THINKS = 60.0  # virtual seconds each of the companion's model calls takes
TURNS = 6


def _is_companion(request: LlmRequest) -> bool:
    return (request.messages[0].content or "").startswith(SLEEPTIME_SYSTEM.splitlines()[0])


def reply(request: LlmRequest) -> LlmResponse:
    """The primary answers each turn; the companion notes which turns it was shown in the
    human block, then finishes its edits."""
    if not _is_companion(request):
        said = [m.content for m in request.messages if m.role == "user"][-1]
        return send_message(f"ok {said}")
    last = request.messages[-1]
    if last.role == "tool":
        return tool_calls(("f", "memory_finish_edits", {}))
    shown = re.findall(r"^user: (t\d+)$", last.content or "", re.MULTILINE)
    note = "noted " + ",".join(shown)
    return tool_calls(("i", "memory_insert", {"label": "human", "new_string": note}))


class SlowCompanionLlm(SimLlmClient):
    """The harness's model, slow for the companion only: a primary turn that waited for
    its companion would take minutes."""

    async def _before_reply(self, request: LlmRequest, op: str) -> None:
        await super()._before_reply(request, op)
        if _is_companion(request):
            await trio.sleep(COMPANION_THINKS)


class SleepCluster(AgentCluster):
    def __init__(self, world: Any, **kw: Any) -> None:
        super().__init__(world, **kw)
        self.llm = SlowCompanionLlm.for_world(
            world, script=[reply] * 400, latency=(0.01, 0.1), timeout=5.0
        )


def simulate_sleeptime(seed: int, scenario: Any, faults: FaultConfig = FAULTS) -> tuple:
    async def main(world: SimWorld) -> tuple:
        sim = SleepCluster(world, nodes=2, config=TAKEOVER, resume_interval=2.0)
        world.faults.enabled = False
        async with trio.open_nursery() as nursery:
            await sim.start(nursery)
            result = await scenario(sim)
            sim.requests.check()
            nursery.cancel_scope.cancel()
        return sim, result

    return SimWorld(seed, faults).run(main)


async def _primary(service: AgentService, frequency: int) -> tuple[str, str]:
    primary = await new_agent(
        service, agent_type="memgpt_v2_agent", system="ROLE:primary .", enable_sleeptime=True
    )
    view = await service.get_agent(primary)
    assert view.group is not None
    await service.update_group(
        view.group.id,
        {"manager_config": {"manager_type": "sleeptime", "sleeptime_agent_frequency": frequency}},
    )
    return primary, view.group.agent_ids[0]


async def _runs_of(service: AgentService, agent_id: str) -> list[runs.Run]:
    async def read(tr: Transaction) -> list[runs.Run]:
        found = [await runs.load_run(tr, i) for i in await runs.agent_run_ids(tr, agent_id)]
        return sorted((r for r in found if r is not None), key=lambda r: r.first_seq or 0)

    return await service.store.transact(read)


async def _turn(sim: AgentCluster, primary: str, n: int) -> dict:
    body = {"messages": [{"role": "user", "content": f"t{n}", "otid": f"t{n}"}], "max_steps": 6}
    return await send_anywhere(sim, primary, body, first=n)


def test_dst_the_companion_runs_once_per_two_turns_on_what_it_has_not_seen() -> None:
    restarts = Counter[int]()

    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> Any:
            primary, companion = await _primary(sim.service("n0"), frequency=2)
            sim.world.faults.enabled = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restart_crashed, sim)
                for n in range(1, TURNS + 1):
                    answer = await _turn(sim, primary, n)
                    assert answer["stop_reason"]["stop_reason"] == "end_turn", answer
                sim.world.faults.enabled = False

                async def settled() -> bool:
                    service = live_service(sim)
                    done = await _runs_of(service, companion)
                    return len(done) >= TURNS // 2 and all(r.finished for r in done)

                await wait_until(settled, every=1.0)
                # One more turn: its prompt shows what the companion wrote.
                sim.llm.requests.clear()
                await _turn(sim, primary, TURNS + 1)
                nursery.cancel_scope.cancel()
            service = live_service(sim)
            prompts = [r for r in sim.llm.requests if not _is_companion(r)]
            return (await _runs_of(service, primary), await _runs_of(service, companion),
                    await history_of(service, companion), prompts,
                    await history_of(service, primary))  # fmt: skip

        sim, (primary_runs, companion_runs, seen, prompts, said) = simulate_sleeptime(
            seed, scenario
        )
        restarts[seed] = sum(node.incarnation - 1 for node in sim.nodes.values())
        turns = [r for r in primary_runs if r.first_seq is not None]
        assert len(turns) == TURNS + 1
        # Never waited: the turn after a trigger had its reply while the companion's run was
        # still going (an actor that waited for that run could not have started the turn;
        # how long a client waited is no proof: a timed-out request is answered from the
        # store once its run has finished).
        by_key = {r.idempotency_key: r for r in companion_runs}
        for trigger, following in ((1, 2), (3, 4)):
            companion_run = by_key[trigger_key(turns[trigger].id)]
            assert companion_run.completed_at is not None
            replied = min(m.created_at for m in said
                          if m.run_id == turns[following].id and m.role == "assistant")  # fmt: skip
            assert replied < companion_run.completed_at, (trigger, replied, companion_run)
        keys = [r.idempotency_key for r in companion_runs]
        assert len(keys) == TURNS // 2, keys  # none doubled, none lost
        # Exactly once each (runs of one thread may start in either order after a crash).
        assert sorted(keys, key=str) == sorted(trigger_key(turns[i].id) for i in (1, 3, 5)), keys
        assert all(r.status == "completed" for r in companion_runs)
        # Each run read the two turns it had not seen, and only those.
        inputs = [
            m.content or "" for m in seen if m.role == "user" and "Messages:" in (m.content or "")
        ]
        assert len(inputs) == 3, inputs
        shown = sorted(tuple(re.findall(r"^user: (t\d+)$", text, re.MULTILINE)) for text in inputs)
        assert shown == [("t1", "t2"), ("t3", "t4"), ("t5", "t6")], inputs
        # The edits are in the primary's next prompt (its memory blocks are shared).
        system = prompts[-1].messages[0].content or ""
        for note in ("noted t1,t2", "noted t3,t4", "noted t5,t6"):
            assert note in system, system

    run_seeds(one, 3)
    assert sum(restarts.values()), "no node crashed: the crash path was not run"


def test_dst_the_primary_s_turns_never_wait_for_the_companion() -> None:
    """Without faults, every turn at frequency 1: each answer comes within the primary's own
    model calls, while each companion run takes minutes (an actor that waited for the
    companion, even only until a request timed out, would take 10 s or more)."""

    async def scenario(sim: AgentCluster) -> Any:
        primary, companion = await _primary(sim.service("n0"), frequency=1)
        took = []
        for n in range(1, 5):
            started = trio.current_time()
            await _turn(sim, primary, n)
            took.append(trio.current_time() - started)

        async def started_all() -> bool:
            return len(await _runs_of(sim.service("n0"), companion)) == 4

        with trio.fail_after(5):  # the last turn's look runs just after its answer
            await wait_until(started_all)
        return took, await _runs_of(sim.service("n0"), companion)

    _, (took, companion_runs) = simulate_sleeptime(0, scenario, faults=FaultConfig({}))
    assert max(took) < 2.0, took
    assert len(companion_runs) == 4
    assert not any(r.finished for r in companion_runs[1:])  # all still going, or queued


def test_dst_turns_no_look_saw_are_counted_by_the_sweep(monkeypatch) -> None:
    """The actor's look never runs (as if every node crashed right after storing each
    turn's end): the resume sweep counts the turns and starts the companion's runs, each
    once, under storage faults and crashes."""
    monkeypatch.setattr(sleeptime, "after_turn", lambda actor: None)

    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> Any:
            primary, companion = await _primary(sim.service("n0"), frequency=2)
            sim.world.faults.enabled = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restart_crashed, sim)
                for n in range(1, 5):
                    await _turn(sim, primary, n)
                sim.world.faults.enabled = False

                async def settled() -> bool:
                    done = await _runs_of(live_service(sim), companion)
                    return len(done) >= 2 and all(r.finished for r in done)

                await wait_until(settled, every=1.0)
                nursery.cancel_scope.cancel()
            service = live_service(sim)
            return await _runs_of(service, primary), await _runs_of(service, companion)

        _, (primary_runs, companion_runs) = simulate_sleeptime(seed, scenario)
        turns = [r for r in primary_runs if r.first_seq is not None]
        keys = sorted(str(r.idempotency_key) for r in companion_runs)
        assert keys == sorted(trigger_key(turns[i].id) for i in (1, 3)), keys

    run_seeds(one, 2)


def test_dst_turns_taken_with_sleeptime_switched_off_start_nothing_later() -> None:
    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service("n0")
        primary, companion = await _primary(service, frequency=1)
        await service.update_agent(primary, {"enable_sleeptime": False})
        for n in (1, 2):
            await _turn(sim, primary, n)
        await trio.sleep(10)  # looks and sweeps come and go
        off = await _runs_of(service, companion)
        await service.update_agent(primary, {"enable_sleeptime": True})
        await _turn(sim, primary, 3)

        async def started() -> bool:
            return bool(await _runs_of(service, companion))

        await wait_until(started)
        await trio.sleep(10)
        return off, await _runs_of(service, companion), await _runs_of(service, primary)

    _, (off, on, primary_runs) = simulate_sleeptime(0, scenario, faults=FaultConfig({}))
    assert off == []
    assert [r.idempotency_key for r in on] == [trigger_key(primary_runs[-1].id)]


def test_dst_turns_before_an_update_to_sleeptime_do_not_count() -> None:
    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service("n0")
        primary = await new_agent(service, agent_type="memgpt_v2_agent", system="ROLE:p .")
        for n in (1, 2, 3):
            await _turn(sim, primary, n)
        view = await service.update_agent(primary, {"enable_sleeptime": True})
        config = {"manager_type": "sleeptime", "sleeptime_agent_frequency": 2}
        await service.update_group(view.group.id, {"manager_config": config})
        companion = view.group.agent_ids[0]
        await _turn(sim, primary, 4)
        await trio.sleep(10)  # the look after turn 4 has come and gone
        early = await _runs_of(service, companion)
        await _turn(sim, primary, 5)

        async def started() -> bool:  # its input stored
            return any(r.first_seq is not None for r in await _runs_of(service, companion))

        await wait_until(started)
        runs_ = await _runs_of(service, companion)
        return early, runs_, await history_of(service, companion)

    _, (early, later, seen) = simulate_sleeptime(0, scenario, faults=FaultConfig({}))
    assert early == []  # turn 4 is the group's first, not its fourth
    assert len(later) == 1
    [given] = [
        m.content or "" for m in seen if m.role == "user" and "Messages:" in (m.content or "")
    ]
    # The first transcript reaches back into the history before the group (as Letta's).
    assert re.findall(r"^user: (t\d+)$", given, re.MULTILINE) == ["t1", "t2", "t3", "t4", "t5"]
