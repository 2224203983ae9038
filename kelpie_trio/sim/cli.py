"""`kelpie-trio sim`: run one simulated scenario from one seed, like FDB's simulator or VOPR.

Prints the scenario's summary, the fault report, and, as its last line, the
trace hash. A run whose invariants fail prints the seed and its replay command
and exits 1.
"""

from __future__ import annotations

import argparse
import sys

from kelpie_trio.sim.faults import PRESETS
from kelpie_trio.sim.scenarios import SCENARIOS
from kelpie_trio.sim.seeds import replay_command
from kelpie_trio.sim.world import SimWorld


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, required=True, help="the run's seed")
    parser.add_argument(
        "--scenario", default="bank", choices=sorted(SCENARIOS), help="what to simulate"
    )
    parser.add_argument(
        "--faults",
        default=None,
        choices=sorted(PRESETS),
        help="fault preset (default: the scenario's own)",
    )


def main(args: argparse.Namespace) -> int:
    scenario = SCENARIOS[args.scenario]
    faults = args.faults or scenario.default_faults
    world = SimWorld(args.seed, faults)
    print(f"sim: scenario={args.scenario} seed={args.seed} faults={faults}")
    try:
        result = world.run(scenario.run)
    except AssertionError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        print(replay_command(args.seed, scenario=args.scenario, faults=faults), file=sys.stderr)
        print(world.faults.report())
        print(f"trace {world.hexdigest()}")
        return 1
    summary = getattr(result, "summary", None)
    print(summary() if callable(summary) else result)
    print(world.faults.report())
    print(
        f"virtual time {world.end_time:.3f} s, {world.trace.steps} task steps, "
        f"{world.trace.events} events"
    )
    print(f"trace {world.hexdigest()}")
    return 0
