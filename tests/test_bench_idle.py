"""The idle row's floor (bench/idle_floor.py): a trio process that wakes as often as asked,
read the way the idle scenario reads a server (its threads' CPU and wake-ups)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.idle import _window
from bench.procs import start_idle_floor


async def test_the_idle_floor_wakes_as_often_as_it_is_asked() -> None:
    async with start_idle_floor(600.0) as floor:  # ten times a second
        cpu, t0, t1 = await _window(floor.pid, 2.0)
    seconds = t1 - t0
    # Each wake-up is a sleep that ended: one voluntary context switch of its one thread
    # (a few more may come from the machine; none when it is not asked to wake).
    assert 0.8 * 10 * seconds <= cpu.wakeups() <= 2 * 10 * seconds
    assert cpu.seconds() > 0


async def test_the_idle_floor_asked_to_wake_less_wakes_less() -> None:
    async with start_idle_floor(30.0) as floor:  # every 2 s
        cpu, _, _ = await _window(floor.pid, 2.0)
    assert cpu.wakeups() <= 4


def test_the_idle_floor_refuses_a_rate_that_is_not_above_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.idle_floor", "--per-minute", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "--per-minute must be above 0" in done.stderr


def test_the_idle_scenario_at_smoke_size_measures_each_level_and_its_floor(
    tmp_path: Path,
) -> None:
    """End to end (about 20 s): the levels, each after its settle with the indexer caught
    up, and the floor woken as often as the server was at 0 active agents."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "idle", "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result] = out.glob("bench-*.json")
    [idle] = json.loads(result.read_text())["scenarios"]
    levels = idle["idle"]
    assert [level["active_agents"] for level in levels] == [0, 20]
    for level in levels:
        assert level["active_actors_reported"] == level["active_agents"]
        assert level["search_caught_up_at_start"] == 1.0
        assert level["cpu_ms_per_s"] > 0
        assert set(level["per_idle_minute"]) == {
            "wakeups", "commits", "read_only", "hops", "search_batches_applied",
        }  # fmt: skip
    floor = idle["idle_floor"]
    assert floor["wakes_per_minute"] == levels[0]["per_idle_minute"]["wakeups"]
    assert floor["cpu_ms_per_s"] > 0
    assert "floor: trio, waking only" in done.stdout
