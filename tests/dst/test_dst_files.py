"""File processing under storage faults and worker crashes (kelpie_trio/sim/file_scenario.py
says what runs and what is checked): no file stays `parsing` for ever, every completed file
has each of its chunks once in the store and in the index, a corrupt file ends in `error`.
"""

from __future__ import annotations

from collections import Counter

from kelpie_trio.sim import SimWorld
from kelpie_trio.sim.file_scenario import FILE_FAULTS, files_processed
from kelpie_trio.sim.seeds import across_seeds, run_seeds


def test_dst_files_are_processed_once_each_under_faults_and_crashes() -> None:
    totals: Counter = Counter()

    def one(seed: int) -> None:
        totals.update(SimWorld(seed, FILE_FAULTS).run(files_processed))

    ran = run_seeds(one, 8, scenario="files")
    print(dict(totals))
    # Every path really ran across the seeds.
    if not across_seeds(ran, 8):
        return
    for what in ("uploads", "worker crashes", "files completed", "files failed",
                 "chunks checked", "documents checked", "indexer crashes",
                 "files opened by the tool", "files opened by the API", "greps",
                 "close alls", "open limits checked"):  # fmt: skip
        assert totals[what] > 0, what


def test_dst_files_run_is_a_function_of_its_seed() -> None:
    def trace(seed: int) -> tuple[str, Counter]:
        world = SimWorld(seed, FILE_FAULTS)
        stats = world.run(files_processed)
        return world.hexdigest(), stats

    assert trace(3) == trace(3)
    assert trace(3)[0] != trace(4)[0]
