"""Reads served on the trio thread (sqlite_reads.InlineReader): no thread hop, never a
wait on the loop, and a read the reader cannot serve goes to the writer thread."""

from __future__ import annotations

import sqlite3
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
        reader._conn.close()  # every statement on it now fails (sqlite3.ProgrammingError)
        hops = store.stats.hops
        assert await read(store, b"a") == b"1"
        assert await read_range(store, b"a", b"c") == [(b"a", b"1"), (b"b", b"2")]
        assert store.stats.hops == hops + 2


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
