"""WAL checkpoints beside the commits (storage/sqlite_checkpoint.py): no commit copies the
log back into the file (SQLite would, in the COMMIT that takes the log past 1,000 pages,
and every commit queued behind it would wait), the store's own checkpoints keep the log
short, and one that fails fails no commit. The SIGKILL test in test_sqlite.py kills a
store checkpointing every few commits."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from kelpie_trio.storage import Transaction
from kelpie_trio.storage.sqlite import SqliteStore
from kelpie_trio.storage.sqlite_checkpoint import WalCheckpointer
from tests.storage.test_sqlite import read, running
from tests.storage.test_sqlite_full import fill, small_tmpfs
from tests.storage.test_sqlite_full import running as running_store

PAGE = 4096 + 24  # a WAL frame: a page and its header
COMMITS = 1_500


async def _commit_many(store, count: int = COMMITS) -> None:
    for i in range(count):

        async def write(tr: Transaction, i: int = i) -> None:
            tr.set(b"k/%05d" % i, os.urandom(3000))  # a page or more of log each

        await store.transact(write)


def _log_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_no_commit_checkpoints_the_log(tmp_path: Path) -> None:
    path = tmp_path / "kelpie.db"
    async with running(path, durability="normal") as store:
        store.checkpoint_every_commits = 10**9  # the store's own: never
        await _commit_many(store)
        # The log was never started over: it holds every commit's pages, far past the
        # 1,000 at which SQLite would have checkpointed inside a COMMIT.
        assert _log_bytes(path) > 2_000 * PAGE
        assert store.stats.checkpoints == 0


async def test_the_stores_checkpoints_keep_the_log_short(tmp_path: Path) -> None:
    path = tmp_path / "kelpie.db"
    async with running(path, durability="normal") as store:
        store.checkpoint_every_commits = 50
        await _commit_many(store)
        assert store.stats.checkpoints >= 3
        assert store.stats.checkpoint_tails >= 3
        # Started over after the checkpoints: the file is as long as the longest log
        # between two of them, never all the commits' pages (over 2,000, above).
        assert _log_bytes(path) < 1_000 * PAGE
        assert await read(store, b"k/%05d" % (COMMITS - 1)) is not None


async def test_a_failing_checkpoint_fails_no_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(self: WalCheckpointer) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(WalCheckpointer, "checkpoint", full_disk)
    async with running(tmp_path / "kelpie.db", durability="normal") as store:
        store.checkpoint_every_commits = 20
        await _commit_many(store, 200)
        assert store.stats.checkpoint_failures >= 2
        assert store.stats.commits >= 200
        assert await read(store, b"k/00199") is not None


async def test_a_disk_filling_up_under_checkpoints_keeps_every_acknowledged_commit(
    tmp_path: Path,
) -> None:
    """A real full disk (a 3 MB tmpfs), a checkpoint every other commit: checkpoints copy
    pages into the file while it can grow (then fail, and the log keeps the pages);
    commits go on until the disk is full (StorageFull), and every acknowledged one is
    still read, then and after the store is reopened."""
    with small_tmpfs(tmp_path / "disk", "3m") as disk:
        store = SqliteStore(disk / "kelpie.db", durability="normal")
        store.checkpoint_every_commits = 2
        async with running_store(store):
            landed = await fill(store, value_bytes=20_000)
            assert landed > 10
            assert store.stats.checkpoints + store.stats.checkpoint_failures >= 5
            for i in range(landed):
                assert await read(store, b"fill%05d" % i) is not None
        async with running_store(SqliteStore(disk / "kelpie.db")) as again:
            assert await read(again, b"fill%05d" % (landed - 1)) is not None
            assert await read(again, b"fill%05d" % landed) is None
