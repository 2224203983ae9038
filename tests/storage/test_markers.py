"""Idempotency markers: written by every write transaction, collected when old."""

from __future__ import annotations

import random
from typing import Any

import trio

from kelpie_trio.env import SimEnv
from kelpie_trio.storage import MemoryStore, Transaction
from kelpie_trio.storage.keys import TXN_MARKERS


class SteppedEnv(SimEnv):
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        super().__init__(random.Random(0))
        self.wall = 1_000_000.0

    def now(self) -> float:
        return self.wall


async def markers(store: MemoryStore) -> list[bytes]:
    async def fn(tr: Transaction) -> list[bytes]:
        r = TXN_MARKERS.range()
        return [k for k, _ in await tr.get_range(r.start, r.stop)]

    return await store.transact(fn)


async def test_write_transactions_leave_a_marker_and_reads_do_not() -> None:
    store = MemoryStore(SteppedEnv())

    async def write(tr: Transaction) -> None:
        tr.set(b"k", b"v")

    async def read(tr: Transaction) -> bytes | None:
        return await tr.get(b"k")

    await store.transact(write)
    await store.transact(read)
    assert len(await markers(store)) == 1


async def test_old_markers_are_collected_and_recent_ones_kept() -> None:
    env = SteppedEnv()
    store = MemoryStore(env)

    async def write(tr: Transaction) -> None:
        tr.set(b"k", b"v")

    await store.transact(write)
    old_bucket = TXN_MARKERS.unpack((await markers(store))[0])[0]
    env.wall += 11 * 60  # past the 10-minute keep window
    await store.transact(write)
    await store.collect_garbage()
    buckets = [TXN_MARKERS.unpack(k)[0] for k in await markers(store)]
    assert old_bucket not in buckets
    # The new write's marker (and the collection's own) stay.
    assert buckets and set(buckets) == {int(env.wall // 60)}


async def test_an_idempotent_write_leaves_no_marker() -> None:
    store = MemoryStore(SteppedEnv())

    async def write(tr: Transaction) -> None:
        tr.set(b"k", b"v")

    await store.transact(write, idempotent=True)
    assert await markers(store) == []
    assert store.counts["commit"] == 1


async def test_the_collector_sleeps_while_nothing_writes_markers(autojump_clock: Any) -> None:
    """An idle node (its heartbeat idempotent) commits nothing to collect markers; a write
    that leaves one has it collected once past the keep window, and then the collector
    sleeps again."""
    store = MemoryStore(SimEnv(random.Random(0)))

    async def write(tr: Transaction) -> None:
        tr.set(b"k", b"v")

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for _ in range(30):  # half an hour of heartbeats
            await store.transact(write, idempotent=True)
            await trio.sleep(60)
        assert store.counts["commit"] == 30  # no collection
        await store.transact(write)  # one marker
        assert len(await markers(store)) == 1
        await trio.sleep(12 * 60)  # past the keep window (10 minutes and the bucket's own)
        assert await markers(store) == []
        assert store.counts["commit"] == 32  # the write and one collection
        await trio.sleep(60 * 60)
        assert store.counts["commit"] == 32  # and none since
        nursery.cancel_scope.cancel()
