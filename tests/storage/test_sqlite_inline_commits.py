"""Batches of commits run on the trio thread (`SqliteStore._inline_batch`), durable or not,
and go to the writer thread when the loop should not wait for them: another process holds
the file's write lock, a recent inline COMMIT was slow for its size (its fsync), the batch
writes more than `inline_max_writes` or it holds a queued read.

The clock is the store's env: a COMMIT is made slow by moving it while SQLite runs the
statement (the writer connection's trace callback), never by waiting."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio
import trio.testing

from kelpie_trio.env import RealEnv
from kelpie_trio.storage import Transaction
from kelpie_trio.storage.base import CommitRequest, Mutation, MutationKind
from kelpie_trio.storage.sqlite import SqliteStore
from kelpie_trio.storage.sqlite_reads import ReadVersion
from kelpie_trio.storage.sqlite_writer import Commit, Get
from tests.storage.test_sqlite import running
from tests.storage.test_sqlite_unsynced import _FULL, _NORMAL, _level, _put


class _SteppedClock(RealEnv):
    """Real in all but `monotonic`, which moves only when a test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.at = 1000.0

    def monotonic(self) -> float:
        return self.at


def _read_elsewhere(path: Path, key: bytes) -> bytes | None:
    """The key's value as another connection (another process) reads the file."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


def _ran(store: SqliteStore) -> tuple[int, int]:
    """(batches on the trio thread, batches in the writer thread) so far."""
    return store.stats.inline_batches, store.stats.hops


async def test_commits_durable_or_not_run_on_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "kelpie.db"
    async with running(path) as store:
        inline, hops = _ran(store)
        await store.transact(_put(b"a", b"1"))  # durable: synced, on the loop
        assert _ran(store) == (inline + 1, hops)
        assert (_level(store), _read_elsewhere(path, b"a")) == (_FULL, b"1")

        await store.transact(_put(b"beat", b"1"), durable=False)
        assert _ran(store) == (inline + 2, hops)
        assert (_level(store), _read_elsewhere(path, b"beat")) == (_NORMAL, b"1")

        async with trio.open_nursery() as nursery:  # one group commit of three
            for key in (b"x", b"y", b"z"):
                nursery.start_soon(store.transact, _put(key, b"2"))
        assert _ran(store) == (inline + 3, hops)
        assert store.stats.commits >= 5


async def test_a_batch_with_a_queued_read_runs_in_the_writer_thread(tmp_path: Path) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        await store.transact(_put(b"a", b"1"))
        inline, hops = _ran(store)
        read = Get(ReadVersion(), b"a")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store._submit, read)
            nursery.start_soon(store.transact, _put(b"b", b"1"))
        assert _ran(store) == (inline, hops + 1)  # the commit went with the read
        assert read.result == b"1"


async def test_a_slow_commit_sends_the_next_batches_to_the_writer_thread(tmp_path: Path) -> None:
    """An inline COMMIT slower than `slow_commit_s` and its batch's allowance a write
    (storage that syncs slowly): the batches of the next `slow_commit_hold_s` run in the
    writer thread, where the loop does not wait for their fsync; then on the loop again."""
    clock = _SteppedClock()
    path = tmp_path / "kelpie.db"
    async with running(path, env=clock) as store:
        conn = store._writer.conn
        assert conn is not None
        slow = store.slow_commit_s + 10 * store.slow_commit_per_write_s  # for 1 or 2 writes

        def slow_commits(statement: str) -> None:
            if statement == "COMMIT":  # only inline batches read the clock around it
                clock.at += slow

        conn.set_trace_callback(slow_commits)
        try:
            inline, hops = _ran(store)
            await store.transact(_put(b"a", b"1"))  # ran inline, and slow
            assert _ran(store) == (inline + 1, hops)
            assert store.stats.slow_inline_commits == 1
            held_until = clock.at + store.slow_commit_hold_s

            await store.transact(_put(b"a", b"2"))
            clock.at = held_until - 0.001
            await store.transact(_put(b"a", b"3"))
            assert _ran(store) == (inline + 1, hops + 2)  # both in the thread

            conn.set_trace_callback(None)  # the storage is fast again
            clock.at = held_until
            await store.transact(_put(b"a", b"4"))
            assert _ran(store) == (inline + 2, hops + 2)
            assert store.stats.slow_inline_commits == 1
            assert _read_elsewhere(path, b"a") == b"4"
        finally:
            conn.set_trace_callback(None)


async def test_a_commit_within_its_batchs_allowance_keeps_the_batches_on_the_loop(
    tmp_path: Path,
) -> None:
    """A COMMIT's time grows with what its batch wrote (its WAL pages): a batch of many
    writes may take longer than `slow_commit_s` without counting as slow storage."""
    clock = _SteppedClock()
    async with running(tmp_path / "kelpie.db", env=clock) as store:
        conn = store._writer.conn
        assert conn is not None
        took = 0.0

        def commits_taking(statement: str) -> None:
            if statement == "COMMIT":
                clock.at += took

        def writes(count: int):
            async def fn(tr: Transaction) -> None:
                for i in range(count):
                    tr.set(b"k%04d" % i, b"v")

            return fn

        conn.set_trace_callback(commits_taking)
        try:
            inline, hops = _ran(store)
            took = store.slow_commit_s  # one write, at the limit
            await store.transact(writes(1))
            took = store.slow_commit_s + 99 * store.slow_commit_per_write_s  # 100 writes
            await store.transact(writes(100))
            assert _ran(store) == (inline + 2, hops)
            assert store.stats.slow_inline_commits == 0
        finally:
            conn.set_trace_callback(None)


async def test_a_batch_writing_more_than_the_bound_runs_in_the_writer_thread(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        bound = store.inline_max_writes

        def writes(count: int) -> Commit:
            """A blind commit of `count` writes: one range cleared, the rest keys set."""
            sets = [Mutation(MutationKind.SET, b"k%06d" % i, b"v") for i in range(count - 1)]
            return Commit(CommitRequest(None, [], [(b"old/", b"old0")], sets))

        inline, hops = _ran(store)
        await store._submit(writes(bound))
        assert _ran(store) == (inline + 1, hops)
        await store._submit(writes(bound + 1))
        assert _ran(store) == (inline + 1, hops + 1)
        assert _read_elsewhere(tmp_path / "kelpie.db", b"k%06d" % (bound - 1)) == b"v"


async def test_after_a_checkpoint_the_next_batch_copies_its_tail_first_on_the_loop(
    tmp_path: Path,
) -> None:
    """A checkpoint beside the commits leaves the pages appended meanwhile (the store says
    so once it ends): the next batch copies them before its BEGIN, on the loop too (a
    PASSIVE checkpoint never waits), so that SQLite can start the log over."""
    async with running(tmp_path / "kelpie.db") as store:
        await store.transact(_put(b"a", b"0"))
        store._writer.checkpoint_tail_due = True  # as `_checkpoint_when_due` sets it
        inline, hops = _ran(store)
        tails = store.stats.checkpoint_tails
        await store.transact(_put(b"a", b"tail"))
        assert _ran(store) == (inline + 1, hops)
        assert store.stats.checkpoint_tails == tails + 1
        assert not store._writer.checkpoint_tail_due
        await store.transact(_put(b"a", b"after"))
        assert store.stats.checkpoint_tails == tails + 1  # once a checkpoint


async def test_another_process_holding_the_write_lock_sends_the_batch_to_the_thread(
    tmp_path: Path,
) -> None:
    """The batch waits for the lock in the writer thread while the loop runs on (here: to
    release the lock); a loop stuck in the busy handler would come back after 60 s."""
    path = tmp_path / "kelpie.db"
    async with running(path, busy_timeout_s=60.0) as store:
        await store.transact(_put(b"a", b"0"))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the write lock, held
        inline, hops = _ran(store)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.transact, _put(b"a", b"1"))
                await trio.testing.wait_all_tasks_blocked()  # the loop runs: the batch waits
                other.execute("ROLLBACK")
                other.close()
        assert _ran(store) == (inline, hops + 1)
        assert _read_elsewhere(path, b"a") == b"1"
        await store.transact(_put(b"a", b"2"))  # the lock free: on the loop again
        assert _ran(store) == (inline + 1, hops + 1)
