"""The bench runs end to end (CI's ~20 s smoke): it completes and writes well-formed results.

No timing is asserted: the numbers belong to bench/RESULTS.md, not to a test.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

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
    # The trio loop's share of a message's CPU: a part of the whole, read apart.
    # (The whole is read in 10 ms clock ticks, the loop's in nanoseconds.)
    steady, sent = by_name["steady"]["server"], by_name["steady"]["messages"]
    loop, whole = steady["loop_thread_cpu_ms_per_msg"] * sent, steady["cpu_ms_per_msg"] * sent
    assert 0 < loop <= whole + 20, steady
    # The window closed once the server's indexer had applied the window's messages (their
    # indexing is their CPU): behind at the last reply (its settle), it was waited for.
    assert by_name["steady"]["index_caught_up_s"] >= 0.5
    assert "time_to_first_chunk_ms" in by_name["streaming"]["streaming"]
    cold = by_name["cold-activation"]
    assert cold["activation_ms"]["p99"] is not None
    assert cold["activation_alone_ms"]["p99"] is not None  # a quarter, one client at a time
    assert cold["warm_pairs_ms"]["p99"] is not None  # the same figure, two warm messages
    # The store's commits per agent (its cold message and its warm one) are counted.
    assert cold["store"]["commits_per_pair"] > 0
    assert cold["store"]["batches_per_pair"] > 0  # on either thread
    assert cold["store"]["slow_inline_commits"] is not None  # scraped, however many
    assert "rss_kb_per_idle_agent" in by_name["idle-footprint"]["footprint"]
    # hot-agent: CPU per message window by window (20 messages, windows of 5), each hot
    # window followed by one of a reference agent's: 40 messages in all
    hot = by_name["hot-agent"]
    assert hot["messages"] == 40
    assert [w["messages"] for w in hot["windows"]] == [[0, 5], [5, 10], [10, 15], [15, 20]]
    assert [w["sent"] for w in hot["windows"]] == [[0, 5], [10, 15], [20, 25], [30, 35]]
    references = [w["messages"] for w in hot["reference_windows"]]
    assert references == [[5, 10], [15, 20], [25, 30], [35, 40]]
    assert all(w["vs_reference"] is not None for w in hot["windows"])
    assert hot["growth"]["last_vs_first"] is not None and "hot-agent: one history" in done.stdout
    # `bench table` reads its verdicts from these fields: each figure these scenarios
    # give has one (the idle row's scenario is not in this run).
    from bench.table import verdicts

    ran = {"steady": [by_name["steady"]], "one-client": [by_name["steady"]],
           "hot-agent": [hot], "cold-activation": [cold]}  # fmt: skip
    assert [row.met is not None for row in verdicts(ran)] == [True, True, True, False, True, True]
    assert hot["growth"]["vs_reference_fitted"] is not None


def test_bench_hot_agent_sends_each_window_to_its_agent() -> None:
    """The hot agent's windows and the reference windows alternate; each reference window
    has an agent of its own, and the background agent gets none of the measured ones."""
    from bench.hot_agent import recipient

    agents = ["hot", "background", "ref0", "ref1"]
    sent = [recipient(n, 2, agents) for n in range(8)]
    assert sent == ["hot", "hot", "ref0", "ref0", "hot", "hot", "ref1", "ref1"]


def test_bench_history_growth_fits_a_line_through_the_ratios() -> None:
    from bench.stats import fitted_growth

    assert fitted_growth([1.0, 1.0, 1.0]) == 1.0
    assert round(fitted_growth([1.0, 1.1, 1.2]), 6) == 1.2
    assert round(fitted_growth([1.0, 1.3, 1.0, 1.3]), 3) == round(1.24 / 1.06, 3)  # slope 0.06
    assert fitted_growth([1.0, 1.1]) is None  # two windows: no line worth the name


async def test_bench_history_growth_measures_both_agents_each_window() -> None:
    from bench.history_growth import measure

    rows = await measure(4, 2)
    assert len(rows) == 2 and all(hot > 0 and reference > 0 for hot, reference in rows)


def test_bench_conversations_runs_an_agents_threads_at_once(tmp_path: Path) -> None:
    """The conversations scenario at smoke size: 2 agents with 3 conversations each, every
    message sent into a conversation, none failing."""
    scenario = _smoke_scenario(tmp_path, "conversations")
    assert scenario["scenario"] == "conversations" and scenario["errors"] == 0, scenario
    assert scenario["messages"] == 24 and scenario["server"]["cpu_ms_per_msg"] > 0
    assert scenario["conversations"] == {"agents": 2, "per_agent": 3}


def test_bench_approvals_parks_every_turn_and_approves_it(tmp_path: Path) -> None:
    """The approvals scenario at smoke size: every message's turn parks on a call that needs
    approval, the client approves it, the call runs and the run ends with its answer."""
    scenario = _smoke_scenario(tmp_path, "approvals")
    assert scenario["scenario"] == "approvals" and scenario["errors"] == 0, scenario
    assert scenario["messages"] == 20 and scenario["approvals"]["run_steps_mean"] == 2.0


def test_bench_mcp_calls_calls_a_real_mcp_server_each_turn(tmp_path: Path) -> None:
    """The mcp-calls scenario at smoke size: every turn calls the stdio MCP server's tool
    and answers with its result; the server counts every call and no failure."""
    scenario = _smoke_scenario(tmp_path, "mcp-calls")
    assert scenario["scenario"] == "mcp-calls" and scenario["errors"] == 0, scenario
    mcp = scenario["mcp"]
    assert mcp["turn_steps_mean"] == 2.0 and mcp["failures_total"] == 0, mcp
    assert mcp["calls_total"] == 12 + 3  # the measured messages and the warm-up's


def test_bench_file_ingestion_waits_for_every_file_and_sets_a_parse_floor(tmp_path: Path) -> None:
    """The file-ingestion scenario at smoke size: 12 uploads of the corpus and a generated
    Markdown file, each waited for until `completed`; the server cut as many chunks as the
    parsers alone did on the same bytes, and spent more CPU per file than they did."""
    from bench.file_ingestion import documents

    scenario = _smoke_scenario(tmp_path, "file-ingestion")
    assert scenario["scenario"] == "file-ingestion" and scenario["errors"] == 0, scenario
    files = scenario["files"]
    assert files["files"] == scenario["messages"] == 12
    docs = documents(16, 7)
    uploaded = sum(len(docs[i % len(docs)][2]) for i in range(12))
    assert files["mb"] == round(uploaded / 2**20, 3)
    floor = files["floor"]
    assert files["chunks"] == floor["chunks"] > 12  # the generated file has several
    assert files["files_per_s"] > 0 and files["chunks_per_s"] > 0 and files["mb_per_s"] > 0
    assert files["cpu_ms_per_file"] > 0 and files["cpu_ms_per_mb"] > 0
    assert files["polls"] > 0 and files["cpu_ms_per_poll"] is not None
    assert floor["cpu_ms_per_file"] > 0 and files["cpu_vs_floor"] > 1


def test_bench_schedules_fires_every_schedule_and_sets_it_beside_the_relay_floor(
    tmp_path: Path,
) -> None:
    """The schedules scenario at smoke size: 12 one-time schedules over 3 agents, all due
    at one instant, each fired once as a completed run with one LLM call, the relay floor
    measured beside it."""
    scenario = _smoke_scenario(tmp_path, "schedules")
    assert scenario["scenario"] == "schedules" and scenario["errors"] == 0, scenario
    firings = scenario["firings"]
    assert (firings["schedules"], firings["agents"], firings["completed"]) == (12, 3, 12)
    assert firings["runs"] == 12  # none fired twice
    assert firings["llm_calls"] == 12 and scenario["llm_calls_per_msg"] == 1.0
    assert firings["cpu_ms_per_firing"] > 0
    # The floor beside it: 12 relayed requests, one LLM call each. Their CPU is read in 10 ms
    # clock ticks, so at this size the ratio may be unknown (no tick counted); its key is there.
    relay = scenario["floor"]["relay"]
    assert (relay["requests"], relay["errors"]) == (12, 0) and "cpu_vs_relay" in scenario["ratios"]
    assert scenario["messages"] == 12 and scenario["latency_ms"]["p50"] >= 0


def test_bench_schedules_counts_a_firing_without_a_completed_run_as_an_error() -> None:
    """A firing's sample runs from the due instant to its run's `completed_at`; a run not
    completed is a 500 and a firing with no run at all a 599."""
    from bench.schedules import _firing_samples

    due = time.time() - 10.0
    done_at = datetime.datetime.fromtimestamp(due + 0.25, datetime.UTC).isoformat()
    runs = [
        {"status": "completed", "completed_at": done_at, "agent_id": "agent-a"},
        {"status": "failed", "completed_at": done_at, "agent_id": "agent-b"},
    ]
    samples = _firing_samples(runs, due, 3, 1)
    assert [s.status for s in samples] == [200, 500, 599]
    assert round(samples[0].latency, 3) == 0.25 and samples[0].steps == 1
    assert len({s.start for s in samples}) == 1  # every firing from the same due instant


def test_bench_compare_refuses_the_scenarios_that_start_their_own_servers(tmp_path: Path) -> None:
    """two-nodes and schedules cannot run against a server given by URL: refused at once,
    before either side runs."""
    for name in ("two-nodes", "schedules"):
        done = subprocess.run(
            [sys.executable, "-m", "bench", "compare", name, "--base-url", "http://127.0.0.1:9",
             "--provider-port", "9", "--out", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2 and name in done.stderr, done.stderr


def test_bench_file_ingestion_documents_are_the_corpus_and_a_generated_one() -> None:
    from bench.file_ingestion import documents, generated_markdown, parse_floor

    docs = documents(8, 7)
    assert [name for name, _, _ in docs] == [
        "handbook.md", "operations.pdf", "tides.pdf", "minutes.docx", "notice.html",
        "generated.md",
    ]  # fmt: skip
    assert len(docs[-1][2]) == 8 * 1024 and docs[-1][2] == generated_markdown(8 * 1024, 7)
    floor = parse_floor(docs)
    # The corpus's five fit in a chunk each; 8 kB of Markdown takes several 1,200-char ones.
    assert floor["files"] == 6 and floor["chunks"] >= 5 + 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bench_compare_runs_the_same_load_on_another_server_side_by_side(
    tmp_path: Path,
) -> None:
    """A second kelpie-trio stands in for "another Letta-compatible server": started by
    hand, pointed at the bench's provider port, compared at a tiny load."""
    provider_port, port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KELPIE_", "OPENAI_"))}
    env |= {"KELPIE_DATA_DIR": str(tmp_path / "other"), "OPENAI_API_KEY": "bench-fake-key",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{provider_port}/v1"}  # fmt: skip
    other = subprocess.Popen(
        [sys.executable, "-m", "kelpie_trio.cli", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # readiness: a bounded wait for its health route
            try:
                if httpx.get(f"{url}/v1/health/").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert other.poll() is None and time.monotonic() < deadline, "it did not start"
            time.sleep(0.1)
        out = tmp_path / "out"
        done = subprocess.run(
            [sys.executable, "-m", "bench", "compare", "steady", "--smoke", "--base-url", url,
             "--provider-port", str(provider_port), "--server-pid", str(other.pid),
             "--out", str(out), "--keep-data"],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    finally:
        other.terminate()
        other.wait(timeout=30)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"kelpie-trio vs {url}" in done.stdout
    [result] = out.glob("compare-*.json")
    run = json.loads(result.read_text())
    [both] = run["scenarios"]
    for side in ("kelpie_trio", "other"):
        assert both[side]["scenario"] == "steady" and both[side]["errors"] == 0
        assert both[side]["server"]["cpu_ms_per_msg"] is not None  # the other's by its pid
    rows = {row["figure"]: row for row in run["rows"]}
    assert rows["msgs/s"]["ratio"] == rows["msgs/s"]["other"] / rows["msgs/s"]["kelpie"]
    assert rows["errors"]["other"] == 0
    # --keep-data: our side's store is kept, and where is said.
    [kept] = [line.removeprefix("data kept in ") for line in done.stderr.splitlines()
              if line.startswith("data kept in ")]  # fmt: skip
    assert list(Path(kept).rglob("*.db")), f"no store kept in {kept}"
    shutil.rmtree(kept)


def test_bench_compare_without_a_server_or_a_provider_port_says_what_it_needs() -> None:
    for extra, needs in (
        ([], "--base-url"),
        (["--base-url", "http://127.0.0.1:9"], "--provider-port"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "bench", "compare", *extra],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2 and needs in done.stderr


def _smoke_scenario(tmp_path: Path, name: str) -> dict:
    """Run one scenario at smoke size in its own process; its result from the JSON."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "bench", name, "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result] = out.glob("bench-*.json")
    [scenario] = json.loads(result.read_text())["scenarios"]
    return scenario


def test_bench_compare_finds_the_handles_another_server_gives_the_fake_models() -> None:
    """Letta lists the chat model of an OPENAI_BASE_URL that is not OpenAI's under
    `openai-proxy/`, its embeddings under `openai/`: the bench asks for what is listed."""
    from bench.compare import pick_handle

    llms = [
        {"handle": "letta/letta-free", "model": "letta-free"},
        {"handle": "openai-proxy/gpt-4o-mini", "model": "gpt-4o-mini"},
    ]
    embeddings = [
        {"handle": "letta/letta-free", "embedding_model": "letta-free"},
        {"handle": "openai/text-embedding-3-large", "embedding_model": "text-embedding-3-large"},
        {"handle": "openai/text-embedding-3-small", "embedding_model": "text-embedding-3-small"},
    ]
    assert pick_handle(llms, "model", "gpt-4o-mini") == "openai-proxy/gpt-4o-mini"
    assert pick_handle(embeddings, "embedding_model", "text-embedding-3-small") == (
        "openai/text-embedding-3-small"
    )
    # An OpenAI provider's handle before another provider's serving a model of that name.
    both = [{"handle": "together/gpt-4o-mini", "model": "gpt-4o-mini"}, *llms]
    assert pick_handle(both, "model", "gpt-4o-mini") == "openai-proxy/gpt-4o-mini"
    assert pick_handle(llms, "model", "gpt-5") is None
    assert pick_handle({"detail": "Not Found"}, "model", "gpt-4o-mini") is None


_PARENT = """
import subprocess, sys
child = "import time\\nx = 0\\nfor i in range(2_000_000): x += i\\nprint(time.process_time())"
spent = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout
print(spent.strip(), flush=True)
sys.stdin.read()
"""


def test_an_attached_server_counts_the_cpu_of_children_that_already_ended() -> None:
    """Postgres forks a backend per connection (and Letta, by default, opens one per
    session): the CPU of a child that ended is the server's too. `also` adds a process
    that is not its child (the database server) to it."""
    from bench.procs import Attached

    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        assert parent.stdout is not None
        child_cpu = float(parent.stdout.readline())  # the child has ended: it was waited for
        alone = Attached("server", "", parent.pid).usage()
        own = psutil.Process(parent.pid).cpu_times()
        assert alone.cpu >= own.user + own.system + 0.9 * child_cpu > own.user + own.system
        other_alone = Attached("db", "", other.pid).usage()
        both = Attached("server", "", parent.pid, (other.pid,)).usage()
        assert both.cpu >= alone.cpu + other_alone.cpu - 0.02  # clock ticks: 10 ms each
        assert both.rss > alone.rss
    finally:
        for process in (parent, other):
            process.communicate(input="")
