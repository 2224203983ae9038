"""Reads served on the trio thread (sqlite_reads.InlineReader): no thread hop, never a
wait on the loop, and a read the reader cannot serve goes to the writer thread."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import trio

from kelpie_trio.storage import Transaction
from tests.storage.test_sqlite import put, read, read_range, running


async def test_a_read_takes_no_hop_to_the_writer_thread(tmp_path: Path) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        await put(store, {b"a": b"1", b"b": b"2"})
        hops, inline = store.stats.hops, store.stats.inline_reads
        assert await read(store, b"a") == b"1"
        assert await read_range(store, b"a", b"c") == [(b"a", b"1"), (b"b", b"2")]
        assert store.stats.hops == hops
        assert store.stats.inline_reads == inline + 2


async def test_a_write_lock_held_elsewhere_does_not_make_a_read_wait(tmp_path: Path) -> None:
    db = tmp_path / "kelpie.db"
    async with running(db, busy_timeout_s=5.0) as store:
        await put(store, {b"a": b"1"})
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        blocker.execute("UPDATE kv SET value = x'39' WHERE key = x'61'")  # not committed
        try:
            with trio.fail_after(1.0):  # the writer thread would wait out its busy timeout
                assert await read(store, b"a") == b"1"  # the last committed value
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()


async def test_a_read_the_reader_cannot_serve_goes_to_the_writer_thread(tmp_path: Path) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        await put(store, {b"a": b"1", b"b": b"2"})
        reader = store._reader
        assert reader is not None and reader._conn is not None
        reader._writer = None  # its own connection only (as while a batch is in the thread)
        reader._conn.close()  # every statement on it now fails (sqlite3.ProgrammingError)
        hops = store.stats.hops
        assert await read(store, b"a") == b"1"
        assert await read_range(store, b"a", b"c") == [(b"a", b"1"), (b"b", b"2")]
        assert store.stats.hops == hops + 2


async def test_a_read_the_lent_writers_connection_fails_goes_to_the_writer_thread(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        await put(store, {b"a": b"1", b"b": b"2"})
        conn = store._writer.conn
        assert conn is not None
        on_the_loop = threading.get_ident()

        def refuse_on_the_loop(*_: object) -> int:
            on_loop = threading.get_ident() == on_the_loop
            return sqlite3.SQLITE_DENY if on_loop else sqlite3.SQLITE_OK

        # Setting it expires the prepared statements: each is prepared again, and fails
        # on the loop.
        conn.set_authorizer(refuse_on_the_loop)
        hops, lent = store.stats.hops, store._reader.on_writer  # type: ignore[union-attr]
        assert await read(store, b"a") == b"1"
        assert await read_range(store, b"a", b"c") == [(b"a", b"1"), (b"b", b"2")]
        assert store.stats.hops == hops + 2
        assert store._reader.on_writer == lent + 2  # type: ignore[union-attr]
        conn.set_authorizer(None)


async def test_reads_between_batches_run_on_the_writers_connection(tmp_path: Path) -> None:
    """Its page cache stays warm across its own commits (the reader's own is dropped at
    each): the trio thread's reads use it whenever no batch holds it."""
    async with running(tmp_path / "kelpie.db") as store:
        reader = store._reader
        assert reader is not None
        for i in range(3):
            await put(store, {b"a": b"%d" % i})
            before = reader.on_writer, reader.snapshots
            assert await read(store, b"a") == b"%d" % i
            assert (reader.on_writer, reader.snapshots) == (before[0] + 1, before[1] + 1)


async def test_while_a_batch_is_in_the_writer_thread_reads_use_the_readers_own_connection(
    tmp_path: Path,
) -> None:
    """Not the writer's connection, which the thread holds (SQLite would make the loop
    wait for it); between hops that connection waits for no lock (busy timeout 0), in a
    hop for up to the store's busy timeout."""
    async with running(tmp_path / "kelpie.db", busy_timeout_s=7.0) as store:
        await put(store, {b"a": b"1"})
        writer, reader = store._writer, store._reader
        assert writer.conn is not None and reader is not None
        assert writer.conn.execute("PRAGMA busy_timeout").fetchone() == (0,)
        store.inline_max_writes = 0  # every batch of commits to the writer thread
        entered, go = threading.Event(), threading.Event()
        in_hop: list[int] = []
        run_batch = writer._execute

        def held(ops: list[object], **kw: object) -> int | None:
            assert writer.conn is not None
            in_hop.append(writer.conn.execute("PRAGMA busy_timeout").fetchone()[0])
            entered.set()
            go.wait()  # the batch holds the connection until the loop has read
            return run_batch(ops, **kw)  # type: ignore[arg-type]

        writer._execute = held  # type: ignore[method-assign]
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(put, store, {b"a": b"2"})
                await trio.to_thread.run_sync(entered.wait)
                try:
                    lent, snapshots = reader.on_writer, reader.snapshots
                    assert await read(store, b"a") == b"1"  # the batch has not committed
                    assert (reader.on_writer, reader.snapshots) == (lent, snapshots + 1)
                finally:
                    go.set()
        assert in_hop == [7000]
        assert await read(store, b"a") == b"2"
        assert writer.conn.execute("PRAGMA busy_timeout").fetchone() == (0,)


async def test_an_inline_read_sees_a_commit_once_it_is_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "kelpie.db"
    async with running(db) as first, running(db) as second:
        for i in range(20):
            await put(first, {b"n": b"%d" % i})  # acknowledged: on disk, in the WAL
            assert await read(second, b"n") == b"%d" % i  # another process's reader

        async def read_then_write(tr: Transaction) -> bytes | None:
            seen = await tr.get(b"n")
            tr.set(b"n", b"after " + (seen or b""))
            return seen

        assert await second.transact(read_then_write) == b"19"
        assert await read(first, b"n") == b"after 19"
