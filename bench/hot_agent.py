"""The hot-agent scenario (a mixin of bench/scenarios.py's Runner): one agent's history grows.

One agent, one conversation, messages one after another to an instant provider, so each
message's cost is the server's own and the history grows by a user message and a reply per
message (until the context window is full and the oldest are summarized away). The issue's
target: CPU per message flat within 10 % over 1,000 messages of one history. The server's
CPU (psutil, as every scenario reads it) is read at the end of every window of
`window_messages` messages, from the driver's callback after each reply (the conversation is
serial, so a window's end is exactly between two messages).

This machine's speed drifts by more than that 10 % within a minute (the same code measured
6.3-9.8 ms a message in runs minutes apart), so each window of the hot agent is followed by
a reference window: as many messages to an agent of its own, one of those created and given
one message before the measurement, so its history is as short as the hot agent's first
window's (a reset would not do: it deletes the history and unindexes it, O(history)). A
hot window's CPU over the mean of the reference windows on either side of it is its cost
against a short history measured at the same moment; the growth is a straight line fitted
through those ratios over all the windows, its value at the last window over its value at
the first. The raw first and last windows are still reported.

Before the history starts, a background agent gets messages for `background_s` seconds (15,
the tombstone collector's horizon and interval): the server's background loops then run at
the rate they keep for the rest of the run from the first window on. Without it the first
window (under a second at this rate) is the only one that precedes the indexer's first
drain (it settles 1 s) and the first tombstone collection, and so looks cheaper than every
later one by their share: that, not the history, was most of the "growth" measured before
(bench/RESULTS.md, 2026-12-06). `--background-s 0` measures the cold start as before.

With `--profile py-spy` the first and the last hot window are recorded apart
(`profile-hot-agent-first.txt`, `-last.txt`), so what grows with the history shows as the
difference: `python -m bench.profile_summary LAST --against FIRST`.
"""

from __future__ import annotations

import itertools
import signal
import statistics
from typing import Any

import trio

from bench.http1 import Connection, Reply
from bench.load import Sample, run_load
from bench.mixin import RunnerPart
from bench.procs import Usage
from bench.stats import fitted_growth, percentiles

__all__ = ["HotAgent", "recipient"]


