"""The search index converges to the store, under storage faults and indexer crashes.

The plan's `test_dst_umi_search_after_fdb_write`: writers insert and delete
passages, write and reset message histories and delete a whole agent,
concurrently, through the real service and the outbox, while storage faults
fire; an indexer node runs the background indexer and crashes now and then
(restarting either with its index intact, as a durable index would be, or
with a new empty one); a searcher on the writers' node issues searches (a
second consumer of the outbox, catching up inline); the writers' node runs a
background indexer too, woken by their commits alone. At the end of every seed,
with faults off: after one last commit, once that indexer says it is caught up
(what `kelpie_search_caught_up` reports), it holds every stream up to its head;
and with the indexer node left to run, its index and the searcher's hold exactly
the store's documents: nothing lost, nothing twice, nothing deleted.
"""

from __future__ import annotations

from collections import Counter

from kelpie_trio.sim import SimWorld
from kelpie_trio.sim.search_scenario import FAULTS, search_converges
from kelpie_trio.sim.seeds import run_seeds


def test_dst_search_after_store_write() -> None:
    totals: Counter = Counter()

    def one(seed: int) -> None:
        totals.update(SimWorld(seed, FAULTS).run(search_converges))

    seeds = run_seeds(one, 30, scenario="search")
    print(dict(totals))
    # Every path really ran across the seeds (a replayed seed checks only itself).
    for what in ("inserts", "deletes", "resets", "message writes", "searches",
                 "indexer crashes", "indexes lost", "agents deleted", "writes failed",
                 "vectors checked", "caught up after a commit"):  # fmt: skip
        assert seeds == 1 or totals[what] > 0, what


def test_dst_search_run_is_a_function_of_its_seed() -> None:
    def trace(seed: int) -> tuple[str, Counter]:
        world = SimWorld(seed, FAULTS)
        stats = world.run(search_converges)
        return world.hexdigest(), stats

    assert trace(5) == trace(5)
    assert trace(5)[0] != trace(6)[0]
