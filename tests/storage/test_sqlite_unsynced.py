"""Commits that need not survive a power cut (`Store.transact(durable=False)`): on SQLite a
write batch made only of them skips the WAL's fsync, and a durable commit never does.

The fsync itself is SQLite's; what these tests see is the writer connection's
`synchronous` level when the batch committed (FULL syncs the WAL at COMMIT, NORMAL does
not) and the store's count of unsynced batches."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio
import trio.testing

from kelpie_trio.env import RealEnv
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
        hops, unsynced = store.stats.hops, store.stats.unsynced_batches
        async with trio.open_nursery() as nursery:
            # Both queued before the writer wakes: one batch, one COMMIT.
            nursery.start_soon(lambda: store.transact(_put(b"beat", b"1"), durable=False))
            nursery.start_soon(lambda: store.transact(_put(b"message", b"kept")))
        assert store.stats.hops == hops + 1
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


# -- an idle writer's heartbeats commit on the trio thread -------------------------------------


class _SteppedClock(RealEnv):
    """Real in all but `monotonic`, which moves only when a test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.at = 1000.0

    def monotonic(self) -> float:
        return self.at


def _read_elsewhere(path: Path, key: bytes) -> bytes | None:
    """The key's newest value as another connection (another process) reads the file."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT value FROM kv WHERE key = ? ORDER BY version DESC LIMIT 1", (key,)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


async def test_an_idle_writers_non_durable_batch_commits_on_the_loop(tmp_path: Path) -> None:
    """After `inline_after_idle_s` without a batch, a heartbeat's batch commits on the trio
    thread (no hop, one wake-up instead of three); a durable one, or one right after
    another batch, still goes to the writer thread."""
    clock = _SteppedClock()
    async with running(tmp_path / "kelpie.db", env=clock) as store:
        await store.transact(_put(b"a", b"1"))
        hops, inline = store.stats.hops, store.stats.inline_batches

        await store.transact(_put(b"beat", b"1"), durable=False)  # right after a batch
        assert (store.stats.hops, store.stats.inline_batches) == (hops + 1, inline)

        clock.at += store.inline_after_idle_s
        await store.transact(_put(b"beat", b"2"), durable=False)
        assert (store.stats.hops, store.stats.inline_batches) == (hops + 1, inline + 1)
        assert _read_elsewhere(tmp_path / "kelpie.db", b"beat") == b"2"  # in the file
        assert (_level(store), store.stats.unsynced_batches) == (_NORMAL, 2)

        clock.at += store.inline_after_idle_s
        await store.transact(_put(b"a", b"2"))  # durable: synced, in the writer thread
        assert (store.stats.hops, store.stats.inline_batches) == (hops + 2, inline + 1)
        assert _level(store) == _FULL


async def test_an_idle_writer_never_waits_on_the_loop_for_another_process(
    tmp_path: Path,
) -> None:
    """Another process holding the file's write lock: the heartbeat's batch goes to the
    writer thread and waits there, while the loop runs on (here: to release the lock)."""
    clock = _SteppedClock()
    path = tmp_path / "kelpie.db"
    async with running(path, env=clock, busy_timeout_s=60.0) as store:
        await store.transact(_put(b"beat", b"0"))
        clock.at += store.inline_after_idle_s
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the write lock, held
        hops, unsynced = store.stats.hops, store.stats.unsynced_batches
        # A loop stuck in the busy handler would come back only after its 60 s.
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: store.transact(_put(b"beat", b"1"), durable=False))
                await trio.testing.wait_all_tasks_blocked()  # the loop runs: the batch waits
                other.execute("ROLLBACK")
                other.close()
        assert (store.stats.hops, store.stats.inline_batches) == (hops + 1, 0)
        assert store.stats.unsynced_batches == unsynced + 1  # the batch, counted once
        assert _read_elsewhere(path, b"beat") == b"1"
