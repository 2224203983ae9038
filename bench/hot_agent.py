"""The hot-agent scenario (a mixin of bench/scenarios.py's Runner): one agent's history grows.

One agent, one conversation, messages one after another to an instant provider, so each
message's cost is the server's own and the history grows by a user message and a reply per
message (until the context window is full and the oldest are summarized away). The issue's
target: CPU per message flat within 10 % over 1,000 messages of one history. The server's
CPU (psutil, as every scenario reads it) is read at the end of every window of
`window_messages` messages, from the driver's callback after each reply (the conversation is
serial, so a window's end is exactly between two messages); the first window against the
last, in the same run under the same machine load, is the figure to read. On a shared
machine a window in which the server had to wait (its messages per second fall, its p50
rises) also costs more CPU per message, 20-50 % here: each window shows its throughput and
latency beside its CPU, so such a window can be told from growth.

With `--profile py-spy` the first and the last window are recorded apart
(`profile-hot-agent-first.txt`, `-last.txt`), so what grows with the history shows as the
difference: `python -m bench.profile_summary LAST --against FIRST`.
"""

from __future__ import annotations

import itertools
import signal
import statistics
from typing import Any

import trio

from bench.load import Sample
from bench.mixin import RunnerPart
from bench.procs import Usage
from bench.stats import percentiles

__all__ = ["HotAgent"]


class HotAgent(RunnerPart):
    _message_scenario: Any

    async def scenario_hot_agent(self, p: dict[str, Any]) -> dict[str, Any]:
        """One agent, one conversation, messages one after another (its history grows); CPU
        per message per window of `window_messages`."""
        per = max(1, int(p.get("window_messages") or 100))
        total = int(p["messages"])
        marks: list[tuple[int, Usage | None]] = []  # (messages done, server usage then)
        done: list[Sample] = []
        server_of: list[Any] = []
        profilers: list[Any] = []  # every one started (the first window's, the last's)
        running: list[Any] = [None]

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
            if n == per and total > per:
                profile(None)
            if n == total - per and total > per:
                profile("hot-agent-last")
            if n == total:
                profile(None)

        def on_start(server: Any) -> None:  # the measured window begins
            server_of.append(server)
            marks.append((0, _usage(server)))
            profile("hot-agent-first")

        result = await self._message_scenario(
            "hot-agent", p, on_sample=on_sample, on_start=on_start, profile_whole=False
        )
        profile(None)
        for process in profilers:
            if process is not None:
                await trio.to_thread.run_sync(process.wait)
        result["windows"] = _windows(marks, done)
        first, last = (
            (result["windows"][0], result["windows"][-1]) if result["windows"] else ({}, {})
        )
        cpu_first, cpu_last = first.get("cpu_ms_per_msg"), last.get("cpu_ms_per_msg")
        # One window the machine's other work slowed can move first/last by 30 % here: the
        # medians of the first three and the last three windows say the same less noisily.
        cpus = [w["cpu_ms_per_msg"] for w in result["windows"] if w["cpu_ms_per_msg"]]
        head, tail = statistics.median(cpus[:3] or [0]), statistics.median(cpus[-3:] or [0])
        result["growth"] = {
            "window_messages": per,
            "first_cpu_ms_per_msg": cpu_first,
            "last_cpu_ms_per_msg": cpu_last,
            "last_vs_first": round(cpu_last / cpu_first, 3) if cpu_first and cpu_last else None,
            "last3_vs_first3": round(tail / head, 3) if head and tail and len(cpus) >= 6 else None,
        }
        return result


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
