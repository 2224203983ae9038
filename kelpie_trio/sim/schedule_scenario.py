"""The `schedules` scenario: scheduled messages fire exactly once through three nodes
under storage and network faults, crashes and store cut-offs at the firing instants, and
skewed clocks (service/schedules.py is what it tests).

Agents get one-time schedules at random times and recurring ones (every minute, every
two, every three, in several time zones). With the faults on for `ACTIVE` seconds of
virtual time, a chaos task crashes or cuts off a node from the store at the instant its
clock says a minute begins (when every recurring schedule falls due), and a process
manager restarts crashed nodes. Then, faults off, the recurring schedules are deleted
(each read in the transaction that deletes it: the due time it would have fired next)
and the firings still pending are left to drain. What it checks, counting every stored
run of every agent by its idempotency key and by the text it was sent:

- ExactlyOnce: no firing (schedule, due time) has more than one run, and no schedule's
  text was sent more often than it had due times;
- NoFiringLost: every one-time schedule fired, once, with its due time; every recurring
  one fired once for each cron time from its creation up to the due time it had when it
  was deleted (outages here are a few seconds, never a whole period, so no firing is
  merged by the missed-firing policy);
- RunsFinish: every run a firing started has finished, and no claimed firing is left.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter
from typing import Any

import attrs
import trio

from kelpie_trio.agent import runs
from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.service import AgentService
from kelpie_trio.service import schedules as stored
from kelpie_trio.service.schedule_rules import idempotency_key, next_cron_time
from kelpie_trio.sim.agent_scenarios import _fail
from kelpie_trio.sim.agents import (
    AgentCluster,
    cluster_main,
    live_service,
    new_agent,
    restart_crashed,
)
from kelpie_trio.sim.faults import (
    CRASH_FAULTS,
    NETWORK_FAULTS,
    STORAGE_FAULTS,
    FaultConfig,
    FaultType,
)
from kelpie_trio.sim.world import SimWorld
from kelpie_trio.storage.base import Transaction

__all__ = [
    "SCHEDULE_FAULTS",
    "SchedulesReport",
    "check_schedules",
    "run_schedules",
    "schedules",
]

SCHEDULE_FAULTS = FaultConfig(
    {
        **dict.fromkeys(STORAGE_FAULTS, 0.03),
        **dict.fromkeys(CRASH_FAULTS, 0.003),
        **dict.fromkeys(NETWORK_FAULTS, 0.02),  # a firing's send goes to the agent's node
        FaultType.CLOCK_SKEW: 0.5,
        FaultType.AGENT_LOOP_PANIC: 0.01,
        FaultType.LLM_FAILURE: 0.02,
    }
)
SETTINGS = stored.ScheduleSettings(poll=2.0, retry_after=8.0)
# Agents deactivate between firings, so a firing activates an idle agent.
RUNTIME = RuntimeConfig(lease_ttl=3.0, renew_interval=1.0, idle_timeout=20.0)
CRONS = ("* * * * *", "*/2 * * * *", "1-59/3 * * * *")
ZONES = ("UTC", "Europe/Paris", "Asia/Kolkata", "America/St_Johns")


@attrs.define
class SchedulesReport:
    one_time: dict[str, tuple[str, int]]  # schedule id -> (agent, due us)
    recurring: dict[str, tuple[str, list[int]]]  # schedule id -> (agent, due times expected)
    runs: list[Any]  # every run of every agent
    pending: int  # claimed firings never cleared
    restarts: int
    elapsed: float  # virtual seconds

    @property
    def firings(self) -> int:
        return len(self.one_time) + sum(len(d) for _, d in self.recurring.values())

    def summary(self) -> str:
        return (
            f"schedules: {len(self.one_time)} one-time and {len(self.recurring)} recurring, "
            f"{self.firings} firings expected, {len(self.runs)} runs stored, "
            f"{self.restarts} node restarts, {self.elapsed:.0f} s virtual"
        )


def text_of(schedule_index: int) -> str:
    return f"scheduled #{schedule_index}"


async def _firing_instant_chaos(sim: AgentCluster, rng: Any) -> None:
    """At the start of each minute by a chosen node's own (skewed) clock, the instant its
    firer wakes for every recurring schedule, crash it or cut it off from the store."""
    epoch = sim.world.env.epoch
    while True:
        name = rng.choice(sim.names)
        node = sim.nodes[name]
        now = node.env.now()
        boundary = (int(now - epoch) // 60 + 1) * 60 + epoch
        await trio.sleep(boundary - now + rng.uniform(0.0, 0.02))
        node = sim.nodes[name]  # it may have been restarted meanwhile
        if node.crashed:
            continue
        roll = rng.random()
        if roll < 0.35:
            node.crash("at the firing instant")
        elif roll < 0.7:
            node.cut_off_store(rng.uniform(1.0, 5.0))


async def run_schedules(
    world: SimWorld,
    *,
    agents: int = 8,
    one_time: int = 120,
    recurring: int = 9,
    active: float = 420.0,
    nodes: int = 3,
) -> SchedulesReport:
    rng = world.rng("schedules")

    async def scenario(sim: AgentCluster) -> SchedulesReport:
        started = trio.current_time()
        ids = [await new_agent(sim.service(sim.names[i % nodes])) for i in range(agents)]
        texts: dict[str, str] = {}
        planned_one: dict[str, tuple[str, int]] = {}
        created_cron: dict[str, tuple[str, str, str | None, float]] = {}
        for i in range(one_time + recurring):
            service = sim.service(sim.names[i % nodes])
            agent = ids[i % agents]
            body: dict[str, Any] = {"messages": [{"role": "user", "content": text_of(i)}],
                                    "max_steps": 2}  # fmt: skip
            if i < one_time:
                at_ms = int((service.env.now() + rng.uniform(5.0, active)) * 1000)
                body["schedule"] = {"type": "one-time", "scheduled_at": at_ms}
            else:
                cron = CRONS[i % len(CRONS)]
                zone = ZONES[i % len(ZONES)]
                body["schedule"] = {"type": "recurring", "cron_expression": cron,
                                    "timezone": zone}  # fmt: skip
            created = await service.create_schedule(agent, body)
            texts[created["id"]] = text_of(i)
            if i < one_time:
                planned_one[created["id"]] = (agent, at_ms * 1000)
            else:
                created_cron[created["id"]] = (agent, cron, zone, service.env.now())
        world.faults.enabled = True
        async with trio.open_nursery() as chaos:
            chaos.start_soon(restart_crashed, sim)
            chaos.start_soon(_firing_instant_chaos, sim, rng)
            await trio.sleep(active)
            chaos.cancel_scope.cancel()
        world.faults.enabled = False
        for name in sim.names:  # bring every node back
            if sim.nodes[name].crashed:
                await sim.start_node(name)
        live = live_service(sim)
        expected_cron: dict[str, tuple[str, list[int]]] = {}
        for schedule_id, (agent, cron, zone, created_at) in created_cron.items():
            next_due = await _delete_reading_due(live, schedule_id)
            expected_cron[schedule_id] = (agent, _cron_times(cron, zone, created_at, next_due))
        # Pending firings are sent after retry_after; their runs finish by the resume sweep.
        await trio.sleep(SETTINGS.retry_after * 4 + 60.0)
        live = live_service(sim)
        all_runs = await _all_runs(live, ids)
        pending = await _pending_firings(live)
        restarts = sum(node.incarnation - 1 for node in sim.nodes.values())
        report = SchedulesReport(planned_one, expected_cron, all_runs, pending, restarts,
                                 trio.current_time() - started)  # fmt: skip
        report_texts.update(texts)
        return report

    report_texts: dict[str, str] = {}
    report = await cluster_main(
        scenario, quiet_start=True, nodes=nodes, config=RUNTIME, resume_interval=3.0,
        schedules=SETTINGS, answer_bound=600.0,
    )(world)  # fmt: skip
    _fail(world, check_schedules(report, report_texts))
    return report


async def schedules(world: SimWorld) -> SchedulesReport:
    """The named scenario (`kelpie-trio sim --scenario schedules`)."""
    return await run_schedules(world)


def _cron_times(cron: str, zone: str | None, created_at: float, before_us: int | None) -> list[int]:
    """Every time the cron matches after `created_at` and before `before_us`."""
    times: list[int] = []
    at = next_cron_time(cron, zone, round(created_at * 1_000_000))
    while at is not None and before_us is not None and at < before_us:
        times.append(at)
        at = next_cron_time(cron, zone, at)
    return times


async def _delete_reading_due(service: AgentService, schedule_id: str) -> int | None:
    """Delete the schedule and return the due time it had, in one transaction: every cron
    time before it was claimed (and so must fire), none after it will be."""

    async def delete(tr: Transaction) -> int | None:
        record = await stored._load(tr, schedule_id)
        assert record is not None, f"{schedule_id} vanished"
        stored._remove(tr, record)
        return record.next_due_us

    return await service.store.transact(delete)


async def _all_runs(service: AgentService, agents: list[str]) -> list[Any]:
    async def read(tr: Transaction) -> list[Any]:
        found = []
        for agent in agents:
            for run_id in await runs.agent_run_ids(tr, agent):
                run = await runs.load_run(tr, run_id)
                if run is not None:
                    found.append(run)
        return found

    return await service.store.transact(read)


async def _pending_firings(service: AgentService) -> int:
    async def read(tr: Transaction) -> int:
        """Claimed firings' records and message chunks left: none once all were sent."""
        left = 0
        for space in (stored.FIRINGS, stored.BODIES):
            left += len(await tr.get_range(space.range().start, space.range().stop))
        return left

    return await service.store.transact(read)


