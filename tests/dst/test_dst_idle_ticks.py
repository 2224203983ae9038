"""An idle node wakes once a heartbeat (env.Ticks): its polls (the resume sweep's watch of
the node records, the schedule firer's look for other nodes' schedules) end on its
heartbeat's ticks, so trio wakes it once for all of them; a served node's search and file
polls do the same (tests/search/test_indexer_wake.py, tests/files/test_file_poll_ticks.py).
In the simulator, on the agent cluster's real dispatcher, resume sweep and firer."""

from __future__ import annotations

import math

import pytest
import trio
from trio.abc import Instrument

from kelpie_trio.env import Ticks
from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.service.schedules import ScheduleSettings
from kelpie_trio.sim.seeds import run_seeds
from tests.dst.agent_harness import AgentCluster, new_agent, simulate_cluster

CONFIG = RuntimeConfig(lease_ttl=10.0, renew_interval=10.0 / 3, idle_timeout=3600.0)
IDLE_S = 600.0


POLLS = ("_keep_heartbeat", "keep_runs_going", "fire_schedules")
CYCLE_GAP_S = 1.5  # a loop quiet this long started a new round (retries wait at most 1 s)


class Rounds(Instrument):
    """When each of the node's periodic loops began a round: its first step after a
    quiet spell (the steps within a round follow the store's calls)."""

    def __init__(self) -> None:
        self.starts: dict[str, list[float]] = {name: [] for name in POLLS}
        self._last: dict[str, float] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        name = task.name.rsplit(".", 1)[-1]
        if name not in self.starts:
            return
        now = trio.current_time()
        if now - self._last.get(name, -math.inf) > CYCLE_GAP_S:
            self.starts[name].append(now)
        self._last[name] = now


async def _idle(sim: AgentCluster) -> tuple[Ticks, dict[str, list[float]]]:
    service = sim.service("n0")
    agent = await new_agent(service)
    await service.send_message(agent, {"messages": [{"role": "user", "content": "hi"}]})
    await trio.sleep(60)  # the turn's after-effects settle
    rounds = Rounds()
    trio.lowlevel.add_instrument(rounds)
    await trio.sleep(IDLE_S)
    trio.lowlevel.remove_instrument(rounds)
    assert sim.services["n0"].dispatcher.is_active(agent)  # its lease lived on
    ticks = sim.nodes["n0"].env.ticks
    assert ticks is not None
    return ticks, rounds.starts


@pytest.mark.parametrize("faults", ["none", "storage"])
def test_dst_an_idle_node_wakes_once_a_heartbeat(faults: str) -> None:
    """Ten idle minutes of one node with an active agent, a resume sweep (its watch every
    10 s) and a schedule firer (its poll every 30 s): every round of the heartbeat and of
    the watch begins on one of the heartbeat's ticks, and so does every poll of the firer
    but, under storage faults, those after a failed round (tried again 1 s later)."""

    def one(seed: int) -> None:
        ticks, starts = simulate_cluster(
            seed, _idle, faults, config=CONFIG, resume_interval=10.0,
            schedules=ScheduleSettings(poll=30.0),
        )  # fmt: skip
        assert ticks.period == CONFIG.renew_interval
        beats = IDLE_S / ticks.period
        off = {name: [t for t in found if ticks.at_or_after(t) != t]
               for name, found in starts.items()}  # fmt: skip
        assert beats - 2 <= len(starts["_keep_heartbeat"]) <= beats + 1, starts
        assert len(starts["keep_runs_going"]) >= IDLE_S / 10.0 - 2, starts  # the watch ran
        assert len(starts["fire_schedules"]) >= IDLE_S / 30.0 - 2, starts
        assert off["_keep_heartbeat"] == off["keep_runs_going"] == [], off
        if faults == "none":
            assert off["fire_schedules"] == [], off
        else:
            assert len(off["fire_schedules"]) <= len(starts["fire_schedules"]) / 2, off

    run_seeds(one, 3, first=1)