class HotAgent(RunnerPart):
    _message_scenario: Any

    async def scenario_hot_agent(self, p: dict[str, Any]) -> dict[str, Any]:
        """One agent, one conversation, messages one after another (its history grows); CPU
        per message per window of `window_messages`, each beside a reference window."""
        per = max(1, int(p.get("window_messages") or 100))
        hot_total = -(-int(p["messages"]) // per) * per  # whole windows
        total = 2 * hot_total  # a reference window after each hot one
        marks: list[tuple[int, Usage | None]] = []  # (messages done, server usage then)
        done: list[Sample] = []
        server_of: list[Any] = []
        profilers: list[Any] = []  # every one started (the first window's, the last's)
        running: list[Any] = [None]
        agents: list[str] = []  # the hot agent, the background one, the references
        sent = itertools.count()

        def profile(label: str | None) -> None:
            """Stop the running profiler (py-spy writes its file on SIGINT; waited for at
            the end), then start one for `label`."""
            if running[0] is not None:
                running[0].send_signal(signal.SIGINT)
            running[0] = self._start_profiler(label, server_of[0]) if label else None
            profilers.append(running[0])

        def on_sample(sample: Sample) -> None:
            done.append(sample)
            n = len(done)
            if n % per == 0:
                marks.append((n, _usage(server_of[0])))
            if n == per and total > 2 * per:
                profile(None)
            if n == total - 2 * per and total > 2 * per:
                profile("hot-agent-last")
            if n == total - per:
                profile(None)

        def on_start(server: Any) -> None:  # the measured window begins
            server_of.append(server)
            marks.append((0, _usage(server)))
            profile("hot-agent-first")

        async def exchange(conn: Connection, agent: str, body: bytes) -> Reply:
            to = recipient(next(sent), per, agents)
            return await conn.request("POST", f"/v1/agents/{to}/messages", body)

        async def background(url: str, created: list[str]) -> None:
            agents.extend(created)  # the hot agent, the background one, the references
            seconds = float(p.get("background_s") or 0)
            if seconds <= 0:
                return
            finished = self.progress(f"hot-agent: background messages for {seconds:g} s", 1)
            deadline = trio.current_time() + seconds
            while trio.current_time() < deadline:
                await run_load(
                    url, agents[1:2], total=20, concurrency=1, headers=self.options.headers
                )
            finished()

        result = await self._message_scenario(
            "hot-agent",
            {**p, "agents": 2 + -(-hot_total // per), "messages": total},
            after_warm_up=background,
            on_sample=on_sample,
            on_start=on_start,
            profile_whole=False,
            exchange=exchange,
        )
        profile(None)
        for process in profilers:
            if process is not None:
                await trio.to_thread.run_sync(process.wait)
        windows = _windows(marks, done)
        result["windows"] = windows[0::2]  # the hot agent's
        result["reference_windows"] = windows[1::2]
        result["growth"] = _growth(result["windows"], result["reference_windows"], per)
        return result


def recipient(n: int, per: int, agents: list[str]) -> str:
    """Message n of the measured windows: to the hot agent (`agents[0]`) in even windows
    of `per`, in odd window 2k+1 to the k-th reference (`agents[2 + k]`; `agents[1]` is
    the background's)."""
    window = n // per
    return agents[0] if window % 2 == 0 else agents[2 + window // 2]


def _growth(hot: list[dict[str, Any]], reference: list[dict[str, Any]], per: int) -> dict:
    """Each hot window against the reference windows around it; the first and last."""
    cpus = [w["cpu_ms_per_msg"] for w in hot]
    refs = [w["cpu_ms_per_msg"] for w in reference]
    against: list[float | None] = []
    for k, window in enumerate(hot):
        around = [r for r in refs[max(0, k - 1) : k + 1] if r]
        cpu = cpus[k]
        against.append(round(cpu / statistics.mean(around), 3) if cpu and around else None)
        window["vs_reference"] = against[-1]
        window["sent"] = window["messages"]  # its place among both agents' messages
        window["messages"] = [k * per, (k + 1) * per]  # its place in the hot history
    cpu_first, cpu_last = (cpus[0], cpus[-1]) if cpus else (None, None)
    fitted = fitted_growth(against)
    return {
        "window_messages": per,
        "first_cpu_ms_per_msg": cpu_first,
        "last_cpu_ms_per_msg": cpu_last,
        "last_vs_first": round(cpu_last / cpu_first, 3) if cpu_first and cpu_last else None,
        # The figure to read: each hot window's CPU over the short history's beside it,
        # fitted by a line over the windows; its value at the last window over the first.
        "vs_reference_fitted": round(fitted, 3) if fitted is not None else None,
    }


def _usage(server: Any) -> Usage | None:
    return server.usage() if server is not None else None


def _windows(marks: list[tuple[int, Usage | None]], done: list[Sample]) -> list[dict[str, Any]]:
    """CPU per message, throughput, latency and errors of each window between two marks."""
    windows = []
    for (a, before), (b, after) in itertools.pairwise(marks):
        samples = done[a:b]
        cpu = after.cpu - before.cpu if before is not None and after is not None else None
        wall = samples[-1].end - samples[0].start if samples else 0.0
        windows.append({
            "messages": [a, b],
            "cpu_ms_per_msg": round(cpu * 1000 / (b - a), 3) if cpu is not None else None,
            "msgs_per_s": round((b - a) / wall, 1) if wall else None,
            "latency_ms": percentiles([s.latency for s in samples if s.ok]),
            "errors": sum(1 for s in samples if not s.ok),
        })  # fmt: skip
    return windows
