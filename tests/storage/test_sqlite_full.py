"""A full disk under the SQLite store: StorageFull at once, nothing written, not retried.

Two ways to fill it: SQLite's own cap on the file (`PRAGMA max_page_count`, which
fails the write while the transaction is open) and, where this process may mount
one, a small tmpfs (which fails the COMMIT itself with ENOSPC, the case a real
full disk hits first in WAL mode).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from kelpie_trio.storage import StorageFull, StorageUnavailable, Transaction, sqlite_errors
from kelpie_trio.storage.sqlite import SqliteStore
from tests.storage.helpers import put, read


class CappedStore(SqliteStore):
    """A store whose file may not grow past `pages` pages: SQLite answers SQLITE_FULL."""

    pages = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        writer = self._writer
        opened = writer.open

        def capped() -> int:
            version = opened()
            assert writer.conn is not None
            writer.conn.execute(f"PRAGMA max_page_count = {self.pages}")
            return version

        writer.open = capped  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def running(store: SqliteStore) -> AsyncIterator[SqliteStore]:
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield store
        finally:
            await store.aclose()


async def fill(store: SqliteStore, *, value_bytes: int = 50_000) -> int:
    """Write until the store says it is full; how many writes landed."""
    for i in range(10_000):
        try:
            await put(store, {b"fill%05d" % i: os.urandom(value_bytes)})
        except StorageFull:
            return i
    raise AssertionError("the store never filled up")


async def test_a_full_file_is_storage_full_at_the_first_attempt(tmp_path: Path) -> None:
    db = tmp_path / "kelpie.db"
    async with running(SqliteStore(db)) as store:
        await put(store, {b"kept": b"before"})
    capped = CappedStore(db)
    capped.pages = os.stat(db).st_size // 4096 + 40
    async with running(capped) as store:
        landed = await fill(store)
        attempts = 0

        async def write(tr: Transaction) -> None:
            nonlocal attempts
            attempts += 1
            tr.set(b"one-more", os.urandom(60_000))

        with pytest.raises(StorageFull, match="full") as raised:
            await store.transact(write)
        assert attempts == 1, "a full disk is not a transient failure: no retry"
        assert not raised.value.retryable
        # Nothing of the refused writes is there; everything acknowledged is; reads work.
        assert await read(store, b"one-more") is None
        assert await read(store, b"kept") == b"before"
        assert await read(store, b"fill%05d" % (landed - 1)) is not None
        assert await read(store, b"fill%05d" % landed) is None
        # A write that fits still goes through: the store was not broken by the refusal.
        await put(store, {b"kept": b"after"})
        assert await read(store, b"kept") == b"after"


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_a_full_file_system_fails_the_commit_fast_and_writes_nothing(
    tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "disk", "3m") as disk:
        async with running(SqliteStore(disk / "kelpie.db")) as store:
            landed = await fill(store)
            assert landed > 10  # it really wrote until the disk was full
            started = trio.current_time()
            with pytest.raises(StorageFull):
                await put(store, {b"late": os.urandom(60_000)})
            assert trio.current_time() - started < 1.0
            assert await read(store, b"late") is None
            assert await read(store, b"fill%05d" % landed) is None
            assert await read(store, b"fill%05d" % (landed - 1)) is not None


def _io_error() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = 10 | (13 << 8)  # SQLITE_IOERR_TRUNCATE: ftruncate failed
    error.sqlite_errorname = "SQLITE_IOERR_TRUNCATE"
    return error


def test_an_io_error_with_no_room_left_is_storage_full(monkeypatch: pytest.MonkeyPatch) -> None:
    # ENOSPC from a call other than write() reaches us as an SQLITE_IOERR_* code.
    monkeypatch.setattr(sqlite_errors, "_free_bytes", lambda path: 4096)
    mapped = sqlite_errors.map_error(_io_error(), what="commit", path="/data/kelpie.db")
    assert isinstance(mapped, StorageFull) and not mapped.retryable


def test_an_io_error_with_room_left_stays_a_transient_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_errors, "_free_bytes", lambda path: 10 << 30)
    mapped = sqlite_errors.map_error(_io_error(), what="commit", path="/data/kelpie.db")
    assert isinstance(mapped, StorageUnavailable) and mapped.retryable
