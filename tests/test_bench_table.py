"""`python -m bench table`: the issue's rows at their own sizes, one verdict per figure.

The verdicts are read from real results: the JSON of the last table measured by hand
(bench/results/2026-12-06-table8-*, whose figures bench/RESULTS.md quotes). The command's
wiring (which scenario at which size, how often) runs with a stand-in runner: the
scenarios themselves run end to end in tests/test_bench_smoke.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from bench import table
from bench.table import verdicts

RESULTS = Path(__file__).parents[1] / "bench" / "results"
TABLE8 = {
    "steady": ["steady"],
    "one-client": ["one-client"],
    "idle": ["idle"],
    "hot-agent": [f"hot-agent-{i}" for i in (1, 2, 3, 4)],
    "cold-activation": ["cold-activation-100k"],
}


def _table8() -> dict[str, list[dict[str, Any]]]:
    def load(name: str) -> dict[str, Any]:
        run = json.loads((RESULTS / f"2026-12-06-table8-{name}.json").read_text())
        return run["scenarios"][0]

    return {row: [load(name) for name in names] for row, names in TABLE8.items()}


def test_the_verdicts_of_a_measured_table_are_those_results_md_gives() -> None:
    rows = {row.figure.split(",")[0].split(":")[0]: row for row in verdicts(_table8())}
    steady = rows["steady CPU per message / relay floor CPU per request"]
    assert (steady.measured, steady.met) == ("7.55 / 1.98 ms = 3.81x", False)
    one = rows["CPU per message"]
    assert (one.measured, one.met) == ("11.47 ms = 1.52x", False)  # missed by 0.02
    assert one.floor == "relay floor: 1.63x"  # the floor's own, one request at a time
    latency = rows["added latency"]
    assert (latency.measured, latency.met) == ("14.0 / 21.0 ms", False)
    idle = rows["idle server CPU"]
    assert idle.measured == "0.440 ms/s at 0 / 0.445 ms/s at 200 / 0.593 ms/s at 10,000"
    assert idle.met is False  # 0.593 at 10,000: each level must be under 0.5
    hot = rows["hot agent"]
    assert (hot.measured, hot.met) == ("1.06, 0.94, 0.93, 1.21 (mean 1.04)", True)
    activation = rows["activation p99"]
    assert activation.figure == "activation p99, 100,000 agents stored"
    assert activation.measured == "22.9 ms from 4 clients; one at a time 7.6 ms"
    assert activation.met is False


def test_a_figure_measured_under_its_target_is_met_and_one_not_run_has_no_verdict() -> None:
    results = _table8()
    results["steady"][0]["server"]["cpu_ms_per_msg"] = 2.5  # 1.26x the relay's 1.98
    del results["idle"]
    rows = verdicts(results)
    assert rows[0].met is True
    assert rows[1].met is False  # one client's 11.47 ms is now 4.6x steady's
    idle = next(row for row in rows if row.figure.startswith("idle"))
    assert (idle.measured, idle.met) == ("-", None)
    assert all(row.met is None for row in verdicts({}))  # --no-floor, or nothing ran


class _StandIn:
    """Runner's stand-in: notes each scenario and its sizes, answers table8's result."""

    ran: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, options: Any, progress: Any = None) -> None:
        self.options = options

    async def run(self, name: str) -> dict[str, Any]:
        self.ran.append((name, dict(self.options.overrides)))
        found = _table8()
        if name == "steady" and self.options.overrides.get("concurrency") == 1:
            return found["one-client"][0]
        return found[name][0]


def test_the_command_runs_each_row_at_its_size_and_writes_one_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench.scenarios
    import bench.wake

    monkeypatch.setattr(bench.scenarios, "Runner", _StandIn)
    monkeypatch.setattr(_StandIn, "ran", [])
    woken = {"repeats": 40, "work_ms": {"0": 0.3, "200": 0.6}, "vs_back_to_back": {"200": 2.0}}
    monkeypatch.setattr(bench.wake, "wake_cost", lambda repeats: dict(woken, repeats=repeats))
    args = argparse.Namespace(
        smoke=False, store="sqlite", no_floor=False, floor_requests=2000, seed=7,
        out=tmp_path, keep_data=False,
    )  # fmt: skip
    assert table.main_table(args) == 0
    one_client = {"agents": 1, "messages": 300, "concurrency": 1, "latency": 0.2}
    assert _StandIn.ran == [
        ("steady", {}),
        ("steady", one_client),
        ("steady", dict(one_client, latency=0.0)),
        ("idle", {"agents": 10_000, "window": 60.0}),
        *[("hot-agent", {})] * 4,
        ("cold-activation", {"agents": 100_000}),
    ]
    [written] = tmp_path.glob("bench-*-table.json")
    run = json.loads(written.read_text())
    assert {row: len(results) for row, results in run["rows"].items()} == {
        "steady": 1, "one-client": 1, "one-client-no-wait": 1, "idle": 1, "hot-agent": 4,
        "cold-activation": 1,
    }  # fmt: skip
    assert [v["met"] for v in run["verdicts"]] == [False, False, False, False, True, False]
    assert run["machine"]["wake"] == woken  # measured once, at full size's repeats
    assert "after 200 ms asleep: 2.00x" in run["verdicts"][1]["floor"]
    out = capsys.readouterr().out
    assert "issue 23's table" in out and "MISSED" in out


def test_the_one_client_rows_print_what_waiting_costs_beside_them() -> None:
    results = _table8()
    no_wait = json.loads(json.dumps(results["one-client"][0]))  # its own copy
    no_wait["server"]["cpu_ms_per_msg"] = 8.3  # 1.10x steady's 7.55
    no_wait["overhead_ms"].update(p50=4.8, p99=8.26)
    results["one-client-no-wait"] = [no_wait]
    wake = {"vs_back_to_back": {"0": 1.0, "200": 1.31}}
    rows = verdicts(results, wake)
    assert rows[1].floor == (
        "relay floor: 1.63x; no wait (0 ms provider): 1.10x; "
        "this machine, the same Python after 200 ms asleep: 1.31x"
    )
    assert rows[2].floor.endswith("; no wait (0 ms provider): 4.8 / 8.3 ms")
    assert [row.met for row in rows] == [row.met for row in verdicts(_table8())]  # context only
    assert verdicts(_table8())[1].floor == "relay floor: 1.63x"  # neither measured: as before


def test_waking_is_each_gap_against_back_to_back_with_the_gaps_taking_turns() -> None:
    from bench.wake import WARM_BURST, wake_cost

    events: list[str] = []
    clock = {"ns": 0, "slept": False}

    def sleep(gap: float) -> None:
        events.append(f"sleep {gap:g}")
        clock["slept"] = True

    def work() -> None:  # 1 ms of thread CPU warm, 2 ms right after a sleep
        clock["ns"] += 2_000_000 if clock["slept"] else 1_000_000
        clock["slept"] = False
        events.append("work")

    found = wake_cost((0.0, 0.2), repeats=3, work=work, sleep=sleep, thread_ns=lambda: clock["ns"])
    assert found == {
        "repeats": 3, "work_ms": {"0": 1.0, "200": 2.0}, "vs_back_to_back": {"0": 1.0, "200": 2.0},
    }  # fmt: skip
    one_turn = ["work"] * (WARM_BURST + 1) + ["sleep 0.2", "work"]
    assert events == ["work"] + one_turn * 3  # one call first, then the gaps in turn
    with pytest.raises(ValueError, match="first gap must be 0"):
        wake_cost((0.2,), repeats=1, work=work, sleep=sleep)
    from bench.wake import main

    with pytest.raises(SystemExit) as refused:  # the command refuses it before measuring
        main(["--gaps", "0.2"])
    assert refused.value.code == 2


def test_an_idle_level_whose_agents_did_not_all_stay_active_says_so() -> None:
    results = _table8()
    results["idle"][0]["idle"][2]["active_actors_reported"] = 9800.0  # 200 deactivated
    idle = next(row for row in verdicts(results) if row.figure.startswith("idle"))
    assert idle.measured.endswith("0.593 ms/s at 10,000 (the server reported 9,800 active)")
    assert "at 200 (" not in idle.measured  # a level whose count matched says nothing more


def test_an_idle_level_whose_window_held_the_indexers_catch_up_says_so() -> None:
    results = _table8()
    results["idle"][0]["idle"][2]["per_idle_minute"]["search_batches_applied"] = 12.0
    idle = next(row for row in verdicts(results) if row.figure.startswith("idle"))
    assert idle.measured.endswith("0.593 ms/s at 10,000 (its indexer applied 12 batches a minute)")
    assert "at 200 (" not in idle.measured


def test_the_idle_row_prints_its_floor_beside_it() -> None:
    results = _table8()
    idle = next(row for row in verdicts(results) if row.figure.startswith("idle"))
    assert idle.floor == ""  # table 8 predates the idle floor
    results["idle"][0]["idle_floor"] = {"wakes_per_minute": 22.0, "cpu_ms_per_s": 0.1456}
    idle = next(row for row in verdicts(results) if row.figure.startswith("idle"))
    assert idle.floor == "trio waking 22 times a minute: 0.146 ms/s"


def test_the_activation_row_prints_the_same_figure_for_two_warm_messages_beside_it() -> None:
    results = _table8()
    row = next(r for r in verdicts(results) if r.figure.startswith("activation"))
    assert row.floor == ""  # table 8 predates it
    act = results["cold-activation"][0]
    act["warm_pairs_ms"] = {"p99": 12.239}
    act["warm_pairs_alone_ms"] = {"p99": 16.059}
    row = next(r for r in verdicts(results) if r.figure.startswith("activation"))
    assert row.floor == (
        "two warm messages' difference: 12.2 ms from 4 clients; one at a time 16.1 ms"
    )
    assert row.measured == "22.9 ms from 4 clients; one at a time 7.6 ms"  # unchanged


def test_a_flag_the_table_does_not_take_is_refused_not_ignored() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bench", "table", "--agents", "5", "--llm", "sim"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--agents, --llm cannot be used with it" in done.stderr
    assert not done.stdout  # nothing ran
