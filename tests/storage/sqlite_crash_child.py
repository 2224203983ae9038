"""The process test_sqlite.py kills: commits pairs of keys and acknowledges each commit.

    python sqlite_crash_child.py PATH START

Several workers commit transactions numbered from START, each writing two keys
(`a/<i>` and `b/<i>`), and print `ack <i>` once its commit has returned. The
parent SIGKILLs this process mid-stream and checks that the file holds every
acknowledged pair and no half of a pair. The store checkpoints its WAL every few
commits, beside them, so a kill may land in one.
"""

from __future__ import annotations

import functools
import itertools
import sys

import trio

from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.sqlite import SqliteStore

WORKERS = 4  # concurrent committers, so kills also land inside group commits


def pair_keys(i: int) -> tuple[bytes, bytes]:
    return b"crash/a/%d" % i, b"crash/b/%d" % i


async def main(path: str, start: int) -> None:
    store = SqliteStore(path)
    store.checkpoint_every_commits = 10  # kills land inside WAL checkpoints too
    numbers = itertools.count(start)

    async def write(tr: Transaction, i: int) -> None:
        for key in pair_keys(i):
            tr.set(key, b"%d" % i)

    async def worker() -> None:
        while True:
            i = next(numbers)
            await store.transact(functools.partial(write, i=i))
            sys.stdout.write(f"ack {i}\n")
            sys.stdout.flush()

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for _ in range(WORKERS):
            nursery.start_soon(worker)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
