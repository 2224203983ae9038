"""Scheduled messages in the simulator (service/schedules.py): every firing runs exactly
once, through three nodes, under storage faults, crashes and store cut-offs at the firing
instants and skewed clocks (the `schedules` scenario, kelpie_trio/sim/schedule_scenario.py);
a firing missed while every node was down fires once on recovery; a firing is an ordinary
run; a deleted agent's schedules stop."""

from __future__ import annotations

from typing import Any

import trio

from kelpie_trio.agent import runs
from kelpie_trio.env import SIM_EPOCH
from kelpie_trio.service.schedule_rules import idempotency_key
from kelpie_trio.service.schedules import DUE
from kelpie_trio.sim import SimWorld
from kelpie_trio.sim.faults import CRASH_FAULTS
from kelpie_trio.sim.schedule_scenario import (
    RUNTIME,
    SCHEDULE_FAULTS,
    SETTINGS,
    run_schedules,
    schedules,
)
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage.base import Transaction
from tests.calls import call_times
from tests.dst.agent_harness import AgentCluster, new_agent, page, simulate_cluster, wait_until

US = 1_000_000
COUNT = 20  # large-message schedules due together


def test_dst_scheduled_messages_fire_exactly_once_under_faults() -> None:
    restarted: list[int] = []

    def one(seed: int) -> None:
        report = SimWorld(seed, SCHEDULE_FAULTS).run(schedules)
        assert report.firings > 150 and len(report.runs) >= report.firings
        if report.restarts:
            restarted.append(seed)

    seeds = run_seeds(one, 3, scenario="schedules")
    assert restarted or seeds == 0, "no node crashed: the scenario tested no recovery"


def test_dst_a_thousand_schedules_on_two_nodes_fire_once_each() -> None:
    """Many cheap schedules due close together: claims in batches, two nodes contending.
    Crashes at store calls are rarer here: with a thousand firings a node makes so many
    calls that the scenario's rate would keep both nodes down (and then the missed-firing
    policy merges periods, which this test does not expect)."""

    async def many(world: SimWorld) -> Any:
        return await run_schedules(world, agents=40, one_time=1000, recurring=12,
                                   active=300.0, nodes=2)  # fmt: skip

    faults = SCHEDULE_FAULTS.with_rates(dict.fromkeys(CRASH_FAULTS, 0.0002))
    report = SimWorld(7, faults, time_limit=7200).run(many)
    assert report.firings >= 1000 and report.restarts > 0


async def _keys(service: Any, agent: str) -> list[str]:
    async def read(tr: Transaction) -> list[str]:
        found = [await runs.load_run(tr, r) for r in await runs.agent_run_ids(tr, agent)]
        return sorted(r.idempotency_key or "" for r in found if r is not None)

    return await service.store.transact(read)


def test_dst_firings_missed_while_every_node_was_down_fire_once_on_recovery() -> None:
    """Both nodes down from 0:30 to 6:40: the cron (every minute) missed six periods and
    fires once for them, as its stored due time (1:00), then goes on at 7:00 and 8:00; the
    one-time schedule due at 1:30 fires once, late."""

    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service("n0")
        agent = await new_agent(service)
        hello = [{"role": "user", "content": "tick"}]
        cron = await service.create_schedule(agent, {
            "messages": hello, "schedule": {"type": "recurring", "cron_expression": "* * * * *"},
        })  # fmt: skip
        once = await service.create_schedule(agent, {
            "messages": hello, "schedule": {"scheduled_at": (SIM_EPOCH + 90) * 1000},
        })  # fmt: skip
        await trio.sleep(30 - trio.current_time())
        for name in sim.names:
            sim.crash(name)
        await trio.sleep(400 - trio.current_time())
        for name in sim.names:
            await sim.start_node(name)
        await trio.sleep(500 - trio.current_time())
        return cron["id"], once["id"], await _keys(sim.service("n1"), agent)

    cron, once, keys = simulate_cluster(
        11, scenario, nodes=2, config=RUNTIME, resume_interval=3.0, schedules=SETTINGS
    )
    minute = [int((SIM_EPOCH + 60 * m) * US) for m in (1, 7, 8)]
    assert keys == sorted([idempotency_key(once, int((SIM_EPOCH + 90) * US)),
                           *(idempotency_key(cron, d) for d in minute)])  # fmt: skip


