"""What a bench run shows: the table (with the ratios and the targets), the JSON, the PNG."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from bench.load import Sample
from bench.params import TARGETS

__all__ = ["machine", "print_table", "write_json", "write_plot"]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _target(result: dict[str, Any]) -> str:
    """The issue's target for this scenario, and whether this run met it."""
    name = result["scenario"]
    parts = []
    if name == "steady":
        ratio = result["ratios"]["cpu_vs_relay"]
        if ratio is not None:
            ok = "met" if ratio <= TARGETS["cpu_vs_relay"] else "MISSED"
            parts.append(f"CPU <= {TARGETS['cpu_vs_relay']}x relay: {ok}")
        p99 = result["overhead_ms"]["p99"]
        if p99 is not None:
            ok = "met" if p99 <= TARGETS["overhead_p99_ms"] else "MISSED"
            parts.append(f"overhead p99 <= {TARGETS['overhead_p99_ms']:g} ms: {ok}")
    elif name == "cold-activation":
        p99 = (result.get("activation_ms") or {}).get("p99")
        if p99 is not None:
            ok = "met" if p99 <= TARGETS["activation_p99_ms"] else "MISSED"
            parts.append(f"activation p99 {p99:.1f} ms <= {TARGETS['activation_p99_ms']:g}: {ok}")
        alone = (result.get("activation_alone_ms") or {}).get("p99")
        if alone is not None:
            parts.append(f"one client at a time: p99 {alone:.1f} ms")
        null = (result.get("warm_pairs_ms") or {}).get("p99")
        if null is not None:
            parts.append(f"two warm messages' difference: p99 {null:.1f} ms")
    elif name == "idle-footprint":
        kb = (result.get("footprint") or {}).get("rss_kb_per_idle_agent")
        if kb is not None:
            ok = "met" if kb <= TARGETS["rss_kb_per_idle_agent"] else "MISSED"
            parts.append(f"{kb:.1f} kB/agent <= {TARGETS['rss_kb_per_idle_agent']:g}: {ok}")
    elif name == "streaming":
        ttfc = (result.get("streaming") or {}).get("time_to_first_chunk_ms") or {}
        if ttfc.get("p50") is not None:
            parts.append(f"first chunk p50 {ttfc['p50']:.1f} ms, p99 {ttfc['p99']:.1f} ms")
    elif name == "agents-messaging" and result.get("hops"):
        hops = result["hops"]
        parts.append(f"{hops['hops_per_s']} hops/s, {hops['cpu_ms_per_hop']} ms CPU/hop")
    elif name == "approvals" and result.get("approvals"):
        a = result["approvals"]
        parts.append(
            f"{a['approved_per_s']} approved/s, {a['cpu_ms_per_approved_call']} ms CPU each"
        )
    elif name == "mcp-calls" and result.get("mcp"):
        m = result["mcp"]
        parts.append(f"{m['calls_per_s']} MCP calls/s, {m['cpu_ms_per_call']} ms CPU each")
    elif name == "conversations" and result.get("conversations"):
        c = result["conversations"]
        parts.append(f"{c['agents']} agents x {c['per_agent']} conversations at once")
    elif name == "hot-agent" and result.get("growth"):
        growth = result["growth"]
        against = growth.get("vs_reference_fitted")
        if against is not None:
            ok = "met" if against <= TARGETS["hot_agent_growth"] else "MISSED"
            parts.append(
                f"CPU per message over a short history's beside it, last window / first "
                f"(fitted) {against:.2f} <= {TARGETS['hot_agent_growth']:g}: {ok}"
            )
        if growth.get("last_vs_first") is not None:
            parts.append(f"raw last/first window {growth['last_vs_first']:.2f}")
    elif name == "file-ingestion" and result.get("files"):
        f = result["files"]
        parts.append(
            f"{f['files_per_s']} files/s, {f['mb_per_s']} MB/s, {f['chunks_per_s']} chunks/s; "
            f"{f['cpu_ms_per_file_net_of_polls']} ms CPU/file net of polls, "
            f"{f['cpu_vs_floor']}x the parse floor"
        )
    elif name == "schedules" and result.get("firings"):
        f = result["firings"]
        parts.append(
            f"{f['completed']} of {f['schedules']} fired and completed, "
            f"{f['firings_per_s']} firings/s from the due instant, "
            f"{f['cpu_ms_per_firing']} ms CPU each"
        )
    elif name == "two-nodes" and result.get("forwarded_share") is not None:
        parts.append(f"forwarded {result['forwarded_share'] * 100:.0f}%")
    return "; ".join(parts)


def _print_idle(results: list[dict[str, Any]], console: Console) -> None:
    idle = Table(title="idle server (no requests in the window; the server process's own CPU)")
    for column in (
        "active agents",
        "settled after s",
        "window s",
        "CPU ms",
        "CPU ms/s",
        "loop thread ms/s",
        "wake-ups/min",
        "commits/min",
        "reads/min",
        "hops/min",
        "RSS MB",
        "target",
    ):
        idle.add_column(column, justify="right")
    for r in results:
        for level in r.get("idle") or ():
            per_s = level["cpu_ms_per_s"]
            ok = "met" if per_s <= TARGETS["idle_cpu_ms_per_s"] else "MISSED"
            counted = level.get("per_idle_minute") or {}
            idle.add_row(
                _f(level["active_agents"]),
                _f(level.get("settled_after_s")),
                _f(level["window_s"]),
                _f(level["cpu_ms"], 1),
                _f(per_s, 3),
                _f(level.get("loop_thread_cpu_ms_per_s"), 3),
                _f(counted.get("wakeups")),
                _f(counted.get("commits")),
                _f(counted.get("read_only")),
                _f(counted.get("hops")),
                _f(level["rss_mb"]),
                f"<= {TARGETS['idle_cpu_ms_per_s']:g} ms/s: {ok}",
            )
        floor = r.get("idle_floor")
        if floor:  # bench/idle_floor.py: a trio process that only wakes, as often
            idle.add_row(
                "floor: trio, waking only", "-", _f(floor["window_s"]), "-",
                _f(floor["cpu_ms_per_s"], 3), _f(floor["loop_thread_cpu_ms_per_s"], 3),
                _f(floor["wakeups_per_minute_measured"]), "-", "-", "-", "-", "",
            )  # fmt: skip
    if idle.row_count:
        console.print(idle)


