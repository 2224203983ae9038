"""Reads of the SQLite store, and the reader that serves them on the trio thread.

Every read is served from one SQLite read transaction (a snapshot), checked against
its transaction's read version: the first read of a transaction sets it to the
store's commit version of that snapshot; a row written after it fails the read with
NotCommitted (FDB would fail the transaction at commit anyway); a read version older
than the tombstone horizon fails with TransactionTooOld (a deletion it should see may
have been collected).

**Where reads run.** A thread hop costs ~180 us of CPU (stack-notes.md, section 6) and
wakes two threads; a point read from SQLite's page cache costs ~10-20 us. So a read is
tried first on the trio thread (`InlineReader`), on a connection that never waits: busy
timeout 0 (in WAL mode a reader waits only in rare moments: the WAL being reset or
recovered). A read that cannot be served at once there (any SQLite error) goes to the
writer thread's queue, with its busy timeout and its error mapping.

**Whose connection.** SQLite drops a connection's page cache whenever another connection
changed the WAL since its last read transaction; a busy writer changes it every few
milliseconds, so a connection of the reader's own starts each snapshot cold (20-30 us of
CPU a read in a loaded server against ~8 us in a quiet file). The writer's connection
keeps its cache across its own commits. So an inline read runs on the writer's
connection whenever the store lends it (between batches, which run whole on the trio
thread, and while none is in the writer thread), and on the reader's own read-only
connection while a batch holds the writer's in the thread. Under `steady` this took the
reads' share of the server's samples from 7.7-8.1 % to 6.1 %, ~0.05 ms a message
(bench/RESULTS.md, 2026-12-07, twelfth session).

**Reads said ahead.** Most of an inline read's cost is starting its read transaction. A
transaction that knows keys or ranges it will read says so (`Transaction.prefetch`,
`prefetch_range`): they are read in the snapshot of its next read (`InlineReader.get`'s
`ahead`), each checked against the read version as any read is, its conflict kept for
when it is asked for, and answered then; its conflict range is recorded by that ask, as
for any read.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kelpie_trio.storage.errors import NotCommitted, StoreError, TransactionTooOld

__all__ = [
    "InlineReader",
    "ReadAhead",
    "ReadElsewhere",
    "ReadVersion",
    "get_range_rows",
    "get_row",
]

SQL_META = "SELECT version, horizon FROM meta WHERE id = 0"
_SQL_GET = "SELECT version, value FROM kv WHERE key = ?"
# A range read skips, in SQL, the tombstones it could not conflict with (deleted at or
# before its read version): a range whose keys come and go (an agent's open runs, the
# search outbox) holds the tombstones of the last 10-15 s until they are collected,
# and stepping over each in Python cost ~1 us, per read. Rows written after the read
# version, live or not, still come back, for the conflict check below.
_SQL_RANGE = (
    "SELECT key, version, value FROM kv WHERE key >= ? AND key < ? "
    "AND (value IS NOT NULL OR version > ?) ORDER BY key"
)
_SQL_RANGE_REVERSE = (
    "SELECT key, version, value FROM kv WHERE key >= ? AND key < ? "
    "AND (value IS NOT NULL OR version > ?) ORDER BY key DESC"
)


class ReadVersion:
    """A transaction's read version, shared by its reads.

    Set at the transaction's first read (inline, or by the writer thread), so that two
    reads queued before either ran still share one snapshot. A reset transaction gets a
    new cell: a read still in flight from the old attempt cannot touch it.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: int | None = None


def _read_version_for(cell: ReadVersion, version: int, horizon: int) -> int:
    rv = cell.value
    if rv is None:
        cell.value = rv = version
    elif rv < horizon:
        raise TransactionTooOld("read version is older than the collected tombstones")
    return rv


def get_row(
    conn: sqlite3.Connection, cell: ReadVersion, key: bytes, version: int, horizon: int
) -> bytes | None:
    """`key`'s value in the snapshot of `conn`'s open read transaction (at `version`)."""
    rv = _read_version_for(cell, version, horizon)
    row = conn.execute(_SQL_GET, (key,)).fetchone()
    if row is None:
        return None
    if row[0] > rv:
        raise NotCommitted("a key this transaction reads was written after its read version")
    return row[1]


def get_range_rows(
    conn: sqlite3.Connection,
    cell: ReadVersion,
    begin: bytes,
    end: bytes,
    limit: int,
    reverse: bool,
    version: int,
    horizon: int,
) -> list[tuple[bytes, bytes]]:
    """The live rows of [begin, end) in that snapshot, at most `limit` (0: all)."""
    rv = _read_version_for(cell, version, horizon)
    out: list[tuple[bytes, bytes]] = []
    cursor = conn.execute(_SQL_RANGE_REVERSE if reverse else _SQL_RANGE, (begin, end, rv))
    try:
        # Tombstones newer than rv come back too (the SQL above): a deletion after rv is
        # a conflict.
        for key, row_version, value in cursor:
            if row_version > rv:
                raise NotCommitted(
                    "a key in a range this transaction reads was written after its read version"
                )
            if value is not None:
                out.append((key, value))
                if len(out) == limit:  # limit 0 never matches: read everything
                    break
    finally:
        cursor.close()  # resets the statement, so the read transaction can end
    return out