def test_dst_a_firing_is_an_ordinary_run_of_an_idle_agent() -> None:
    """The agent is idle (deactivated) when its schedule falls due: the firing activates it,
    and its run is listed with the agent's runs, finished, with the scheduled text as its
    input, in the agent's default conversation."""

    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service("n0")
        agent = await new_agent(service)
        made = await service.create_schedule(agent, {
            "messages": [{"role": "user", "content": "remember the milk"}],
            "schedule": {"type": "one-time", "scheduled_at": (SIM_EPOCH + 120) * 1000},
        })  # fmt: skip
        await trio.sleep(100)
        idle = agent not in service.dispatcher.active_agents

        async def fired() -> bool:
            return bool(await _keys(service, agent))

        await wait_until(fired, every=1.0)
        fired_at = trio.current_time()
        [listed] = await service.list_runs(page(), agent_id=agent)
        run = await service.get_run_record(listed["id"])
        await wait_until(lambda: _finished(service, run.id), every=0.5)
        gone = await service.list_schedules(agent)
        return idle, fired_at, made["id"], await service.get_run_record(run.id), gone

    idle, fired_at, schedule_id, run, gone = simulate_cluster(
        3, scenario, nodes=1, config=RUNTIME, resume_interval=3.0, schedules=SETTINGS
    )
    assert idle, "the agent was active anyway: the test shows no activation"
    assert 120 <= fired_at <= 122
    assert run.idempotency_key == idempotency_key(schedule_id, int((SIM_EPOCH + 120) * US))
    assert run.inputs[0].text == "remember the milk" and run.conversation_id is None
    assert run.status == "completed" and run.background
    assert gone == {"has_next_page": False, "scheduled_messages": []}  # a one-time one ends


async def _finished(service: Any, run_id: str) -> bool:
    return (await service.get_run_record(run_id)).finished


def test_dst_a_deleted_agents_schedules_never_fire() -> None:
    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service("n0")
        agent = await new_agent(service)
        other = await new_agent(service)
        every = {"type": "recurring", "cron_expression": "* * * * *"}
        for who in (agent, other):
            await service.create_schedule(who, {
                "messages": [{"role": "user", "content": "tick"}], "schedule": every,
            })  # fmt: skip
        await trio.sleep(90)
        await service.delete_agent(agent)
        await trio.sleep(200)
        return await _keys(service, other)

    keys = simulate_cluster(5, scenario, nodes=1, config=RUNTIME, schedules=SETTINGS)
    assert len(keys) == 4  # 1:00, 2:00, 3:00, 4:00: the other agent's go on


def test_dst_an_index_entry_no_schedule_waits_on_is_cleared_not_spun_on() -> None:
    """A due-index entry whose schedule is gone (none should exist: the index is written
    with its schedule) is dropped at its first look, and the firer sleeps as before."""

    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service("n0")
        stale = DUE.pack((int((SIM_EPOCH + 5) * US), "scheduled_message-gone"))

        async def plant(tr: Transaction) -> None:
            tr.set(stale, b"agent-gone")

        await service.store.transact(plant)
        rounds = call_times(service, "fire_due")
        service._wake_firer()
        await trio.sleep(60)

        async def left(tr: Transaction) -> bytes | None:
            return await tr.get(stale)

        return await service.store.transact(left), len(rounds)

    left, rounds = simulate_cluster(9, scenario, nodes=1, schedules=SETTINGS)
    assert left is None
    assert rounds <= 60 / SETTINGS.poll + 3  # it slept between rounds


def test_dst_schedules_with_large_messages_due_together_all_fire() -> None:
    """Twenty recurring schedules whose messages are 600 kB each, due at one instant: a
    claim writes each firing's message and the schedule again, so they are claimed in
    transactions that stay within the store's 10 MB (sixteen at once would not)."""

    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service("n0")
        agents = [await new_agent(service) for _ in range(4)]
        for i in range(COUNT):
            await service.create_schedule(agents[i % 4], {
                "messages": [{"role": "user", "content": f"{i} " + "x" * 600_000}],
                "schedule": {"type": "recurring", "cron_expression": "* * * * *"},
            })  # fmt: skip
        await trio.sleep(90)  # one due time: 0:01
        return [key for agent in agents for key in await _keys(service, agent)]

    keys = simulate_cluster(13, scenario, nodes=1, config=RUNTIME, schedules=SETTINGS)
    assert len(keys) == len(set(keys)) == COUNT


def test_dst_a_firing_s_run_can_be_cancelled_like_any_run() -> None:
    """The model is slow (30 s a reply): the firing's run is running when the client
    cancels the agent's runs, and it ends cancelled at once."""

    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service("n0")
        agent = await new_agent(service)
        sim.llm.latency = (30.0, 30.0)
        await service.create_schedule(agent, {
            "messages": [{"role": "user", "content": "slow one"}],
            "schedule": {"type": "one-time", "scheduled_at": (SIM_EPOCH + 20) * 1000},
        })  # fmt: skip

        async def running() -> bool:
            return bool(await service.list_runs(page(), agent_id=agent, active=True))

        await wait_until(running, every=0.5)
        [listed] = await service.list_runs(page(), agent_id=agent)
        outcome = await service.cancel_runs(agent, None)
        cancelled_at = trio.current_time()
        await wait_until(lambda: _finished(service, listed["id"]), every=0.1)
        waited = trio.current_time() - cancelled_at
        return outcome, waited, await service.get_run_record(listed["id"])

    outcome, waited, run = simulate_cluster(
        17, scenario, nodes=1, config=RUNTIME, schedules=SETTINGS
    )
    assert outcome == {run.id: "cancelled"} and run.status == "cancelled"
    assert waited < 1 and run.idempotency_key and run.idempotency_key.startswith("schedule:")
