"""The conversations of one agent write at once, each on its own outbox stream, and the
search index converges to the store (kelpie_trio/sim/search_threads_scenario.py says what
runs and what it checks): under storage faults, indexer crashes, lost indexes, resets, a
rolling upgrade (some writes recorded as the version before streams per thread did), a
conversation and an agent deleted. With the faults off, the agent's threads writing at
the same instant meet no conflict."""

from __future__ import annotations

from collections import Counter

from kelpie_trio.sim import SimWorld
from kelpie_trio.sim.search_threads_scenario import THREAD_FAULTS, search_threads_converge
from kelpie_trio.sim.seeds import run_seeds


def test_dst_search_threads_converge_without_meeting_on_the_outbox() -> None:
    totals: Counter = Counter()

    def one(seed: int) -> None:
        totals.update(SimWorld(seed, THREAD_FAULTS).run(search_threads_converge))

    seeds = run_seeds(one, 20, scenario="search-threads")
    print(dict(totals))
    # Every path really ran across the seeds (a replayed seed checks only itself).
    for what in ("message writes", "legacy writes", "resets", "searches", "indexer crashes",
                 "indexes lost", "conversations deleted", "agents deleted", "writes failed",
                 "acknowledged found", "searches checked"):  # fmt: skip
        assert seeds == 1 or totals[what] > 0, what


def test_dst_search_threads_run_is_a_function_of_its_seed() -> None:
    def trace(seed: int) -> tuple[str, Counter]:
        world = SimWorld(seed, THREAD_FAULTS)
        stats = world.run(search_threads_converge)
        return world.hexdigest(), stats

    assert trace(3) == trace(3)
    assert trace(3)[0] != trace(4)[0]