class ReadAhead:
    """A read a transaction said it will make (a key, or a whole range when `end` is
    set), served beside another one; `outcome` is its value or rows, or its error."""

    __slots__ = ("begin", "end", "outcome")

    def __init__(self, begin: bytes, end: bytes | None = None) -> None:
        self.begin = begin
        self.end = end
        self.outcome: Any = None

    @property
    def tag(self) -> Any:
        """What a later ask names it by: the key, or (begin, end)."""
        return self.begin if self.end is None else (self.begin, self.end)

    def answer(self) -> Any:
        if isinstance(self.outcome, StoreError):
            raise self.outcome
        return self.outcome


def _serve(
    conn: sqlite3.Connection,
    cell: ReadVersion,
    ahead: Sequence[ReadAhead],
    version: int,
    horizon: int,
) -> None:
    for read in ahead:
        try:
            if read.end is None:
                read.outcome = get_row(conn, cell, read.begin, version, horizon)
            else:
                read.outcome = get_range_rows(
                    conn, cell, read.begin, read.end, 0, False, version, horizon
                )
        except StoreError as error:  # its own conflict: raised if it is read
            read.outcome = error


class ReadElsewhere(Exception):
    """The inline reader could not serve this read at once: queue it for the writer
    thread (which waits out a busy file and maps SQLite's errors)."""


class InlineReader:
    """Reads on the trio thread, one at a time: on the writer's connection when the store
    lends it (`writer`: between batches, none in the writer thread), else on a read-only
    connection of its own."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        writer: Callable[[], sqlite3.Connection | None] | None = None,
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._writer = writer
        self.latest_version = 0  # the newest commit version a read here saw
        self.snapshots = 0  # read transactions begun (a read and its reads ahead share one)
        self.on_writer = 0  # of them, on the writer's connection

    @classmethod
    def open(
        cls,
        path: str,
        *,
        cache_kib: int,
        writer: Callable[[], sqlite3.Connection | None] | None = None,
    ) -> InlineReader:
        """Open the reader (after the writer created the schema). Any thread."""
        conn = sqlite3.connect(
            path,
            timeout=0,  # never wait on the loop: a busy moment sends the read elsewhere
            isolation_level=None,
            check_same_thread=False,  # opened in the writer's hop, used on the trio thread
            cached_statements=64,
        )
        try:
            conn.execute("PRAGMA query_only = 1")
            conn.execute(f"PRAGMA cache_size = -{cache_kib}")
        except BaseException:
            conn.close()
            raise
        return cls(conn, writer)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def get(self, cell: ReadVersion, key: bytes, ahead: Sequence[ReadAhead] = ()) -> bytes | None:
        """`key`'s value, and in the same read transaction the reads `ahead` (each keeps
        its answer or its own conflict): one snapshot's start instead of one each, which
        costs most of a read here (the module's docstring)."""
        with self._snapshot() as (conn, version, horizon):
            value = get_row(conn, cell, key, version, horizon)
            _serve(conn, cell, ahead, version, horizon)
            return value

    def get_range(
        self,
        cell: ReadVersion,
        begin: bytes,
        end: bytes,
        limit: int,
        reverse: bool,
        ahead: Sequence[ReadAhead] = (),
    ) -> list[tuple[bytes, bytes]]:
        """The live rows of [begin, end), with the reads `ahead` in its snapshot."""
        with self._snapshot() as (conn, version, horizon):
            rows = get_range_rows(conn, cell, begin, end, limit, reverse, version, horizon)
            _serve(conn, cell, ahead, version, horizon)
            return rows

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[tuple[sqlite3.Connection, int, int]]:
        """One read transaction: the connection, the store's commit version and tombstone
        horizon in it. Any SQLite error sends the read elsewhere; a store error (the
        transaction's own conflict) goes to the caller."""
        conn = self._conn
        if conn is None:
            raise ReadElsewhere
        lent = self._writer() if self._writer is not None else None
        if lent is not None:
            conn = lent
            self.on_writer += 1
        self.snapshots += 1
        try:
            conn.execute("BEGIN")  # deferred: the snapshot starts at the first SELECT
            try:
                version, horizon = conn.execute(SQL_META).fetchone()
                self.latest_version = max(self.latest_version, version)
                yield conn, version, horizon
            finally:
                self._end(conn)
        except sqlite3.Error as exc:
            raise ReadElsewhere from exc

    @staticmethod
    def _end(conn: sqlite3.Connection) -> None:
        # A read transaction wrote nothing: ending it cannot lose anything, and an error
        # here (after the read was served) leaves the connection to the next BEGIN.
        try:
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
