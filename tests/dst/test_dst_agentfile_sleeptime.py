"""A sleeptime group that came in an agent file runs in the simulator as one made here.

A primary with a companion (frequency 2) takes three turns, is exported, and the file is
imported. The copy then takes four turns on two nodes under storage faults, node crashes
and skewed clocks. Checked with the faults off: the copy's companion ran exactly twice,
once per key of the copy's 2nd and 4th turns after the import (the history the file
brought is not counted), each on the turns it had not seen: the first goes on where the
original's companion stopped (after t2: the file says where), so it reads t3, which the
original's never read, then t4 and t5; the original's companion is not woken by the copy's
turns.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import trio

from kelpie_trio.agent.sleeptime import trigger_key
from kelpie_trio.models import convert
from kelpie_trio.models.agentfile import ImportOptions
from kelpie_trio.sim.seeds import run_seeds
from tests.dst.agent_harness import (
    AgentCluster,
    history_of,
    live_service,
    restart_crashed,
    wait_until,
)
from tests.dst.test_dst_sleeptime import _primary, _runs_of, _turn, simulate_sleeptime

AFTER = 4  # the copy's turns after the import


def test_dst_an_imported_sleeptime_group_counts_only_its_new_turns_under_faults() -> None:
    restarts = Counter[int]()

    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> Any:
            service = sim.service("n0")
            primary, companion = await _primary(service, frequency=2)
            for n in (1, 2, 3):
                await _turn(sim, primary, n)
            # Wait out the original's own companion (turn 2) before taking the file.
            await wait_until(lambda: _settled(service, companion, 1), every=1.0)
            exported = convert.api.unstructure(await service.export_agent_file(primary))
            copy, copied_companion = await service.import_agent_file(exported, ImportOptions())
            before = len(await _runs_of(service, companion))
            sim.world.faults.enabled = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restart_crashed, sim)
                for n in range(4, 4 + AFTER):
                    answer = await _turn(sim, copy, n)
                    assert answer["stop_reason"]["stop_reason"] == "end_turn", answer
                sim.world.faults.enabled = False
                await wait_until(
                    lambda: _settled(live_service(sim), copied_companion, AFTER // 2), every=1.0
                )
                await trio.sleep(10)  # looks and sweeps come and go: none starts a third
                nursery.cancel_scope.cancel()
            service = live_service(sim)
            return (await _runs_of(service, copy), await _runs_of(service, copied_companion),
                    await history_of(service, copied_companion), before,
                    len(await _runs_of(service, companion)))  # fmt: skip

        sim, (turns, companion_runs, seen, before, after) = simulate_sleeptime(seed, scenario)
        restarts[seed] = sum(node.incarnation - 1 for node in sim.nodes.values())
        turns = [r for r in turns if r.first_seq is not None]
        assert len(turns) == AFTER
        keys = sorted(r.idempotency_key for r in companion_runs)
        assert keys == sorted(trigger_key(turns[i].id) for i in (1, 3)), keys
        assert all(r.status == "completed" for r in companion_runs)
        # (The companion's history also holds what the original's companion read, imported.)
        mine = {r.id for r in companion_runs}
        inputs = [m.content or "" for m in seen if m.run_id in mine
                  and m.role == "user" and "Messages:" in (m.content or "")]  # fmt: skip
        shown = sorted(tuple(re.findall(r"^user: (t\d+)$", text, re.MULTILINE)) for text in inputs)
        assert shown == [("t3", "t4", "t5"), ("t6", "t7")], inputs
        assert after == before  # the original's companion slept through the copy's turns

    run_seeds(one, 2)
    assert sum(restarts.values()), "no node crashed: the crash path was not run"


async def _settled(service: Any, companion: str, count: int) -> bool:
    done = await _runs_of(service, companion)
    return len(done) >= count and all(r.finished for r in done)
