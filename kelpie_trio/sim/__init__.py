"""The deterministic simulation harness (DST): one seed in, one reproducible run out.

    world = SimWorld(seed=7, faults="chaos")
    report = world.run(scenario)        # one trio.run on virtual time
    world.hexdigest()                   # the trace hash: same seed, same hash

world.py runs the world (deterministic scheduling, virtual clock, nodes that
crash), faults.py is the fault table, store.py the store under faults (and the
per-commit invariants of invariants.py), llm.py the simulated LLM, network.py the
simulated network between nodes, trace.py the trace hash, cluster.py the actor
runtime's harness and its InvariantChecker, agents.py the agent server's harness
(nodes running the real service and AgentActor), scenarios.py the named scenarios of
`kelpie-trio sim` (agent_scenarios.py, conversation_scenario.py, search_scenario.py,
schedule_scenario.py), seeds.py the DST_SEED / DST_SEEDS conventions of the tests,
mutate.py the mutation testing of the guarantees.
agents.py and the scenarios import the whole server: import them by name, not from
here.
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
