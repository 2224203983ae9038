"""What waking costs this machine: the same Python work, back to back and after a sleep.

    python -m bench.wake [--gaps 0 0.005 0.02 0.2] [--repeats 40]

A server with one client sleeps between its requests (the provider's 200 ms), and so does
the relay floor. On this machine (a 2-vCPU KVM guest) a process woken after a sleep runs
the same code slower than one that never slept, for its first milliseconds (whatever the
cause: cold caches, the host's scheduling or clock; not told apart here), by an amount that
moves with the hour (1.3x-2.1x after 200 ms, bench/RESULTS.md). This measures that on the
machine alone, with no
server and no I/O: the thread CPU of a fixed piece of Python work (JSON encoding and
decoding, dicts, strings: a request's kind of work) right after sleeping each gap (the gaps
take turns), median of the repeats, and each gap's median against the back-to-back one.

`python -m bench table` prints it beside the one-client rows: a ratio the machine imposes
on any process that waits between requests is not one a server can remove.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["GAPS", "wake_cost"]

GAPS = (0.0, 0.005, 0.02, 0.2)  # seconds asleep before the work; 0.2 is the one-client row's
WARM_BURST = 50  # runs right before a back-to-back sample: ~15 ms of work brings it up to speed


def _work() -> None:
    """0.3-0.5 ms of a request's kind of Python on this machine, back to back."""
    doc: dict[str, Any] = {"role": "user", "content": "x" * 200, "parts": [1, 2, 3], "t": 1.5}
    for _ in range(60):
        text = json.dumps(doc)
        back = json.loads(text)
        back["echo"] = text[:50]


def wake_cost(
    gaps: Sequence[float] = GAPS,
    repeats: int = 40,
    *,
    work: Callable[[], None] = _work,
    sleep: Callable[[float], None] = time.sleep,
    thread_ns: Callable[[], int] = time.thread_time_ns,
) -> dict[str, Any]:
    """Per gap, the work's median thread CPU (ms) right after sleeping it, and that over
    the back-to-back median (the first gap must be 0: the others are read against it)."""
    if not gaps or gaps[0] != 0:
        raise ValueError("the first gap must be 0 (back to back): the others are read against it")
    work()  # once before measuring: imports and first-call costs are not waking's
    # The gaps take turns, so that a change of the machine's load meets them all alike.
    samples: list[list[float]] = [[] for _ in gaps]
    for _ in range(repeats):
        for gap, found in zip(gaps, samples, strict=True):
            if gap:
                sleep(gap)
            else:  # back to back: after a burst of the same work, with no sleep between
                for _ in range(WARM_BURST):
                    work()
            started = thread_ns()
            work()
            found.append((thread_ns() - started) / 1e6)
    medians = [statistics.median(found) for found in samples]
    base = medians[0]
    return {
        "repeats": repeats,
        "work_ms": {f"{gap * 1000:g}": round(m, 4) for gap, m in zip(gaps, medians, strict=True)},
        "vs_back_to_back": {
            f"{gap * 1000:g}": round(m / base, 2) if base else None
            for gap, m in zip(gaps, medians, strict=True)
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaps", type=float, nargs="+", default=list(GAPS), help="seconds")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        found = wake_cost(args.gaps, args.repeats)
    except ValueError as refused:  # a first gap that is not 0, refused before measuring
        parser.error(str(refused))
    for gap_ms, ms in found["work_ms"].items():
        ratio = found["vs_back_to_back"][gap_ms]
        print(f"after {gap_ms:>5} ms asleep: {ms:.3f} ms of thread CPU ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