def _print_windows(results: list[dict[str, Any]], console: Console) -> None:
    """hot-agent: CPU per message window by window, as its one history grows."""
    table = Table(title="hot-agent: one history, window by window (the server's CPU)")
    columns = ("messages", "CPU ms/msg", "x first", "x reference", "msgs/s", "p50 ms", "p99 ms")
    for column in (*columns, "errors"):
        table.add_column(column, justify="right")
    for r in results:
        windows = r.get("windows") or []
        first = windows[0]["cpu_ms_per_msg"] if windows else None
        for w in windows:
            cpu = w["cpu_ms_per_msg"]
            table.add_row(
                f"{w['messages'][0]}-{w['messages'][1]}",
                _f(cpu, 2),
                _f(round(cpu / first, 2) if cpu is not None and first else None, 2),
                _f(w.get("vs_reference"), 2),
                _f(w["msgs_per_s"]),
                _f(w["latency_ms"]["p50"]),
                _f(w["latency_ms"]["p99"]),
                _f(w["errors"]),
            )
    if table.row_count:
        console.print(table)


def print_table(results: list[dict[str, Any]], console: Console | None = None) -> None:
    # Wide enough for every column when the output is a log, not a terminal.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    table = Table(title="kelpie-trio bench", show_lines=False)
    for column in (
        "scenario",
        "msgs/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "overhead p99",
        "CPU ms/msg",
        "x relay",
        "x trivial",
        "RSS MB",
        "act/s",
        "target",
    ):
        table.add_column(column, justify="left" if column in ("scenario", "target") else "right")
    for r in results:
        if "idle" in r:
            continue  # no messages: its own table below
        lat, over = r["latency_ms"], r["overhead_ms"]
        table.add_row(
            r["scenario"],
            _f(r["msgs_per_s"]),
            _f(lat["p50"]),
            _f(lat["p95"]),
            _f(lat["p99"]),
            _f(over["p99"]),
            _f(r["server"]["cpu_ms_per_msg"], 2),
            _f(r["ratios"]["cpu_vs_relay"], 2),
            _f(r["ratios"]["cpu_vs_trivial"], 2),
            _f(r["server"]["rss_mb"]),
            _f(r.get("activations_per_s")),
            _target(r),
        )
        if r.get("errors"):
            table.add_row("", f"[red]{r['errors']} errors {r.get('error_statuses')}[/red]")
    if table.row_count:
        console.print(table)
    _print_idle(results, console)
    _print_windows(results, console)

    floor = Table(title="framework floor (same run, same concurrency, server stopped)")
    for column in ("scenario", "route", "reqs/s", "p50 ms", "p99 ms", "CPU ms/req", "provider ms"):
        floor.add_column(column, justify="left" if column in ("scenario", "route") else "right")
    for r in results:
        for route, f in (r.get("floor") or {}).items():
            floor.add_row(
                r["scenario"],
                route,
                _f(f["reqs_per_s"]),
                _f(f["latency_ms"]["p50"]),
                _f(f["latency_ms"]["p99"]),
                _f(f["cpu_ms_per_req"], 2),
                _f(f["provider_cpu_ms_per_req"], 2),
            )
    if floor.row_count:
        console.print(floor)


def write_json(path: Path, run: dict[str, Any]) -> None:
    path.write_text(json.dumps(run, indent=2, sort_keys=False) + "\n")


def write_plot(path: Path, results: list[dict[str, Any]], samples: dict[str, list[Sample]]) -> None:
    """Per scenario: a latency histogram (total and server overhead) and throughput over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if samples.get(r["scenario"])]
    rows = max(1, len(shown))
    fig, axes = plt.subplots(rows, 2, figsize=(12, 3.2 * rows), squeeze=False)
    for row, r in zip(axes, shown, strict=False):
        name = r["scenario"]
        ok = [s for s in samples[name] if s.ok]
        provider = r["params"].get("latency", 0.0)
        latencies = [s.latency * 1000 for s in ok]
        overhead = [max(0.0, (s.latency - s.steps * provider) * 1000) for s in ok]
        row[0].hist(latencies, bins=60, alpha=0.6, label="latency")
        if provider:
            row[0].hist(overhead, bins=60, alpha=0.6, label="server overhead")
        row[0].set_title(f"{name}: latency (ms)")
        row[0].set_yscale("log")
        row[0].legend()
        series = r.get("throughput_per_s") or []
        row[1].plot(range(len(series)), series, drawstyle="steps-post")
        row[1].set_title(f"{name}: messages completed per second")
        row[1].set_xlabel("s")
    if not shown:
        axes[0][0].text(0.5, 0.5, "no samples", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def python_line() -> str:
    return f"Python {sys.version.split()[0]} on {platform.platform()}"
