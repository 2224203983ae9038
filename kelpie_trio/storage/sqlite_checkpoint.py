"""WAL checkpoints off the commit path: the SQLite store's own connection that copies the
write-ahead log back into the database file, in a thread of its own.

SQLite checkpoints by itself inside the COMMIT that takes the log past 1,000 pages: that
commit, and every commit queued behind it in the writer thread, waits while the pages
are copied and the file is synced (10-20 ms on this machine's disk, against ~1 ms for a
commit; one client's p99 was that wait, bench/RESULTS.md). So the writer's connection
leaves it (but at `sqlite_writer.BACKSTOP_PAGES`, if the checkpoints here fall that far
behind) and the store runs a PASSIVE checkpoint here every
`SqliteStore.checkpoint_every_commits` commits: it copies what the log holds without
taking the write lock, so commits go on meanwhile (and append to the log). Those few
appended pages are then copied on the writer connection before its next batch begins
(`SqliteWriter._checkpoint_tail`): SQLite starts the log over only when a write
transaction begins with the whole log in the file, which a checkpoint beside busy
commits alone would never leave.

Nothing here touches trio.
"""

from __future__ import annotations

import sqlite3

from kelpie_trio.storage.sqlite_writer import SqliteStats

__all__ = ["WalCheckpointer"]


class WalCheckpointer:
    """Its connection is used by one thread at a time (the store runs one checkpoint at
    a time) but not always the same one."""

    def __init__(self, path: str, synchronous: str, stats: SqliteStats) -> None:
        self.path = path
        self.synchronous = synchronous  # the writer's level: a checkpoint syncs as it does
        self.stats = stats
        self.conn: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open the connection (after the writer made the file), with the store's other
        two: its file handles are the store's from the start, not opened mid-traffic."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def checkpoint(self) -> None:
        """A PASSIVE checkpoint. Raises sqlite3.Error as SQLite gives it (a full disk);
        another process's checkpoint running makes this one a no-op."""
        assert self.conn is not None, "open() first"
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.stats.checkpoints += 1

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
