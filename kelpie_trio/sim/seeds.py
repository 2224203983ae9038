"""Which seeds a DST test runs, and how a failing seed is reported.

- `DST_SEED=N`: run exactly seed N (replaying a failure);
- `DST_SEEDS=K`: run K seeds (the default keeps CI in minutes; the deep run
  is `DST_SEEDS=1000`);
- `DST_KEEP_GOING=1`: a test that loops over its seeds runs them all and reports
  every failing seed, not only the first (what a deep run wants).

A failing seed is reported with the two commands that replay it: the test
with DST_SEED, and `kelpie-trio sim` when the test is a named scenario.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["SeedFailure", "across_seeds", "replay_command", "run_seeds", "seeds"]


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


def run_seeds(
    run: Callable[[int], object],
    default_count: int,
    *,
    first: int = 0,
    scenario: str | None = None,
    faults: str | None = None,
) -> int:
    """Run `run(seed)` for each seed; on a failure raise with its replay commands.

    The first failure raises at once, unless DST_KEEP_GOING is set: then every seed
    runs and one SeedFailure names all that failed.
    """
    keep_going = bool(os.environ.get("DST_KEEP_GOING"))
    failures: list[str] = []
    ran = 0
    for seed in seeds(default_count, first=first):
        try:
            run(seed)
        except Exception as error:
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
