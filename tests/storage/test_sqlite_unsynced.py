"""Commits that need not survive a power cut (`Store.transact(durable=False)`): on SQLite a
write batch made only of them skips the WAL's fsync, and a durable commit never does.

The fsync itself is SQLite's; what these tests see is the writer connection's
`synchronous` level when the batch committed (FULL syncs the WAL at COMMIT, NORMAL does
not) and the store's count of unsynced batches."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from kelpie_trio.storage import Transaction
from kelpie_trio.storage.sqlite import SqliteStore
from tests.storage.helpers import lone_dispatcher
from tests.storage.test_sqlite import running

_FULL, _NORMAL = 2, 1  # what PRAGMA synchronous answers


def _level(store: SqliteStore) -> int:
    conn = store._writer.conn
    assert conn is not None  # read between batches: the writer thread is idle
    return conn.execute("PRAGMA synchronous").fetchone()[0]


def _put(key: bytes, value: bytes):
    async def put(tr: Transaction) -> None:
        tr.set(key, value)

    return put


async def test_a_batch_of_only_non_durable_commits_is_not_synced(tmp_path: Path) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        await store.transact(_put(b"a", b"1"))
        assert (_level(store), store.stats.unsynced_batches) == (_FULL, 0)

        await store.transact(_put(b"beat", b"1"), idempotent=True, durable=False)
        assert (_level(store), store.stats.unsynced_batches) == (_NORMAL, 1)

        # The next durable commit is synced again (and its fsync covers the one before).
        await store.transact(_put(b"a", b"2"))
        assert (_level(store), store.stats.unsynced_batches) == (_FULL, 1)

        async def both(tr: Transaction) -> tuple[bytes | None, bytes | None]:
            return await tr.get(b"a"), await tr.get(b"beat")

        assert await store.transact(both) == (b"2", b"1")


async def test_a_durable_commit_batched_with_a_non_durable_one_is_synced(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        await store.transact(_put(b"beat", b"0"), durable=False)
        assert _level(store) == _NORMAL
        batches, unsynced = store.stats.batches, store.stats.unsynced_batches
        async with trio.open_nursery() as nursery:
            # Both queued before the writer wakes: one batch, one COMMIT.
            nursery.start_soon(lambda: store.transact(_put(b"beat", b"1"), durable=False))
            nursery.start_soon(lambda: store.transact(_put(b"message", b"kept")))
        assert store.stats.batches == batches + 1
        assert store.stats.largest_batch >= 2
        assert (_level(store), store.stats.unsynced_batches) == (_FULL, unsynced)


async def test_a_store_that_never_syncs_counts_nothing(tmp_path: Path) -> None:
    async with running(tmp_path / "kelpie.db", durability="normal") as store:
        await store.transact(_put(b"a", b"1"))
        await store.transact(_put(b"beat", b"1"), durable=False)
        assert (_level(store), store.stats.unsynced_batches) == (_NORMAL, 0)


async def test_a_heartbeat_renewal_is_not_synced(tmp_path: Path) -> None:
    """The node's one periodic write (every ttl/3, whatever it does) costs no fsync."""

    class Idle:
        def __init__(self, ctx: object) -> None:
            self.ctx = ctx

    async with running(tmp_path / "kelpie.db") as store, trio.open_nursery() as nursery:
        dispatcher = lone_dispatcher(store, Idle)
        await nursery.start(dispatcher.run)  # joins: a durable write
        unsynced = store.stats.unsynced_batches
        commits = store.stats.commits
        await dispatcher.renew_heartbeat()
        assert store.stats.commits == commits + 1
        assert store.stats.unsynced_batches == unsynced + 1
        nursery.cancel_scope.cancel()
