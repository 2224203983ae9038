"""The deterministic simulation harness (DST): one seed in, one reproducible run out.

    world = SimWorld(seed=7, faults="chaos")
    report = world.run(scenario)        # one trio.run on virtual time
    world.hexdigest()                   # the trace hash: same seed, same hash

world.py runs the world (deterministic scheduling, virtual clock, nodes that
crash), faults.py is the fault table, store.py the store under faults,
llm.py the simulated LLM, network.py the simulated network between nodes,
trace.py the trace hash, scenarios.py the named scenarios of `kelpie-trio sim`,
seeds.py the DST_SEED / DST_SEEDS conventions of the tests.
"""

from kelpie_trio.sim.faults import PRESETS, FaultConfig, FaultInjector, FaultType
from kelpie_trio.sim.world import SimDeadlock, SimNode, SimWorld

__all__ = [
    "PRESETS",
    "FaultConfig",
    "FaultInjector",
    "FaultType",
    "SimDeadlock",
    "SimNode",
    "SimWorld",
]
