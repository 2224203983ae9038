"""`python -m bench table`: the performance issue's table, every row measured in one run.

Each row runs its scenario at the size the issue names (the rows differ: steady's 200
conversations, one client at a time, an idle node at up to 10,000 active agents, one hot
history, 100,000 stored agents), each beside its own framework floor. It prints the
figures with the targets and a verdict per row, and writes one JSON of every result.
Beside the one-client figures it prints what the relay floor itself does under the same
load shape: a target that asks less of the server than of the floor shows as such. And
what waiting costs: the same client with a provider that answers at once (no process
sleeps between requests), and this machine's own cost of waking (bench/wake.py: the same
Python work after a 200 ms sleep against back to back, no server involved).

`--smoke` runs every row at tiny sizes. Tests (tests/test_bench_table.py) check the
verdicts against a measured table and the wiring with a stand-in runner; the bench smoke
checks that the scenarios give the fields read here. No figure is asserted: the targets
are reported (`bench/params.py`, TARGETS).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import attrs

from bench.params import TARGETS

__all__ = ["ROWS", "Verdict", "main_table", "verdicts"]

# The rows: (key, scenario, sizes at full size, sizes under --smoke, runs).
# The hot agent's growth is fitted per run and spread over runs; it is run four times.
ROWS: tuple[tuple[str, str, dict[str, Any], dict[str, Any], int], ...] = (
    ("steady", "steady", {}, {}, 1),
    (
        "one-client",
        "steady",
        {"agents": 1, "messages": 300, "concurrency": 1, "latency": 0.2},
        {"agents": 1, "messages": 10, "concurrency": 1, "latency": 0.05},
        1,
    ),
    # The same client with a provider that answers at once: no process waits between
    # requests. Printed beside the one-client rows (what the wait itself costs), no verdict.
    (
        "one-client-no-wait",
        "steady",
        {"agents": 1, "messages": 300, "concurrency": 1, "latency": 0.0},
        {"agents": 1, "messages": 10, "concurrency": 1, "latency": 0.0},
        1,
    ),
    ("idle", "idle", {"agents": 10_000, "window": 60.0}, {}, 1),
    ("hot-agent", "hot-agent", {}, {}, 4),
    ("cold-activation", "cold-activation", {"agents": 100_000}, {}, 1),
)
SMOKE_RUNS = {"hot-agent": 2}  # fewer repeats under --smoke


@attrs.frozen
class Verdict:
    figure: str
    measured: str
    target: str
    met: bool | None  # None: not measured in this run
    floor: str = ""  # what the framework floor does under the same load shape


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _at(result: dict[str, Any] | None, *path: str) -> Any:
    """A figure of a result, or None where the run has none (no floor: --no-floor)."""
    for key in path:
        if not isinstance(result, dict):
            return None
        result = result.get(key)
    return result


def _first(results: dict[str, list[dict[str, Any]]], row: str) -> dict[str, Any] | None:
    return (results.get(row) or [None])[0]


def verdicts(
    results: dict[str, list[dict[str, Any]]], wake: dict[str, Any] | None = None
) -> list[Verdict]:
    """The issue's six figures from the rows' results and, if measured, the machine's
    cost of waking (bench/wake.py). A pure function: tested apart."""
    out: list[Verdict] = []
    steady, one = _first(results, "steady"), _first(results, "one-client")
    no_wait = _first(results, "one-client-no-wait")
    steady_cpu = _at(steady, "server", "cpu_ms_per_msg")
    steady_relay = _at(steady, "floor", "relay", "cpu_ms_per_req")
    ratio = _ratio(steady_cpu, steady_relay)
    out.append(
        Verdict(
            "steady CPU per message / relay floor CPU per request",
            f"{steady_cpu:.2f} / {steady_relay:.2f} ms = {ratio:.2f}x" if ratio else "-",
            f"<= {TARGETS['cpu_vs_relay']}x",
            None if ratio is None else ratio <= TARGETS["cpu_vs_relay"],
        )
    )
    one_cpu = _at(one, "server", "cpu_ms_per_msg")
    one_ratio = _ratio(one_cpu, steady_cpu)
    # The relay floor one request at a time, against its own loaded figure.
    floor_one = _ratio(_at(one, "floor", "relay", "cpu_ms_per_req"), steady_relay)
    target = TARGETS["one_client_cpu_vs_steady"]
    context = [f"relay floor: {floor_one:.2f}x"] if floor_one else []
    no_wait_ratio = _ratio(_at(no_wait, "server", "cpu_ms_per_msg"), steady_cpu)
    if no_wait_ratio:
        context.append(f"no wait (0 ms provider): {no_wait_ratio:.2f}x")
    after_sleep = _at(wake, "vs_back_to_back", "200")
    if after_sleep:
        context.append(f"this machine, the same Python after 200 ms asleep: {after_sleep:.2f}x")
    out.append(
        Verdict(
            "CPU per message, one client, 200 ms provider / steady's",
            f"{one_cpu:.2f} ms = {one_ratio:.2f}x" if one_ratio else "-",
            f"<= {target}x",
            None if one_ratio is None else one_ratio <= target,
            "; ".join(context),
        )
    )
    p50, p99 = _at(one, "overhead_ms", "p50"), _at(one, "overhead_ms", "p99")
    relay_p50 = _at(one, "floor", "relay", "latency_ms", "p50")
    latency_ms = (_at(one, "params", "latency") or 0.0) * 1000
    top50, top99 = TARGETS["one_client_added_p50_ms"], TARGETS["one_client_added_p99_ms"]
    context = [f"relay floor adds {relay_p50 - latency_ms:.1f} ms at p50"] if relay_p50 else []
    no_wait_p50 = _at(no_wait, "overhead_ms", "p50")
    if no_wait_p50 is not None:
        no_wait_p99 = _at(no_wait, "overhead_ms", "p99")
        context.append(f"no wait (0 ms provider): {no_wait_p50:.1f} / {no_wait_p99:.1f} ms")
    out.append(
        Verdict(
            "added latency, one client, p50 / p99",
            f"{p50:.1f} / {p99:.1f} ms" if p50 is not None else "-",
            f"<= {top50:g} / {top99:g} ms",
            None if p50 is None else p50 <= top50 and p99 <= top99,
            "; ".join(context),
        )
    )
    levels = _at(_first(results, "idle"), "idle") or []
    worst = max((level["cpu_ms_per_s"] for level in levels), default=None)
    idle_floor = _at(_first(results, "idle"), "idle_floor")
    out.append(
        Verdict(
            "idle server CPU, by active agents",
            " / ".join(_idle_level(level) for level in levels) or "-",
            f"<= {TARGETS['idle_cpu_ms_per_s']} ms/s at each",
            None if worst is None else worst <= TARGETS["idle_cpu_ms_per_s"],
            f"trio waking {idle_floor['wakes_per_minute']:g} times a minute: "
            f"{idle_floor['cpu_ms_per_s']:.3f} ms/s"
            if idle_floor
            else "",
        )
    )
    growths = [
        g for r in results.get("hot-agent") or []
        if (g := _at(r, "growth", "vs_reference_fitted")) is not None
    ]  # fmt: skip
    mean = round(statistics.fmean(growths), 2) if growths else None
    out.append(
        Verdict(
            "hot agent: CPU per message, last window / a short history's (fitted)",
            ", ".join(f"{g:.2f}" for g in growths) + f" (mean {mean:.2f})" if growths else "-",
            f"<= {TARGETS['hot_agent_growth']:.2f} (flat within 10 %), on the mean of the runs",
            None if mean is None else mean <= TARGETS["hot_agent_growth"],
        )
    )
    act = _first(results, "cold-activation")
    clients = _at(act, "params", "concurrency")

    def loaded_then_alone(loaded: float, alone: float | None) -> str:
        text = f"{loaded:.1f} ms from {clients} clients"
        return text if alone is None else f"{text}; one at a time {alone:.1f} ms"

    act_p99 = _at(act, "activation_ms", "p99")
    alone_p99 = _at(act, "activation_alone_ms", "p99")
    measured = "-" if act_p99 is None else loaded_then_alone(act_p99, alone_p99)
    null_p99 = _at(act, "warm_pairs_ms", "p99")
    null_alone_p99 = _at(act, "warm_pairs_alone_ms", "p99")
    act_floor = ""
    if null_p99 is not None and null_alone_p99 is not None:
        act_floor = "two warm messages' difference: " + loaded_then_alone(null_p99, null_alone_p99)
    out.append(
        Verdict(
            f"activation p99, {_at(act, 'params', 'agents') or 0:,} agents stored",
            measured,
            f"<= {TARGETS['activation_p99_ms']:g} ms",
            None if act_p99 is None else act_p99 <= TARGETS["activation_p99_ms"],
            act_floor,
        )
    )
    return out


def _idle_level(level: dict[str, Any]) -> str:
    """One level's figure; if the server reported another number of active actors in its
    window than the level's (some deactivated, or never activated), that number too, and
    the search index's batches if its indexer was still catching up in the window."""
    text = f"{level['cpu_ms_per_s']:.3f} ms/s at {level['active_agents']:,}"
    reported = level.get("active_actors_reported")
    if reported is not None and round(reported) != level["active_agents"]:
        text += f" (the server reported {round(reported):,} active)"
    batches = level.get("per_idle_minute", {}).get("search_batches_applied")
    if batches:
        text += f" (its indexer applied {batches:g} batches a minute)"
    return text


