"""The idle row's floor: a trio process that only wakes, as often as the idle server did.

    python -m bench.idle_floor --per-minute 22

Each wake-up is a `trio.sleep` ending and nothing else: no I/O, no store, no task. What it
costs is what trio and CPython pay to wake from a sleep on this machine (cold caches after
seconds asleep), the least an idle server that wakes that often can cost. The `idle`
scenario runs it after its levels, at the rate its server woke at 0 active agents, and
reads its CPU the way it reads the server's (bench/idle.py, `ThreadCpu`).

Prints `ready -` on stdout once its loop runs.
"""

from __future__ import annotations

import argparse
import contextlib

import trio


async def wake(per_minute: float) -> None:
    print("ready -", flush=True)
    while True:  # noqa: ASYNC110 - waking on a timer is all this process is for
        await trio.sleep(60.0 / per_minute)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-minute", type=float, required=True, help="wake-ups a minute")
    args = parser.parse_args(argv)
    if args.per_minute <= 0:
        parser.error("--per-minute must be above 0")
    with contextlib.suppress(KeyboardInterrupt):  # stopped by hand
        trio.run(wake, args.per_minute)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
