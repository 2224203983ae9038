"""Shared archives under storage faults and indexer crashes (kelpie_trio/sim/archive_scenario.py
says what runs and what is checked): the index converges to the store, an archive's
passages are indexed once, and each agent finds exactly its own and its attached archives'
passages, never those of an archive it was detached from or that was deleted.
"""

from __future__ import annotations

from collections import Counter

from kelpie_trio.sim import SimWorld
from kelpie_trio.sim.archive_scenario import ARCHIVE_FAULTS, archives_converge
from kelpie_trio.sim.seeds import across_seeds, run_seeds


def test_dst_archives_attached_detached_and_deleted_under_faults() -> None:
    totals: Counter = Counter()

    def one(seed: int) -> None:
        totals.update(SimWorld(seed, ARCHIVE_FAULTS).run(archives_converge))

    ran = run_seeds(one, 20, scenario="archives")
    print(dict(totals))
    # Every path really ran across the seeds.
    if not across_seeds(ran, 20):
        return
    for what in ("archive inserts", "archive batches", "archive deletes", "agent inserts",
                 "attaches", "detaches", "archives deleted", "searches", "indexer crashes",
                 "indexes lost", "writes failed", "searches checked"):  # fmt: skip
        assert totals[what] > 0, what


def test_dst_archives_run_is_a_function_of_its_seed() -> None:
    def trace(seed: int) -> tuple[str, Counter]:
        world = SimWorld(seed, ARCHIVE_FAULTS)
        stats = world.run(archives_converge)
        return world.hexdigest(), stats

    assert trace(3) == trace(3)
    assert trace(3)[0] != trace(4)[0]