def print_verdicts(rows: list[Verdict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table(title="issue 23's table (one run)")
    for column in ("figure", "measured", "target", "verdict", "the floor, same load"):
        table.add_column(column)
    for row in rows:
        verdict = {True: "met", False: "MISSED", None: "-"}[row.met]
        table.add_row(row.figure, row.measured, row.target, verdict, row.floor)
    console.print(table)


# Flags of `python -m bench` that the table does not take: each row's sizes are the
# issue's, and it measures a server it starts, on the fake provider.
REFUSED_FLAGS = {
    "base_url": "--base-url", "base_url_b": "--base-url-b", "server_pid": "--server-pid",
    "agents": "--agents", "messages": "--messages", "concurrency": "--concurrency",
    "latency": "--latency", "window": "--window", "window_messages": "--window-messages",
    "background_s": "--background-s", "size_kb": "--size-kb", "profile": "--profile",
    "model": "--model", "embedding": "--embedding",
}  # fmt: skip


def refused_flags(args: argparse.Namespace) -> list[str]:
    """The flags given that the table does not take (it would otherwise ignore them)."""
    given = [flag for name, flag in REFUSED_FLAGS.items() if getattr(args, name, None)]
    if getattr(args, "llm", "fake") != "fake":
        given.append("--llm")
    return given


def main_table(args: argparse.Namespace) -> int:
    """Run every row (each its own Options and servers), then print and write."""
    refused = refused_flags(args)
    if refused:
        print(
            f"bench table runs each row at the issue's size on a server it starts: "
            f"{', '.join(refused)} cannot be used with it (--smoke, --store, --no-floor, "
            f"--floor-requests, --seed, --out and --keep-data can)",
            file=sys.stderr,
        )
        return 2
    import tempfile
    from pathlib import Path

    import trio

    from bench import report
    from bench.cli import _progress, _progress_factory, done_with
    from bench.scenarios import Options, Runner

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="kelpie-bench-table-"))
    run_info: dict[str, Any] = {
        "bench": "kelpie-trio bench 1",
        "table": "issue 23",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": report.machine(),
        "options": {"smoke": args.smoke, "store": args.store},
        "rows": {},
    }
    results: dict[str, list[dict[str, Any]]] = run_info["rows"]
    from bench.wake import wake_cost

    # First, with nothing else of the bench running: the machine's own cost of waking.
    run_info["machine"]["wake"] = wake_cost(repeats=8 if args.smoke else 40)
    try:
        with _progress() as progress:

            async def main() -> None:
                for key, scenario, full, smoke, runs in ROWS:
                    options = Options(
                        store=args.store,
                        smoke=args.smoke,
                        overrides=dict(smoke if args.smoke else full),
                        floor=not args.no_floor,
                        floor_requests=args.floor_requests,
                        seed=args.seed,
                        work_dir=work,
                    )
                    runner = Runner(options, _progress_factory(progress))
                    for _ in range(SMOKE_RUNS.get(key, runs) if args.smoke else runs):
                        result = await runner.run(scenario)
                        result["row"] = key
                        results.setdefault(key, []).append(result)

            trio.run(main)
    finally:
        done_with(work, keep=args.keep_data)
    run_info["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = verdicts(results, run_info["machine"]["wake"])
    run_info["verdicts"] = [attrs.asdict(row) for row in rows]
    print_verdicts(rows)
    json_path = args.out / f"bench-{stamp}-table.json"
    report.write_json(json_path, run_info)
    print(f"wrote {json_path}")
    return 0
