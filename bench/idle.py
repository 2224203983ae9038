"""The idle scenario (a mixin of bench/scenarios.py's Runner): what a server burns doing nothing.

One server; the agents are created first, then activated in steps (0, 200, then `--agents`,
each by one message) and left alone. After each step the server settles (`_settle`), and
its own CPU (every thread's time on a CPU, from /proc/PID/task/*/schedstat in nanoseconds:
psutil's figure counts 10 ms clock ticks, too coarse for a target of 0.5 ms/s) is read
through a window of wall time in which no request is sent: CPU milliseconds per second of wall time.
The issue's target is <= 0.5 ms/s whatever the number of active agents. Figures, never
assertions; on a shared machine, other work does not count here (only the server's own CPU).

A loaded machine makes the milliseconds noisy, so each window also reports counts per idle
minute that do not depend on the load: the server's wake-ups (its threads' voluntary
context switches: each is a sleep that some timer, I/O or thread hand-off ended) and its
store's work from /metrics (commits, transactions that wrote nothing, and SQLite's thread
hops, one per batch of reads and commits).

Its floor (unless `--no-floor`): a trio process that only wakes, as often a minute as the
server did at 0 active agents (bench/idle_floor.py), read through a window the same way:
what waking alone costs on this machine.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from bench.load import index_caught_up, read_metrics
from bench.mixin import RunnerPart
from bench.procs import start_idle_floor

__all__ = ["IDLE_WINDOW_S", "Idle"]

IDLE_WINDOW_S = 60.0  # the periodic work of an idle node repeats within a minute
# After the activations, the server finishes what they started (the indexer catching up
# on every agent's new messages, runs ending): the window starts once `_QUIET_STEPS` steps
# in a row each used under `_QUIET_MS_PER_S`, `_SETTLE_MIN_S` has passed and the server's
# indexer says it is caught up (`kelpie_search_caught_up`: a slow hour's quiet steps once
# fell inside its catch-up on 10,000 agents, 2026-12-07), or after
# `_SETTLE_MAX_S` whatever it still does (a cost that never settles is what the window
# must show, not hide). The bar is a few times the target: at 20 ms/s (until 2026-12-06)
# a window could open while the indexer still caught up on 10,000 agents' messages, and
# counted its tail as idle cost.
_SETTLE_STEP_S = 3.0  # `settle_step_s` of the scenario's sizes (1 at --smoke)
# And never before this long after the last request: the runs the activations ended leave
# tombstones, collected at the collector's first tick (every 5 s) after a version seen
# after them is 10 s old, so up to ~20 s later; a quiet step can fall between two ticks.
# (On 2026-12-06 the 200 and 10,000 windows each held one such collection.)
_SETTLE_MIN_S = 20.0  # `settle_min_s` of the scenario's sizes (0 at --smoke)
_QUIET_MS_PER_S = 2.0
_QUIET_STEPS = 2
_SETTLE_MAX_S = 120.0


_SAMPLE_S = 0.25  # how often the threads are read (see ThreadCpu)
# The server's idle timeout in this scenario: longer than the whole run, so that each
# level's agents are all still active in its window. At the default 300 s the first 200
# agents deactivated inside the 10,000 level's window on a slow run (2026-12-07: 200
# deactivations, 217 commits and 3.6 ms/s in that minute): a one-off cost, and a window
# that no longer had the active agents it was labelled with.
_IDLE_TIMEOUT_S = 3600.0


class ThreadCpu:
    """CPU time of a process's threads since it was made, summed over threads.

    Read per thread from /proc/PID/task/*/schedstat. A thread that ends (trio's worker
    threads do, after 10 s idle) takes its figure with it, so the threads are sampled
    every `_SAMPLE_S` and each keeps its last reading: only what an ending thread ran
    after its last sample is lost, and an idle worker thread runs nothing before it ends.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.first = self._read()
        self.last = dict(self.first)

    def _read(self) -> dict[str, tuple[int, int]]:
        """Per thread: nanoseconds on a CPU, and voluntary context switches."""
        found = {}
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                ns = int((task / "schedstat").read_text().split()[0])
                status = (task / "status").read_text()
                switches = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
            except (OSError, ValueError, IndexError):
                continue  # the thread ended while we looked
            found[task.name] = (ns, switches)
        return found

    def sample(self) -> None:
        self.last.update(self._read())

    def _since_first(self, field: int, *, main_only: bool = False) -> int:
        return sum(v[field] - self.first.get(tid, (0, 0))[field]
                   for tid, v in self.last.items()
                   if not main_only or tid == str(self.pid))  # fmt: skip

    def seconds(self, *, main_only: bool = False) -> float:
        """Every thread's; `main_only`: the main thread's (the trio loop's), which tells the
        loop's own work from its worker threads' (SQLite's commits, reads off the loop)."""
        return self._since_first(0, main_only=main_only) / 1e9

    def wakeups(self) -> int:
        """Voluntary context switches since made: each one a sleep that something ended."""
        return self._since_first(1)


async def _window(pid: int, seconds: float) -> tuple[ThreadCpu, float, float]:
    """The process's threads read through `seconds` of wall time; when it began and ended."""
    cpu, t0 = ThreadCpu(pid), trio.current_time()
    while trio.current_time() < t0 + seconds:
        await trio.sleep(_SAMPLE_S)
        cpu.sample()
    return cpu, t0, trio.current_time()


async def _settle(
    pid: int,
    at_least: float = _SETTLE_MIN_S,
    caught_up: Callable[[], Awaitable[bool]] | None = None,
    step: float = _SETTLE_STEP_S,
) -> float:
    """Wait until the process is quiet (see `_QUIET_MS_PER_S`), `at_least` seconds have
    passed and `caught_up()` says its search indexer has nothing left to apply; the
    seconds it took."""
    started = trio.current_time()
    quiet = 0
    while trio.current_time() - started < _SETTLE_MAX_S:
        cpu, t0, t1 = await _window(pid, step)
        quiet = quiet + 1 if cpu.seconds() * 1000 / (t1 - t0) < _QUIET_MS_PER_S else 0
        if (
            quiet >= _QUIET_STEPS
            and trio.current_time() - started >= at_least
            and (caught_up is None or await caught_up())
        ):
            break
    return trio.current_time() - started


async def _idle_floor(per_minute: float, window: float, settle: float) -> dict[str, float]:
    """The floor (bench/idle_floor.py): a trio process that only wakes, `per_minute` times a
    minute, read through a window as the server is, once `settle` seconds have passed."""
    async with start_idle_floor(per_minute) as floor:
        await trio.sleep(settle)  # its start-up is not its idle cost
        cpu, t0, t1 = await _window(floor.pid, window)
    return {
        "wakes_per_minute": per_minute,
        "window_s": round(t1 - t0, 2),
        "cpu_ms_per_s": round(cpu.seconds() * 1000 / (t1 - t0), 3),
        "loop_thread_cpu_ms_per_s": round(cpu.seconds(main_only=True) * 1000 / (t1 - t0), 3),
        "wakeups_per_minute_measured": round(cpu.wakeups() * 60.0 / (t1 - t0), 1),
    }


class Idle(RunnerPart):
    async def scenario_idle(self, p: dict[str, Any]) -> dict[str, Any]:
        """Idle CPU per second of wall time at 0, 200 and `agents` active agents."""
        top = p["agents"]
        steps = sorted({0, min(200, top), top})
        window = float(p.get("window") or IDLE_WINDOW_S)
        settle_step = p.get("settle_step_s", _SETTLE_STEP_S)
        levels = []
        async with (
            self._provider(0.0) as provider,
            self._server(
                self._data_dir("idle"),
                provider,
                0.0,
                extra_env={"KELPIE_IDLE_TIMEOUT": str(_IDLE_TIMEOUT_S)},
            ) as server,
        ):
            if server is None:
                raise SystemExit("idle needs the server's process: give --server-pid")
            url = self._url(server)

            caught_up = functools.partial(index_caught_up, url, self.options.headers)
            agents = await self._create(url, top) if top else []
            active = 0
            for level in steps:
                if level > active:
                    await self._load(
                        f"idle: activating {level}", url, agents[active:level],
                        level - active, min(p["concurrency"], level - active), one_each=True,
                    )  # fmt: skip
                    active = level
                settled = await _settle(
                    server.pid,
                    p.get("settle_min_s", _SETTLE_MIN_S),
                    caught_up,
                    settle_step,
                )
                before = await read_metrics(url, self.options.headers)
                cpu, t0, t1 = await _window(server.pid, window)
                rss = server.usage().rss
                metrics = await read_metrics(url, self.options.headers)
                cpu_ms = cpu.seconds() * 1000
                per_minute = 60.0 / (t1 - t0)
                # Store counts between the scrapes just before and just after the window
                # (a scrape runs no transaction); wake-ups within the window only.
                counted = {
                    name.removeprefix("store_"): round(
                        (metrics.get(f"kelpie_{name}_total", 0.0)
                         - before.get(f"kelpie_{name}_total", 0.0)) * per_minute, 1)
                    for name in ("store_commits", "store_read_only", "store_hops",
                                 "search_batches_applied")
                }  # fmt: skip
                levels.append({
                    "active_agents": level,
                    "active_actors_reported": metrics.get("kelpie_active_actors"),
                    "settled_after_s": round(settled, 1),
                    "search_caught_up_at_start": before.get("kelpie_search_caught_up"),
                    "window_s": round(t1 - t0, 2),
                    "cpu_ms": round(cpu_ms, 2),
                    "cpu_ms_per_s": round(cpu_ms / (t1 - t0), 3),
                    "loop_thread_cpu_ms_per_s": round(
                        cpu.seconds(main_only=True) * 1000 / (t1 - t0), 3
                    ),
                    "per_idle_minute": {"wakeups": round(cpu.wakeups() * per_minute, 1),
                                        **counted},
                    "rss_mb": round(rss / 2**20, 1),
                })  # fmt: skip
        floor = None
        if self.options.floor and levels and levels[0]["per_idle_minute"]["wakeups"]:
            floor = await _idle_floor(levels[0]["per_idle_minute"]["wakeups"], window, settle_step)
        return {
            "scenario": "idle",
            "params": {
                **p,
                "window": window,
                "store": self.options.store,
                "idle_timeout_s": _IDLE_TIMEOUT_S,
            },
            "idle": levels,
            "idle_floor": floor,  # not "floor": that one is the request floors' routes
            "ratios": {"cpu_vs_relay": None, "cpu_vs_trivial": None},
        }
