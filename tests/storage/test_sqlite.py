"""What the SQLite backend promises beyond the conformance suite.

Durability across close and SIGKILL, several stores (processes) on one file,
group commit, tombstone GC, cancellation, and how SQLite's own failures surface.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from kelpie_trio.storage import (
    NotCommitted,
    StorageUnavailable,
    StoreClosed,
    Transaction,
    TransactionTooOld,
    decode_counter,
)
from kelpie_trio.storage.base import CommitRequest, Mutation, MutationKind
from kelpie_trio.storage.sqlite import SqliteStore
from kelpie_trio.storage.sqlite_writer import Commit
from tests.storage.helpers import put, read, read_range
from tests.storage.sqlite_crash_child import pair_keys

CRASH_CHILD = Path(__file__).with_name("sqlite_crash_child.py")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "kelpie.db"


@asynccontextmanager
async def running(path: Path, **kw) -> AsyncIterator[SqliteStore]:
    """A started store, closed on exit (as a node would hold it)."""
    store = SqliteStore(path, **kw)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield store
        finally:
            await store.aclose()


def increment(key: bytes) -> Callable[[Transaction], object]:
    """A read-modify-write (not an atomic add), so concurrent ones really conflict."""

    async def fn(tr: Transaction) -> None:
        tr.set(key, b"%d" % (int(await tr.get(key) or b"0") + 1))

    return fn


def tombstones(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM kv WHERE value IS NULL").fetchone()[0]


# -- durability -----------------------------------------------------------------------


async def test_committed_data_survives_close_and_reopen(db: Path) -> None:
    async with running(db) as store:
        await put(store, {b"a": b"1", b"b": b"2"})

        async def drop(tr: Transaction) -> None:
            tr.clear(b"b")
            tr.add(b"n", 7)

        await store.transact(drop)
    async with running(db) as store:
        assert await read(store, b"a") == b"1"
        assert await read(store, b"b") is None
        assert decode_counter(await read(store, b"n")) == 7


async def test_normal_durability_is_a_working_store(db: Path) -> None:
    async with running(db, durability="normal") as store:
        await put(store, {b"a": b"1"})
    async with running(db) as store:
        assert await read(store, b"a") == b"1"


def test_unknown_durability_is_refused(db: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        SqliteStore(db, durability="off")  # type: ignore[arg-type]


async def read_acks(stream: trio.abc.ReceiveStream, want: int) -> set[int]:
    acked: set[int] = set()
    buffer = b""
    with trio.fail_after(10):
        while len(acked) < want:
            chunk = await stream.receive_some()
            assert chunk, "the child exited before acknowledging enough commits"
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            acked.update(int(line.split()[1]) for line in lines if line.startswith(b"ack "))
    return acked


@pytest.mark.slow
async def test_acknowledged_commits_survive_sigkill_and_none_is_half_applied(db: Path) -> None:
    all_acked: set[int] = set()
    for round_ in range(3):
        start = round_ * 1_000_000
        process = await trio.lowlevel.open_process(
            [sys.executable, str(CRASH_CHILD), str(db), str(start)], stdout=subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            acked = await read_acks(process.stdout, want=100)
        finally:
            process.kill()  # SIGKILL: no cleanup, mid-commit more often than not
            await process.wait()
        assert process.returncode == -9
        all_acked |= acked

        async with running(db) as store:
            pairs = await read_range(store, b"crash/", b"crash0")
        a_ids = {int(k.rsplit(b"/", 1)[1]) for k, _ in pairs if k.startswith(b"crash/a/")}
        b_ids = {int(k.rsplit(b"/", 1)[1]) for k, _ in pairs if k.startswith(b"crash/b/")}
        assert a_ids == b_ids, f"half-applied transactions: {sorted(a_ids ^ b_ids)}"
        assert all_acked <= a_ids, f"acknowledged but lost: {sorted(all_acked - a_ids)}"
        values = dict(pairs)
        assert all(values[pair_keys(i)[1]] == b"%d" % i for i in all_acked)


# -- several stores (processes) on one file --------------------------------------------


async def test_conflict_across_two_stores_on_one_file_is_detected(db: Path) -> None:
    async with running(db) as one, running(db) as two:
        await put(one, {b"x": b"0"})
        t1, t2 = one.create_transaction(), two.create_transaction()
        assert await t1.get(b"x") == b"0"
        assert await t2.get(b"x") == b"0"
        t1.set(b"x", b"1")
        t2.set(b"x", b"2")
        await t1.commit()
        with pytest.raises(NotCommitted):
            await t2.commit()
        assert await read(two, b"x") == b"1"


async def test_concurrent_increments_through_two_stores_end_at_the_exact_total(db: Path) -> None:
    async with running(db) as one, running(db) as two:
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon((one, two)[i % 2].transact, increment(b"counter"))
        assert await read(one, b"counter") == b"40"
        assert await read(two, b"counter") == b"40"


async def test_a_store_sees_the_other_stores_deletions(db: Path) -> None:
    async with running(db) as one, running(db) as two:
        await put(one, {b"k/a": b"1", b"k/b": b"2"})
        tr = two.create_transaction()
        assert await tr.get(b"k/a") == b"1"

        async def drop(tr: Transaction) -> None:
            tr.clear_range(b"k/", b"k0")

        await one.transact(drop)
        with pytest.raises(NotCommitted):  # the snapshot would mix before and after
            await tr.get_range(b"k/", b"k0")
        assert await read_range(two, b"k/", b"k0") == []


async def test_a_range_read_skips_old_tombstones_and_its_limit_counts_live_keys(db: Path) -> None:
    """Tombstones deleted before the read version are left out in SQL (not stepped over
    one by one); the limit still counts live keys, forward and reverse."""
    async with running(db) as store:
        await put(store, {b"k/%03d" % i: b"v" for i in range(50)})

        async def drop(tr: Transaction) -> None:
            for i in range(50):
                if i % 10:
                    tr.clear(b"k/%03d" % i)

        await store.transact(drop)
        tr = store.create_transaction()
        assert [k for k, _ in await tr.get_range(b"k/", b"k0", limit=3)] == [
            b"k/000",
            b"k/010",
            b"k/020",
        ]
        assert [k for k, _ in await tr.get_range(b"k/", b"k0", limit=2, reverse=True)] == [
            b"k/040",
            b"k/030",
        ]


# -- group commit ----------------------------------------------------------------------


async def test_concurrent_commits_share_batches(db: Path) -> None:
    async with running(db) as store:
        batches_before, commits_before = store.stats.batches, store.stats.commits

        async def write(i: int) -> None:
            async def fn(tr: Transaction) -> None:
                tr.set(b"key%03d" % i, b"v")
                tr.add(b"total", 1)

            await store.transact(fn)

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(write, i)
        assert store.stats.commits - commits_before == 100
        assert store.stats.batches - batches_before <= 50
        assert store.stats.largest_batch > 1
        assert decode_counter(await read(store, b"total")) == 100


async def test_conflicting_commits_in_one_batch_fail_alone(db: Path) -> None:
    async with running(db) as store:
        await put(store, {b"x": b"0", b"y": b"0"})
        t1, t2, t3 = (store.create_transaction() for _ in range(3))
        for tr in (t1, t2):
            assert await tr.get(b"x") == b"0"
            tr.set(b"x", b"from %d" % id(tr))
        assert await t3.get(b"y") == b"0"
        t3.set(b"y", b"1")
        outcomes: list[str] = []

        async def commit(tr: Transaction) -> None:
            try:
                await tr.commit()
                outcomes.append("committed")
            except NotCommitted:
                outcomes.append("conflict")

        batches_before = store.stats.batches
        async with trio.open_nursery() as nursery:
            for tr in (t1, t2, t3):
                nursery.start_soon(commit, tr)
        assert store.stats.batches - batches_before == 1  # all three in one group commit
        assert sorted(outcomes) == ["committed", "committed", "conflict"]
        assert await read(store, b"y") == b"1"


async def test_a_transaction_failing_inside_a_group_commit_rolls_back_alone(db: Path) -> None:
    # Requests built by hand: BufferedTransaction would never let an unbindable
    # value through, but a failure inside one transaction's apply must undo
    # only that transaction (its SAVEPOINT), not its batch.
    unbindable: Any = object()
    bad = CommitRequest(
        None,
        [],
        [],
        [Mutation(MutationKind.SET, b"a", b"1"), Mutation(MutationKind.SET, b"b", unbindable)],
    )
    good = CommitRequest(None, [], [], [Mutation(MutationKind.SET, b"c", b"1")])
    async with running(db) as store:
        outcomes: dict[str, str] = {}

        async def submit(name: str, request: CommitRequest) -> None:
            try:
                await store._submit(Commit(request))
                outcomes[name] = "committed"
            except sqlite3.Error as error:
                outcomes[name] = type(error).__name__

        batches_before = store.stats.batches
        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit, "bad", bad)
            nursery.start_soon(submit, "good", good)
        assert store.stats.batches - batches_before == 1
        assert outcomes == {"bad": "ProgrammingError", "good": "committed"}
        assert await read_range(store, b"a", b"z") == [(b"c", b"1")]


async def test_a_lone_commit_failing_inside_its_apply_writes_nothing(db: Path) -> None:
    # Alone in its batch, a commit runs without a SAVEPOINT: a failure in its apply
    # rolls the batch back whole, which is that commit and nothing else.
    unbindable: Any = object()
    bad = CommitRequest(
        None,
        [],
        [],
        [Mutation(MutationKind.SET, b"a", b"1"), Mutation(MutationKind.SET, b"b", unbindable)],
    )
    async with running(db) as store:
        with pytest.raises(sqlite3.ProgrammingError):
            await store._submit(Commit(bad))
        assert store.stats.refused == 1
        assert await read_range(store, b"a", b"z") == []
        await put(store, {b"c": b"1"})  # and the store goes on
        assert await read_range(store, b"a", b"z") == [(b"c", b"1")]


async def test_only_commits_sharing_a_batch_run_in_savepoints(db: Path) -> None:
    """A SAVEPOINT lets one commit of a batch fail alone. SQLite journals what a savepoint
    changes, past 64 KiB in a temporary file made, written and unlinked every batch or so;
    a commit alone in its batch is its own rollback unit and runs without one."""
    async with running(db) as store:
        conn = store._writer.conn
        assert conn is not None
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        try:
            await put(store, {b"a": b"1"})
            assert statements and not [s for s in statements if "SAVEPOINT" in s]

            batches_before = store.stats.batches
            async with trio.open_nursery() as nursery:
                nursery.start_soon(put, store, {b"b": b"1"})
                nursery.start_soon(put, store, {b"c": b"1"})
            assert store.stats.batches - batches_before == 1  # one batch of two
            assert len([s for s in statements if s.startswith("SAVEPOINT")]) == 2
        finally:
            conn.set_trace_callback(None)


# -- tombstone GC ----------------------------------------------------------------------


async def test_transaction_behind_the_tombstone_horizon_is_too_old(db: Path) -> None:
    async with running(db) as store:
        await put(store, {b"a": b"1", b"b": b"1"})
        old = store.create_transaction()
        assert await old.get(b"a") == b"1"

        async def drop(tr: Transaction) -> None:
            tr.clear(b"b")

        await store.transact(drop)
        assert tombstones(db) == 1
        assert await store.collect_tombstones(horizon=10**9) == 1
        assert tombstones(db) == 0
        # `old` could no longer see that b was deleted after its read version.
        with pytest.raises(TransactionTooOld):
            await old.get(b"b")
        old.set(b"a", b"2")
        with pytest.raises(TransactionTooOld):
            await old.commit()
        # Retryable: the retry loop starts again at a fresh read version.
        await store.transact(increment(b"a"))
        assert await read(store, b"a") == b"2"


async def test_commit_behind_the_tombstone_horizon_is_too_old(db: Path) -> None:
    async with running(db) as store, running(db) as other:
        await put(store, {b"a": b"1"})
        old = store.create_transaction()
        await old.get(b"a")
        await put(store, {b"c": b"1"})
        await other.collect_tombstones(horizon=10**9)  # another process moved the horizon
        old.set(b"a", b"2")
        with pytest.raises(TransactionTooOld):
            await old.commit()


async def test_periodic_gc_collects_tombstones_once_they_are_old_enough(db: Path) -> None:
    store = SqliteStore(db)
    store.tombstone_gc_interval_s = 0.02
    store.tombstone_min_age_s = 0.2
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await put(store, {b"k%d" % i: b"v" for i in range(10)})

        async def drop(tr: Transaction) -> None:
            tr.clear_range(b"k", b"l")

        await store.transact(drop)
        assert tombstones(db) == 10
        with trio.fail_after(5):
            # Polling the file from outside, as another process would see it.
            while tombstones(db):  # noqa: ASYNC110
                await trio.sleep(0.02)
        assert store.stats.tombstones_collected == 10
        assert await read_range(store, b"k", b"l") == []
        await store.aclose()


async def test_periodic_gc_leaves_the_file_alone_while_nothing_was_cleared(
    db: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """An idle node's heartbeats only overwrite keys: no tombstone, so no collection hop
    (the collector sleeps until a commit writes one)."""
    store = SqliteStore(db)
    store.tombstone_min_age_s = 0.0  # any version is old enough: only nothing-to-do stops it
    looks = 0
    collect = store.collect_tombstones

    async def counted(**kw: Any) -> int:
        nonlocal looks
        looks += 1
        return await collect(**kw)

    store.collect_tombstones = counted  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for i in range(5):
            await put(store, {b"heartbeat": b"%d" % i})
            await trio.sleep(store.tombstone_gc_interval_s * 3)
        assert looks == 0
        await store.aclose()


# -- cancellation and lifecycle ----------------------------------------------------------


async def test_cancelled_commit_still_lands_whole_and_the_store_goes_on(db: Path) -> None:
    async with running(db) as store:
        await put(store, {b"x": b"0"})
        # Another process holds the write lock: our batch waits inside its hop.
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:

            async def write(tr: Transaction) -> None:
                tr.set(b"x", b"1")
                tr.set(b"y", b"1")

            hops_before = store.stats.hops
            with trio.move_on_after(0.2) as scope:
                await store.transact(write)
            assert scope.cancelled_caught
            assert store.stats.hops == hops_before + 1  # the commit is in a hop, not queued
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        # The next commit runs after the cancelled one (a read may come before it lands:
        # reads do not queue behind the hop), so the increment conflicts with it or reads
        # its x: the cancelled commit landed, whole.
        await store.transact(increment(b"x"))
        assert await read_range(store, b"x", b"z") == [(b"x", b"2"), (b"y", b"1")]


async def test_write_lock_held_past_the_busy_timeout_is_storage_unavailable(db: Path) -> None:
    async with running(db, busy_timeout_s=0.05) as store:
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            tr = store.create_transaction()
            tr.set(b"x", b"1")
            with pytest.raises(StorageUnavailable) as info:
                await tr.commit()
            assert info.value.retryable
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        await put(store, {b"x": b"2"})  # the retry, once the lock is free, succeeds
        assert await read(store, b"x") == b"2"


async def test_a_store_that_is_not_running_refuses_clearly(db: Path) -> None:
    store = SqliteStore(db)
    with pytest.raises(StoreClosed, match=r"nursery\.start"):
        await read(store, b"x")


async def test_closed_store_refuses_and_fails_queued_operations(db: Path) -> None:
    store = SqliteStore(db)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        outcomes: list[str] = []

        async def commit(key: bytes) -> None:
            tr = store.create_transaction()
            tr.set(key, b"1")
            try:
                await tr.commit()
                outcomes.append("committed")
            except StoreClosed:
                outcomes.append("closed")

        nursery.start_soon(commit, b"first")
        await trio.testing.wait_all_tasks_blocked()  # `first` is in a hop, waiting on the lock
        nursery.start_soon(commit, b"second")
        await trio.testing.wait_all_tasks_blocked()  # `second` is queued behind it
        async with trio.open_nursery() as closer:
            closer.start_soon(store.aclose)
            await trio.sleep(0.05)
            blocker.execute("COMMIT")
            blocker.close()
    # The batch in flight completed; the queued one never ran.
    assert sorted(outcomes) == ["closed", "committed"]
    with pytest.raises(StoreClosed):
        await read(store, b"first")
    async with running(db) as reopened:
        assert await read(reopened, b"first") == b"1"
        assert await read(reopened, b"second") is None
