"""SqliteTransaction.prefetch: a read queued ahead shares the hop of the next read, and
is in every other way the `get` that takes it (its snapshot, its conflict range).

With inline reads (the default) reads take no hop and prefetch does nothing; these tests
run the store with every read queued for the writer thread, as a read the trio thread
could not serve at once is."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from kelpie_trio.storage import NotCommitted, Transaction
from kelpie_trio.storage.sqlite import SqliteStore
from tests.storage.test_sqlite import running


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "kelpie.db"


async def _put(store: SqliteStore, key: bytes, value: bytes) -> None:
    async def put(tr: Transaction) -> None:
        tr.set(key, value)

    await store.transact(put)


async def test_a_prefetched_read_shares_the_hop_of_the_next_read(db: Path) -> None:
    async with running(db, inline_reads=False) as store:
        await _put(store, b"lease", b"mine")
        await _put(store, b"data", b"x")
        hops = store.stats.hops

        async def two_reads(tr: Transaction) -> tuple[bytes | None, bytes | None]:
            tr.prefetch(b"lease")
            data = await tr.get(b"data")  # one hop, with the lease's read in it
            return data, await tr.get(b"lease")  # answered from that hop

        assert await store.transact(two_reads) == (b"x", b"mine")
        assert store.stats.hops == hops + 1


async def test_a_prefetched_key_is_in_the_conflict_range_of_the_get_that_takes_it(
    db: Path,
) -> None:
    async with running(db, inline_reads=False) as store:
        await _put(store, b"lease", b"mine")
        attempts = 0
        read_once = trio.Event()
        taken = trio.Event()

        async def fenced_write(tr: Transaction) -> bytes | None:
            nonlocal attempts
            attempts += 1
            tr.prefetch(b"lease")
            await tr.get(b"other")
            if attempts == 1:
                read_once.set()
                await taken.wait()  # the lease changes hands before this attempt reads it
            lease = await tr.get(b"lease")
            tr.set(b"state", b"written under " + (lease or b"nobody"))
            return lease

        async def take_over() -> None:
            await read_once.wait()
            await _put(store, b"lease", b"theirs")
            taken.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take_over)
            # The first attempt read the lease in its snapshot (before the takeover), so
            # its commit conflicts; the retry reads the new holder.
            assert await store.transact(fenced_write) == b"theirs"
        assert attempts == 2

        async def state(tr: Transaction) -> bytes | None:
            return await tr.get(b"state")

        assert await store.transact(state) == b"written under theirs"


async def test_a_retried_attempt_reads_afresh_not_the_prefetch_of_the_last(db: Path) -> None:
    async with running(db, inline_reads=False) as store:
        await _put(store, b"k", b"1")
        seen: list[bytes | None] = []

        async def flaky(tr: Transaction) -> None:
            tr.prefetch(b"k")
            await tr.get(b"other")  # the prefetched read is served in this hop
            if not seen:
                seen.append(None)
                await _put(store, b"k", b"2")  # a write this attempt's snapshot misses
                raise NotCommitted("injected: this attempt is retried")
            seen.append(await tr.get(b"k"))

        await store.transact(flaky)
        assert seen == [None, b"2"]  # the retry's own read, at its own snapshot
