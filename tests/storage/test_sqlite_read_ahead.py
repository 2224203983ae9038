"""Reads said ahead (`Transaction.prefetch`, `prefetch_range`) on the inline reader: served
in the snapshot of the transaction's next read, answered when asked for, and never a
different answer or outcome than reading them then would give."""

from __future__ import annotations

from pathlib import Path

from kelpie_trio.storage import Transaction
from tests.storage.test_sqlite import put, read, running


async def test_reads_said_ahead_share_the_next_reads_snapshot(tmp_path: Path) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        await put(store, {b"a": b"1", b"b": b"2", b"r/1": b"x", b"r/2": b"y", b"s": b"3"})
        reader = store._reader
        assert reader is not None
        inline = store.stats.inline_reads

        async def reads(tr: Transaction) -> tuple[object, ...]:
            tr.prefetch(b"b")
            tr.prefetch_range(b"r/", b"r0")
            start = reader.snapshots
            a = await tr.get(b"a")
            b = await tr.get(b"b")
            rows = await tr.get_range(b"r/", b"r0")
            shared = reader.snapshots - start
            s = await tr.get(b"s")  # nothing said ahead: a snapshot of its own
            return a, b, rows, s, shared, reader.snapshots - start

        assert await store.transact(reads) == (
            b"1", b"2", [(b"r/1", b"x"), (b"r/2", b"y")], b"3", 1, 2
        )  # fmt: skip
        assert store.stats.inline_reads == inline + 4  # each read still counts as one


async def test_a_key_read_ahead_then_changed_is_not_committed_on(tmp_path: Path) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        await put(store, {b"a": b"1", b"b": b"2"})
        seen: list[bytes | None] = []

        async def copy_b(tr: Transaction) -> None:
            tr.prefetch(b"b")
            await tr.get(b"a")  # b is read here, ahead
            if not seen:
                await put(store, {b"b": b"changed"})  # another transaction, meanwhile
            value = await tr.get(b"b")
            seen.append(value)
            tr.set(b"c", value or b"")

        await store.transact(copy_b)
        # The first attempt saw b as of its read version; its commit conflicted, and the
        # retry (a new read version, nothing kept from the first) saw the change.
        assert seen == [b"2", b"changed"]
        assert await read(store, b"c") == b"changed"


async def test_a_read_ahead_that_conflicted_fails_only_when_it_is_asked_for(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        await put(store, {b"a": b"1", b"b": b"2", b"c": b"3"})
        attempts: list[str] = []

        async def then(asks_b: bool, tr: Transaction) -> None:
            await tr.get(b"a")  # the read version is chosen here
            if not attempts:
                await put(store, {b"b": b"changed"})  # after it
            tr.prefetch(b"b")
            await tr.get(b"c")  # b read ahead: newer than the read version
            attempts.append("asked" if asks_b else "not asked")
            if asks_b:
                await tr.get(b"b")
            tr.set(b"d", b"done")

        await store.transact(lambda tr: then(False, tr))
        assert attempts == ["not asked"]  # never read, so never its conflict
        attempts.clear()
        await put(store, {b"b": b"2"})
        await store.transact(lambda tr: then(True, tr))
        assert attempts == ["asked", "asked"]  # read: the conflict, and a retry


async def test_reads_ahead_are_dropped_when_the_reader_cannot_serve(tmp_path: Path) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        await put(store, {b"a": b"1", b"b": b"2"})
        reader = store._reader
        assert reader is not None and reader._conn is not None
        reader._writer = None  # its own connection only (as while a batch is in the thread)
        reader._conn.close()  # every statement on it fails: reads go to the writer thread

        async def reads(tr: Transaction) -> tuple[bytes | None, bytes | None]:
            tr.prefetch(b"b")
            return await tr.get(b"a"), await tr.get(b"b")

        hops = store.stats.hops
        assert await store.transact(reads) == (b"1", b"2")
        assert store.stats.hops == hops + 2  # each read went to the thread on its own


async def test_nothing_read_ahead_outlives_its_attempt(tmp_path: Path) -> None:
    async with running(tmp_path / "kelpie.db") as store:
        await put(store, {b"a": b"1", b"b": b"2"})
        seen: list[bytes | None] = []

        async def first_reads_a_second_b(tr: Transaction) -> None:
            if not seen:
                tr.prefetch(b"b")
                await tr.get(b"a")  # b is read ahead here, and never asked for
                await put(store, {b"a": b"changed", b"b": b"changed"})
                seen.append(None)
                tr.set(b"x", b"1")  # a changed since it was read: this attempt is retried
                return
            seen.append(await tr.get(b"b"))

        await store.transact(first_reads_a_second_b)
        assert seen == [None, b"changed"]
