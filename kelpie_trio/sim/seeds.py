"""Which seeds a DST test runs, and how a failing seed is reported.

- `DST_SEED=N`: run exactly seed N (replaying a failure);
- `DST_SEEDS=K`: run K seeds (the default keeps CI in minutes; the deep run
  is `DST_SEEDS=1000`);
- `DST_KEEP_GOING=1`: a test that loops over its seeds runs them all and reports
  every failing seed, not only the first (what a deep run wants);
- `DST_JOBS=N`: how many processes a sweep that asks for them (`in_processes=True`)
  spreads its seeds over (default: the cores this process may use; 1 runs them here).

A failing seed is reported with the two commands that replay it: the test
with DST_SEED, and `kelpie-trio sim` when the test is a named scenario.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor

from kelpie_trio.sim.faults import FIRED_IN_PROCESS
from kelpie_trio.sim.store import LATE_COMMITS_IN_PROCESS

__all__ = [
    "SeedFailure",
    "WorkerFailure",
    "across_seeds",
    "jobs",
    "replay_command",
    "run_seeds",
    "seeds",
]


class SeedFailure(AssertionError):
    """A simulation failed for one seed; the message says how to replay it."""


def seeds(default_count: int, *, first: int = 0) -> list[int]:
    pinned = os.environ.get("DST_SEED")
    if pinned:
        return [int(pinned)]
    count = int(os.environ.get("DST_SEEDS", default_count))
    return list(range(first, first + count))


def across_seeds(ran: int, default_count: int) -> bool:
    """Whether a test's checks over its whole sweep apply (every path ran in some seed,
    counts summed over the seeds): only when it ran at least its default number of seeds.
    A replay of one seed (DST_SEED) or a short DST_SEEDS checks each seed, not the sweep,
    so its replay command fails only where that seed does."""
    return ran >= default_count


def replay_command(
    seed: int, *, scenario: str | None = None, faults: str | None = None, test: bool = True
) -> str:
    """`test`: also the pytest line, when a test is running (the command line has none)."""
    lines = []
    current = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0] if test else ""
    if current:
        lines.append(f"DST_SEED={seed} pytest '{current}'")
    if scenario:
        sim = f"kelpie-trio sim --seed {seed} --scenario {scenario}"
        lines.append(sim + (f" --faults {faults}" if faults else ""))
    return "\n".join(f"  replay: {line}" for line in lines)


def jobs() -> int:
    pinned = os.environ.get("DST_JOBS")
    if pinned:
        return max(1, int(pinned))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return min(cores, 8)  # each worker holds a simulated cluster (~150 MB)


def run_seeds(
    run: Callable[[int], object],
    default_count: int,
    *,
    first: int = 0,
    scenario: str | None = None,
    faults: str | None = None,
    in_processes: bool = False,
) -> int:
    """Run `run(seed)` for each seed; on a failure raise with its replay commands.

    The first failure raises at once, unless DST_KEEP_GOING is set: then every seed
    runs and one SeedFailure names all that failed.

    `in_processes`: the seeds run in `jobs()` worker processes at once (a long sweep
    on an otherwise idle core); `run` must then be a module-level function, which the
    workers import by name. Each seed is the same simulation as run here (a world is
    built from its seed alone), and the faults each fired count in this process.
    """
    keep_going = bool(os.environ.get("DST_KEEP_GOING"))
    failures: list[str] = []
    ran = 0
    chosen = seeds(default_count, first=first)
    in_processes = in_processes and jobs() > 1 and len(chosen) > 1
    outcomes = (_in_processes if in_processes else _here)(run, chosen)
    with contextlib.closing(outcomes):  # a failure stops the workers now, not at exit
        for seed, error in outcomes:
            if error is not None:
                message = (
                    f"seed {seed} failed: {error.__class__.__name__}: {error}\n"
                    f"{replay_command(seed, scenario=scenario, faults=faults)}"
                )
                print(message)  # also in the captured output, where pytest shows it
                if not keep_going:
                    raise SeedFailure(message) from error
                failures.append(message)
            ran += 1
    if failures:
        raise SeedFailure(f"{len(failures)} of {ran} seeds failed:\n" + "\n".join(failures))
    return ran


Outcomes = Iterator[tuple[int, Exception | None]]


def _here(run: Callable[[int], object], chosen: list[int]) -> Outcomes:
    for seed in chosen:
        try:
            run(seed)
        except Exception as error:
            yield seed, error
        else:
            yield seed, None


class WorkerFailure(Exception):
    """A seed's exception in a worker process, as text (its traceback included): the
    exception itself may not pickle."""

    def __init__(self, kind: str, text: str, trace: str) -> None:
        super().__init__(kind, text, trace)  # all in args: that is what unpickling passes

    def __str__(self) -> str:
        kind, text, trace = self.args
        return f"({kind} in a worker) {text}\n{trace}"


def _in_processes(run: Callable[[int], object], chosen: list[int]) -> Outcomes:
    # spawn, not fork: the test process may hold threads (a fork keeps only the caller's).
    context = multiprocessing.get_context("spawn")
    workers = min(jobs(), len(chosen))
    with ProcessPoolExecutor(workers, context, initializer=_die_with_parent) as pool:
        pending: list[Future] = [pool.submit(_worker_seed, run, seed) for seed in chosen]
        try:
            for seed, future in zip(chosen, pending, strict=True):
                try:
                    error, fired, late = future.result()
                except BrokenExecutor as broken:  # the worker died (killed, out of memory)
                    yield seed, broken
                    continue
                FIRED_IN_PROCESS.update(fired)  # the summary counts every worker's too
                LATE_COMMITS_IN_PROCESS.update(late)
                yield seed, error
        finally:
            for future in pending:  # a failure stops the sweep: the rest never start
                future.cancel()


def _die_with_parent() -> None:
    """A worker ends when the test process does, even killed (SIGKILL, a CI timeout):
    otherwise it waits forever on the queue of a pool no one owns."""
    if sys.platform == "linux":
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def _worker_seed(
    run: Callable[[int], object], seed: int
) -> tuple[WorkerFailure | None, Counter, Counter]:
    """One seed in a worker: its failure, and the faults and late commits it counted."""
    fired, late = Counter(FIRED_IN_PROCESS), Counter(LATE_COMMITS_IN_PROCESS)
    error = None
    try:
        run(seed)
    except Exception as failure:
        trace = "".join(traceback.format_exception(failure))
        error = WorkerFailure(failure.__class__.__name__, str(failure), trace)
    return error, Counter(FIRED_IN_PROCESS) - fired, Counter(LATE_COMMITS_IN_PROCESS) - late
