"""The bench runs end to end (CI's ~20 s smoke): it completes and writes well-formed results.

No timing is asserted: the numbers belong to bench/RESULTS.md, not to a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCENARIO_KEYS = {
    "scenario",
    "params",
    "messages",
    "errors",
    "msgs_per_s",
    "latency_ms",
    "overhead_ms",
    "server",
    "provider",
    "activations_per_s",
    "floor",
    "ratios",
}


def test_bench_smoke_completes_and_writes_json_and_png(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "x relay" in done.stdout
    [result] = out.glob("bench-*.json")
    assert list(out.glob("bench-*.png"))
    run = json.loads(result.read_text())
    assert {"machine", "options", "scenarios"} <= run.keys()
    names = [s["scenario"] for s in run["scenarios"]]
    assert names == ["steady", "hot-agent", "streaming", "cold-activation", "idle-footprint"]
    for scenario in run["scenarios"]:
        assert scenario.keys() >= SCENARIO_KEYS, scenario["scenario"]
        assert scenario["errors"] == 0, scenario
        assert {"p50", "p95", "p99"} <= scenario["latency_ms"].keys()
        assert {"cpu_ms_per_msg", "rss_mb"} <= scenario["server"].keys()
        assert {"trivial", "relay"} == scenario["floor"].keys()
        assert {"cpu_vs_relay", "cpu_vs_trivial"} == scenario["ratios"].keys()
    by_name = {s["scenario"]: s for s in run["scenarios"]}
    assert "time_to_first_chunk_ms" in by_name["streaming"]["streaming"]
    assert "activation_ms" in by_name["cold-activation"]
    assert "rss_kb_per_idle_agent" in by_name["idle-footprint"]["footprint"]


def test_bench_conversations_runs_an_agents_threads_at_once(tmp_path: Path) -> None:
    """The conversations scenario at smoke size: 2 agents with 3 conversations each, every
    message sent into a conversation, none failing."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "conversations", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result] = out.glob("bench-*.json")
    [scenario] = json.loads(result.read_text())["scenarios"]
    assert scenario["scenario"] == "conversations" and scenario["errors"] == 0, scenario
    assert scenario["messages"] == 24 and scenario["server"]["cpu_ms_per_msg"] > 0
    assert scenario["conversations"] == {"agents": 2, "per_agent": 3}


def test_bench_approvals_parks_every_turn_and_approves_it(tmp_path: Path) -> None:
    """The approvals scenario at smoke size: every message's turn parks on a call that needs
    approval, the client approves it, the call runs and the run ends with its answer."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "approvals", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result] = out.glob("bench-*.json")
    [scenario] = json.loads(result.read_text())["scenarios"]
    assert scenario["scenario"] == "approvals" and scenario["errors"] == 0, scenario
    assert scenario["messages"] == 20 and scenario["approvals"]["run_steps_mean"] == 2.0


def test_bench_mcp_calls_calls_a_real_mcp_server_each_turn(tmp_path: Path) -> None:
    """The mcp-calls scenario at smoke size: every turn calls the stdio MCP server's tool
    and answers with its result; the server counts every call and no failure."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "mcp-calls", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result] = out.glob("bench-*.json")
    [scenario] = json.loads(result.read_text())["scenarios"]
    assert scenario["scenario"] == "mcp-calls" and scenario["errors"] == 0, scenario
    mcp = scenario["mcp"]
    assert mcp["turn_steps_mean"] == 2.0 and mcp["failures_total"] == 0, mcp
    assert mcp["calls_total"] == 12 + 3  # the measured messages and the warm-up's
