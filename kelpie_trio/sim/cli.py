"""`kelpie-trio sim`: run simulated scenarios from seeds, like FDB's simulator or VOPR.

One run (`--seed N`) prints the scenario's summary, the fault report and, as its last
line, the trace hash. A run whose invariants fail prints why and the one command that
replays it, and exits 1.

A sweep (`--seeds K`, from `--first`) runs K seeds of the scenario, or of every
scenario with `--scenario all`, with a progress line on stderr, then a summary: runs
and failures per scenario, faults fired per type over the whole sweep, and the replay
command of each failing seed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter

import attrs

from kelpie_trio.sim.faults import PRESETS, FaultConfig, FaultType, preset
from kelpie_trio.sim.scenarios import SCENARIOS, Scenario
from kelpie_trio.sim.seeds import replay_command
from kelpie_trio.sim.world import SimWorld

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seed", type=int, help="run this one seed")
    which.add_argument("--seeds", type=int, metavar="K", help="sweep K seeds")
    parser.add_argument("--first", type=int, default=0, help="first seed of a sweep")
    parser.add_argument(
        "--scenario",
        default="bank",
        choices=[*SCENARIOS, "all"],
        help="what to simulate ('all': every scenario)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the runtime's log (warnings of faults)"
    )
    parser.add_argument(
        "--faults",
        default=None,
        choices=sorted(PRESETS),
        help="fault preset (default: the scenario's own table)",
    )


@attrs.define
class _Run:
    name: str
    seed: int
    error: str | None
    fired: Counter[FaultType]
    world: SimWorld
    result: object = None


def _faults(scenario: Scenario, faults: str | None) -> str | FaultConfig:
    if not faults:
        return scenario.default_faults
    return preset(faults).without(scenario.unmodelled)


def _dropped(scenario: Scenario, faults: str | None) -> str:
    """A note naming the faults of the preset that the scenario does not model."""
    if not faults:
        return ""
    dropped = [f.value for f in FaultType
               if f in scenario.unmodelled and preset(faults).rate(f) > 0]  # fmt: skip
    return f" (not modelled here, left out: {', '.join(dropped)})" if dropped else ""


def _run(name: str, scenario: Scenario, seed: int, faults: str | None) -> _Run:
    world = SimWorld(seed, _faults(scenario, faults))
    try:
        result = world.run(scenario.run)
    except Exception as error:  # any failure of a seed is reported, not raised
        return _Run(name, seed, f"{type(error).__name__}: {error}", world.faults.fired, world)
    return _Run(name, seed, None, world.faults.fired, world, result)


def _faults_label(scenario: Scenario, faults: str | None) -> str:
    if faults:
        return faults
    return scenario.default_faults if isinstance(scenario.default_faults, str) else "own"


def _names(args: argparse.Namespace) -> list[str]:
    return list(SCENARIOS) if args.scenario == "all" else [args.scenario]


def main(args: argparse.Namespace) -> int:
    if not args.verbose:  # every injected fault logs a warning; the report counts them
        logging.disable(logging.WARNING)
    if args.seeds is not None:
        return _sweep(args)
    status = 0
    for name in _names(args):
        scenario = SCENARIOS[name]
        label = _faults_label(scenario, args.faults)
        print(
            f"sim: scenario={name} seed={args.seed} faults={label}{_dropped(scenario, args.faults)}"
        )
        run = _run(name, scenario, args.seed, args.faults)
        world = run.world
        if run.error is not None:
            print(f"FAILED: {run.error}", file=sys.stderr)
            print(
                replay_command(args.seed, scenario=name, faults=args.faults, test=False),
                file=sys.stderr,
            )
            status = 1
        else:
            summary = getattr(run.result, "summary", None)
            print(summary() if callable(summary) else run.result)
        print(world.faults.report())
        print(
            f"virtual time {world.end_time:.3f} s, {world.trace.steps} task steps, "
            f"{world.trace.events} events"
        )
        print(f"trace {world.hexdigest()}")
    return status


def _progress(done: int, total: int, seed: int, failed: int, elapsed: float) -> None:
    line = f"sim: {done}/{total} runs, seed {seed}, {failed} failed, {elapsed:.0f} s"
    if sys.stderr.isatty():  # one line, rewritten in place
        print(f"\r{line} ", end="", file=sys.stderr, flush=True)
    elif done == total or done % max(1, total // 20) == 0:  # a log: every 5 %
        print(line, file=sys.stderr, flush=True)


def _sweep(args: argparse.Namespace) -> int:
    names = _names(args)
    seeds = range(args.first, args.first + args.seeds)
    total = len(names) * len(seeds)
    fired: Counter[FaultType] = Counter()
    runs: Counter[str] = Counter()
    failures: list[_Run] = []
    started = time.monotonic()  # the sweep's own duration, outside any simulation
    done = 0
    for seed in seeds:
        for name in names:
            run = _run(name, SCENARIOS[name], seed, args.faults)
            done += 1
            runs[name] += 1
            fired.update(run.fired)
            if run.error is not None:
                failures.append(run)
            _progress(done, total, seed, len(failures), time.monotonic() - started)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    elapsed = time.monotonic() - started
    print(f"sim sweep: seeds {seeds.start}..{seeds.stop - 1}, {total} runs in {elapsed:.1f} s")
    for name in names:
        failed = sum(1 for f in failures if f.name == name)
        label = _faults_label(SCENARIOS[name], args.faults)
        note = _dropped(SCENARIOS[name], args.faults)
        print(f"  {name:<10} {runs[name]:>6} runs  {failed:>4} failed  faults={label}{note}")
    print("faults fired, over the sweep:")
    for fault in FaultType:
        print(f"  {fault.value:<24} {fired[fault]:>8}")
    for failure in failures:
        print(f"FAILED {failure.name} seed {failure.seed}: {failure.error[:300]}")
        print(replay_command(failure.seed, scenario=failure.name, faults=args.faults, test=False))
    return 1 if failures else 0
