"""The cyclic garbage collector's thresholds for a serving process (`kelpie-trio serve`).

CPython collects its youngest generation every 700 net allocations of tracked objects. A
request allocates thousands, so a young collection falls in the middle of most of them and
promotes what is in flight (still alive, about to die) to the older generations; those
promotions are what start a full collection, whose cost follows everything tracked, the
active agents' state included. Measured (bench/RESULTS.md, 2026-12-06): at 700, `steady`
ran 16 full collections of 100-166 ms each and its collections took 3.3 s of CPU over
3,000 messages; at 10,000 the same run had one, 1.1 s in all, and 20 % less CPU per
message. Young collections get rarer and larger (up to ~50 ms measured), full ones rare.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune"]

YOUNG_THRESHOLD = 10_000


def tune() -> None:
    """Raise the young generation's threshold; the older generations' stay CPython's."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