def check_schedules(report: SchedulesReport, texts: dict[str, str]) -> list[str]:
    problems: list[str] = []
    keyed = Counter(r.idempotency_key for r in report.runs if r.idempotency_key)
    sent = Counter(r.inputs[0].text for r in report.runs if r.inputs)
    twice = sorted(k for k, n in keyed.items() if n > 1)
    if twice:
        problems.append(f"ExactlyOnce: firings with more than one run: {twice[:5]}")
    expected: dict[str, list[int]] = {sid: [due] for sid, (_, due) in report.one_time.items()}
    expected.update({sid: dues for sid, (_, dues) in report.recurring.items()})
    for schedule_id, dues in expected.items():
        fired = sorted(int(k.rsplit(":", 1)[1]) for k in keyed
                       if k.startswith(f"schedule:{schedule_id}:"))  # fmt: skip
        if fired != dues:
            lost = sorted(set(dues) - set(fired))
            extra = sorted(set(fired) - set(dues))
            problems.append(f"NoFiringLost: {schedule_id} fired {len(fired)} times for "
                            f"{len(dues)} due times (missing {[_iso(d) for d in lost[:3]]}, "
                            f"unexpected {[_iso(d) for d in extra[:3]]})")  # fmt: skip
        if sent[texts[schedule_id]] != len(dues):
            times = sent[texts[schedule_id]]
            problems.append(f"ExactlyOnce: {schedule_id}'s message was sent {times} times "
                            f"for {len(dues)} due times")  # fmt: skip
    for run in report.runs:
        key = run.idempotency_key or ""
        if key.startswith("schedule:") and not run.finished:
            problems.append(f"RunsFinish: run {run.id} of firing {key} is {run.status}")
    if report.pending:
        problems.append(f"RunsFinish: {report.pending} records of claimed firings left")
    for schedule_id, (agent, due) in report.one_time.items():
        run = next((r for r in report.runs
                    if r.idempotency_key == idempotency_key(schedule_id, due)), None)  # fmt: skip
        if run is not None and run.agent_id != agent:
            problems.append(f"{schedule_id} fired into {run.agent_id}, not {agent}")
    return problems


def _iso(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1_000_000, zoneinfo.ZoneInfo("UTC")).isoformat()
