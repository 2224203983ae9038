"""Same seed, same trace hash: in one process, across processes, from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kelpie_trio.sim import FaultType, SimWorld
from kelpie_trio.sim.faults import FIRED_IN_PROCESS
from kelpie_trio.sim.scenarios import SCENARIOS
from kelpie_trio.sim.seeds import SeedFailure, run_seeds, seeds
from kelpie_trio.sim.store import LATE_COMMITS_IN_PROCESS


def sim_cli(*args: str, hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run(
        [sys.executable, "-m", "kelpie_trio.cli", "sim", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_sim_command_prints_the_same_last_line_for_the_same_seed() -> None:
    first = sim_cli("--seed", "7", hash_seed="1")
    again = sim_cli("--seed", "7", hash_seed="2")  # another str hash order, same trace
    other = sim_cli("--seed", "8")
    assert first.returncode == again.returncode == other.returncode == 0, first.stderr
    last = first.stdout.strip().splitlines()[-1]
    assert last.startswith("trace ") and len(last) == len("trace ") + 64
    assert again.stdout.strip().splitlines()[-1] == last
    assert other.stdout.strip().splitlines()[-1] != last
    assert "faults (fired/drawn):" in first.stdout


def test_sim_command_matches_the_in_process_run() -> None:
    scenario = SCENARIOS["bank"]
    world = SimWorld(12345, scenario.default_faults)
    world.run(scenario.run)
    out = sim_cli("--seed", "12345")
    assert out.stdout.strip().splitlines()[-1] == f"trace {world.hexdigest()}"


def failed_sweep(run: Callable[[int], object], count: int, **options: Any) -> str:
    """The message of the SeedFailure that `run_seeds` must raise."""
    with pytest.raises(SeedFailure) as raised:
        run_seeds(run, count, **options)
    return str(raised.value)


def test_dst_seed_pins_one_seed_and_dst_seeds_sets_the_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DST_SEED", raising=False)
    monkeypatch.setenv("DST_SEEDS", "3")
    assert seeds(100) == [0, 1, 2]
    monkeypatch.setenv("DST_SEED", "12345")
    assert seeds(100) == [12345]


def test_a_failing_seed_is_reported_with_its_replay_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DST_SEED", raising=False)
    monkeypatch.delenv("DST_SEEDS", raising=False)

    def fails_on_three(seed: int) -> None:
        assert seed != 3, "invariant broken"

    message = failed_sweep(fails_on_three, 10, scenario="bank", faults="chaos")
    assert "seed 3 failed" in message and "invariant broken" in message
    assert "kelpie-trio sim --seed 3 --scenario bank --faults chaos" in message
    assert "DST_SEED=3 pytest 'tests/dst/test_determinism.py::" in message


@pytest.fixture
def two_workers(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Each test's own seeds (no DST_SEED or DST_SEEDS of the run), over two workers."""
    monkeypatch.delenv("DST_SEED", raising=False)
    monkeypatch.delenv("DST_SEEDS", raising=False)
    monkeypatch.setenv("DST_JOBS", "2")
    return monkeypatch


def fails_on_three_in_a_worker(seed: int) -> None:
    """Module level: run_seeds' worker processes import it by name."""
    assert seed != 3, f"invariant broken in process {os.getpid()}"


def dies_on_two_in_a_worker(seed: int) -> None:
    if seed == 2:
        os._exit(3)  # a worker killed mid-seed (by the OOM killer, say)


def waits_in_a_worker(seed: int) -> None:
    """Notes its pid in $WORKER_PIDS, then waits (a long seed)."""
    Path(os.environ["WORKER_PIDS"], str(os.getpid())).touch()
    time.sleep(120)


def counts_faults_in_a_worker(seed: int) -> None:
    FIRED_IN_PROCESS[FaultType.STORAGE_WRITE_FAIL] += seed + 1
    LATE_COMMITS_IN_PROCESS["unknown result"] += 1


def test_seeds_in_worker_processes_report_a_failure_as_run_here(
    two_workers: pytest.MonkeyPatch,
) -> None:
    message = failed_sweep(fails_on_three_in_a_worker, 10, scenario="storm", in_processes=True)
    assert message.startswith("seed 3 failed: WorkerFailure: (AssertionError in a worker)")
    pid = int(message.partition("invariant broken in process ")[2].split()[0])
    assert pid != os.getpid()  # it ran in a worker
    assert "in fails_on_three_in_a_worker" in message  # the worker's traceback comes along
    assert "kelpie-trio sim --seed 3 --scenario storm" in message
    assert "DST_SEED=3 pytest 'tests/dst/test_determinism.py::" in message

    two_workers.setenv("DST_KEEP_GOING", "1")
    message = failed_sweep(fails_on_three_in_a_worker, 6, in_processes=True)
    assert message.startswith("1 of 6 seeds failed:\nseed 3 failed")


def test_faults_fired_in_worker_processes_count_in_this_one(
    two_workers: pytest.MonkeyPatch,
) -> None:
    two_workers.setenv("DST_SEEDS", "4")
    fired = FIRED_IN_PROCESS[FaultType.STORAGE_WRITE_FAIL]
    late = LATE_COMMITS_IN_PROCESS["unknown result"]
    assert run_seeds(counts_faults_in_a_worker, 10, in_processes=True) == 4
    assert FIRED_IN_PROCESS[FaultType.STORAGE_WRITE_FAIL] == fired + 1 + 2 + 3 + 4
    assert LATE_COMMITS_IN_PROCESS["unknown result"] == late + 4


def test_a_worker_that_dies_fails_the_sweep_with_a_replay_command(
    two_workers: pytest.MonkeyPatch,
) -> None:
    message = failed_sweep(dies_on_two_in_a_worker, 6, scenario="storm", in_processes=True)
    # Which seed's future learns of it first depends on timing; no later seed passes it.
    assert "failed: BrokenProcessPool" in message
    failed = int(message.removeprefix("seed ").split()[0])
    assert failed <= 2 and f"kelpie-trio sim --seed {failed} --scenario storm" in message


def test_seed_workers_end_when_the_test_process_is_killed(tmp_path: Path) -> None:
    """A run killed (SIGKILL: a CI timeout) leaves no worker behind, waiting forever."""
    sweep = (
        "from kelpie_trio.sim.seeds import run_seeds\n"
        "from tests.dst.test_determinism import waits_in_a_worker\n"
        "run_seeds(waits_in_a_worker, 2, in_processes=True)\n"
    )
    env = {**os.environ, "DST_JOBS": "2", "WORKER_PIDS": str(tmp_path)}
    env.pop("DST_SEED", None)
    env.pop("DST_SEEDS", None)
    parent = subprocess.Popen([sys.executable, "-c", sweep], env=env, cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 60
    while len(list(tmp_path.iterdir())) < 2:  # both workers are in their seed
        assert parent.poll() is None and time.monotonic() < deadline, "no workers started"
        time.sleep(0.05)
    workers = [int(path.name) for path in tmp_path.iterdir()]
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while alive := [pid for pid in workers if _running(pid)]:
        assert time.monotonic() < deadline, f"workers {alive} outlived the killed test process"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; its new parent reaps it
