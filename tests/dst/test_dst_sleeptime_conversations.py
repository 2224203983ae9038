"""A sleeptime companion counts the primary's turns in all its conversations (as Letta
bumps one counter whichever conversation a turn was in) and reads the new part of each
conversation that moved, in the simulator on two nodes under storage faults, crashes and
skewed clocks.

Frequency 2; turns t1 (default), t2 (conversation C), t3 (C), t4 (default), t5 (C),
t6 (default). Checked with the faults off: the companion ran exactly three times, one per
key of the 2nd, 4th and 6th turns; together its inputs showed every turn once, each
conversation's lines in its own order (t1 and t2 in the first, t3 and t4 in the second, t5
and t6 in the third).
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any

import trio

from kelpie_trio.agent import sleeptime
from kelpie_trio.agent.sleeptime import trigger_key
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig
from kelpie_trio.sim.agents import CLEAN
from kelpie_trio.sim.seeds import run_seeds
from tests.dst.agent_harness import (
    AgentCluster,
    history_of,
    live_service,
    new_agent,
    restart_crashed,
    wait_until,
)
from tests.dst.test_dst_sleeptime import _primary, _runs_of, simulate_sleeptime

PLAN = ("default", "C", "C", "default", "C", "default")


async def _turn_in(sim: AgentCluster, primary: str, conversation: str | None, n: int) -> dict:
    """Turn `t{n}` in the default conversation or in `conversation`, through the nodes in
    turn until one answers (a clean error is retried with the same otid)."""
    body = {"messages": [{"role": "user", "content": f"t{n}", "otid": f"t{n}"}], "max_steps": 6}
    for attempt in itertools.count():
        assert attempt < 100, "no answer"
        name = sim.names[(n + attempt) % len(sim.names)]
        if sim.nodes[name].crashed:
            await trio.sleep(0.5)
            continue
        service = sim.services[name]
        try:
            thread = None if conversation is None else await service.resolve(conversation)
            send = functools.partial(
                service.send_message,
                conversation=None if thread is None else thread.conversation,
            )
            return await sim.call(f"t{n} via {name}", sim.on_node, name, send, primary, body)
        except CLEAN:
            await trio.sleep(0.5)
    raise AssertionError("unreachable")


async def _scenario(sim: AgentCluster) -> Any:
    service = sim.service("n0")
    primary, companion = await _primary(service, frequency=2)
    conversation = (await service.create_conversation(primary, {}))["id"]
    sim.world.faults.enabled = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(restart_crashed, sim)
        for n, where in enumerate(PLAN, start=1):
            target = None if where == "default" else conversation
            answer = await _turn_in(sim, primary, target, n)
            assert answer["stop_reason"]["stop_reason"] == "end_turn", answer
        sim.world.faults.enabled = False

        async def settled() -> bool:
            done = await _runs_of(live_service(sim), companion)
            return len(done) >= 3 and all(r.finished for r in done)

        await wait_until(settled, every=1.0)
        await trio.sleep(10)  # looks and sweeps come and go: none starts a fourth
        nursery.cancel_scope.cancel()
    service = live_service(sim)
    turns = [r for r in await _runs_of(service, primary) if r.first_seq is not None]
    said = {m.run_id: m.content for m in await history_of(service, primary) if m.role == "user"}
    said.update({m.run_id: m.content for m in await history_of(service, conversation)
                 if m.role == "user"})  # fmt: skip
    companion_runs = await _runs_of(service, companion)
    seen = await history_of(service, companion)
    return turns, said, companion_runs, seen


def _check(turns: list[Any], said: dict, companion_runs: list[Any], seen: list[Any]) -> list:
    """What holds whatever the faults: three runs, each keyed by a turn of the primary in
    either conversation, and the six turns shown once in all, each input ending with its
    own turn; the inputs, in the order of the turns that keyed them."""
    assert len(turns) == len(PLAN)
    by_key = {trigger_key(r.id): said[r.id] for r in turns}
    keys = [r.idempotency_key for r in companion_runs]
    assert len(keys) == len(set(keys)) == 3 and set(keys) <= by_key.keys(), keys
    inputs = {m.run_id: m.content or "" for m in seen
              if m.role == "user" and "Messages:" in (m.content or "")}  # fmt: skip
    shown = {r.idempotency_key: re.findall(r"^user: (t\d+)$", inputs[r.id], re.MULTILINE)
             for r in companion_runs}  # fmt: skip
    everything = sorted((t for part in shown.values() for t in part), key=lambda t: int(t[1:]))
    assert everything == [f"t{n}" for n in range(1, 7)], shown  # each turn once
    for key, part in shown.items():
        assert part[-1] == by_key[key], (key, part)  # the turn due is the input's last
    return [shown[k] for k in sorted(keys, key=lambda k: int(by_key[k][1:]))]


def test_dst_the_companion_counts_turns_in_every_conversation_under_faults() -> None:
    def one(seed: int) -> None:
        _, result = simulate_sleeptime(seed, _scenario)
        _check(*result)

    run_seeds(one, 2)


def test_the_companion_reads_what_each_conversation_said_before_its_turn() -> None:
    """Without faults (so without skewed clocks, which order turns of two conversations),
    the due turns are exactly the 2nd, 4th and 6th, and each input holds what came since
    the last one: t1 (default) with t2 (C), t3 (C) with t4 (default), t5 (C) with t6."""
    _, result = simulate_sleeptime(0, _scenario, faults=FaultConfig({}))
    assert _check(*result) == [["t1", "t2"], ["t3", "t4"], ["t5", "t6"]]


def test_one_look_over_turns_of_two_conversations_shows_each_run_what_came_before_it(
    monkeypatch: Any,
) -> None:
    """No look runs while t1 (default), t2 (C), t3 (C) and t4 (default) are taken; then one
    look counts all four: the run keyed by t2 reads t1 and t2, the one keyed by t4 reads t3
    and t4 (what the other conversation said after a due turn waits for the next run)."""
    monkeypatch.setattr(sleeptime, "after_turn", lambda actor: None)
    sweep = AgentService.sleeptime_sweep

    async def no_sweep(self: Any, behind: Any = None) -> int:
        return 0

    monkeypatch.setattr(AgentService, "sleeptime_sweep", no_sweep)

    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service("n0")
        primary, companion = await _primary(service, frequency=2)
        conversation = (await service.create_conversation(primary, {}))["id"]
        for n, where in enumerate(PLAN[:4], start=1):
            await _turn_in(sim, primary, None if where == "default" else conversation, n)
        assert await _runs_of(service, companion) == []
        monkeypatch.setattr(AgentService, "sleeptime_sweep", sweep)
        started = await service.sleeptime_catch_up(primary)
        assert len(started) == 2

        async def settled() -> bool:
            done = await _runs_of(service, companion)
            return len(done) == 2 and all(r.finished for r in done)

        await wait_until(settled, every=1.0)
        seen = await history_of(service, companion)
        return [re.findall(r"^user: (t\d+)$", m.content or "", re.MULTILINE)
                for m in seen if m.role == "user" and "Messages:" in (m.content or "")]  # fmt: skip

    _, shown = simulate_sleeptime(0, scenario, faults=FaultConfig({}))
    assert sorted(shown) == [["t1", "t2"], ["t3", "t4"]]


def test_turns_in_a_conversation_before_the_group_was_made_do_not_count() -> None:
    """t1 and t2 in conversation C, then sleeptime is switched on (frequency 2): t3 in C is
    the group's first turn, t4 (default) its second, which starts the one run."""

    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service("n0")
        primary = await new_agent(service, agent_type="memgpt_v2_agent", system="ROLE:p .")
        conversation = (await service.create_conversation(primary, {}))["id"]
        for n in (1, 2):
            await _turn_in(sim, primary, conversation, n)
        view = await service.update_agent(primary, {"enable_sleeptime": True})
        config = {"manager_type": "sleeptime", "sleeptime_agent_frequency": 2}
        await service.update_group(view.group.id, {"manager_config": config})
        companion = view.group.agent_ids[0]
        await _turn_in(sim, primary, conversation, 3)
        await trio.sleep(10)  # the look after t3 has come and gone
        early = await _runs_of(service, companion)
        await _turn_in(sim, primary, None, 4)

        async def started() -> bool:
            return bool(await _runs_of(service, companion))

        await wait_until(started)
        await trio.sleep(10)
        turns = [r for r in await _runs_of(service, primary) if r.first_seq is not None]
        return early, await _runs_of(service, companion), turns

    _, (early, later, turns) = simulate_sleeptime(0, scenario, faults=FaultConfig({}))
    assert early == []
    [run] = later
    t4 = max(turns, key=lambda r: r.created_at)
    assert run.idempotency_key == trigger_key(t4.id)
