"""The SQLite store's writer connection and what runs on it, one batch at a time.

`SqliteStore` (sqlite.py) queues operations and hands each batch to `SqliteWriter.execute`
in one `trio.to_thread.run_sync` call, or a batch of only commits to `execute_if_free` on
the trio thread; nothing here touches trio. A batch's commits share
one write transaction (group commit: one COMMIT, one fsync, or none when no commit of it
asks to be durable), each in its own SAVEPOINT when it has company (a commit alone is
its batch's whole transaction); its reads share one read transaction;
tombstone collection moves the horizon and deletes in one more. sqlite.py's docstring
says what the rows, versions and tombstones mean.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs

from kelpie_trio.storage.base import CommitRequest, MutationKind, add_to_value
from kelpie_trio.storage.errors import NotCommitted, StoreError, TransactionTooOld
from kelpie_trio.storage.sqlite_errors import (
    SQLITE_BUSY,
    SQLITE_FULL,
    commit_unknown,
    fails_the_batch,
    map_error,
    primary_code,
)
from kelpie_trio.storage.sqlite_reads import SQL_META, ReadVersion, get_range_rows, get_row

__all__ = [
    "BACKSTOP_PAGES",
    "CACHE_KIB",
    "Collect",
    "Commit",
    "Durability",
    "Get",
    "GetRange",
    "Op",
    "SqliteStats",
    "SqliteWriter",
]

Durability = Literal["full", "normal"]

# -- schema and statements ------------------------------------------------------
#
# `version` comes before `value` on purpose: SQLite decodes a record's columns in
# order, so conflict checks (which only need key and version) never walk the
# overflow pages of a large value.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kv (
        key BLOB PRIMARY KEY NOT NULL,
        version INTEGER NOT NULL,
        value BLOB
    ) WITHOUT ROWID""",
    # Only tombstones are indexed: GC finds them without scanning live data.
    "CREATE INDEX IF NOT EXISTS kv_tombstones ON kv (version) WHERE value IS NULL",
    """CREATE TABLE IF NOT EXISTS meta (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        version INTEGER NOT NULL,
        horizon INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO meta (id, version, horizon) VALUES (0, 0, 0)",
)
_SQL_SET_VERSION = "UPDATE meta SET version = ? WHERE id = 0"
_SQL_SET_HORIZON = "UPDATE meta SET horizon = ? WHERE id = 0"
_SQL_GET_VALUE = "SELECT value FROM kv WHERE key = ?"
_SQL_CONFLICT = "SELECT 1 FROM kv WHERE key >= ? AND key < ? AND version > ? LIMIT 1"
_SQL_PUT = "INSERT OR REPLACE INTO kv (key, version, value) VALUES (?, ?, ?)"
# Clearing a missing key or a tombstone changes nothing anyone could read, so it
# writes nothing: a reader of that key has no reason to conflict.
_SQL_CLEAR = "UPDATE kv SET value = NULL, version = ? WHERE key = ? AND value IS NOT NULL"
_SQL_CLEAR_RANGE = (
    "UPDATE kv SET value = NULL, version = ? WHERE key >= ? AND key < ? AND value IS NOT NULL"
)
_SQL_COLLECT = "DELETE FROM kv WHERE value IS NULL AND version <= ?"

# Each connection's page cache, KiB (the writer's and the inline reader's; see `open`).
CACHE_KIB = 65536
# The writer's own WAL auto-checkpoint, in pages (SQLite's default is 1,000, ~4 MB): ten
# times that, so that the log stays bounded even if the store's checkpoints, which run
# beside the commits (sqlite_checkpoint.py), keep failing.
BACKSTOP_PAGES = 10_000


# -- queued operations ------------------------------------------------------------


class Op:
    __slots__ = ("error", "finished", "result")

    def __init__(self) -> None:
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None

    def succeed(self, result: Any) -> None:
        self.result = result
        self.finished = True

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.finished = True


class Get(Op):
    __slots__ = ("key", "rv")

    def __init__(self, rv: ReadVersion, key: bytes) -> None:
        super().__init__()
        self.rv = rv
        self.key = key


class GetRange(Op):
    __slots__ = ("begin", "end", "limit", "reverse", "rv")

    def __init__(self, rv: ReadVersion, begin: bytes, end: bytes, limit: int, reverse: bool):
        super().__init__()
        self.rv = rv
        self.begin = begin
        self.end = end
        self.limit = limit
        self.reverse = reverse


class Commit(Op):
    __slots__ = ("request",)

    def __init__(self, request: CommitRequest) -> None:
        super().__init__()
        self.request = request


class Collect(Op):
    """Move the tombstone horizon up to `horizon` (capped at the current version)."""

    __slots__ = ("horizon",)

    def __init__(self, horizon: int) -> None:
        super().__init__()
        self.horizon = horizon


@attrs.define
class SqliteStats:
    """Counters for tests and benchmarks (one store, this process only).

    The writer updates them during a batch; read them between operations.
    """

    hops: int = 0  # batches run in the writer thread (a thread hop each)
    inline_batches: int = 0  # batches run on the trio thread (only commits: _inline_batch)
    slow_inline_commits: int = 0  # inline COMMITs slower than SqliteStore.slow_commit_s
    commits: int = 0  # transactions committed
    refused: int = 0  # commits failed alone (NotCommitted, TransactionTooOld, their own error)
    reads: int = 0  # point and range reads served
    inline_reads: int = 0  # of which on the trio thread (no hop)
    largest_batch: int = 0
    tombstones_collected: int = 0
    unsynced_batches: int = 0  # write batches of only non-durable commits: no fsync
    checkpoints: int = 0  # WAL checkpoints run off the commit path (sqlite_checkpoint.py)
    checkpoint_failures: int = 0
    checkpoint_tails: int = 0  # their last pages, copied before the next batch (a few)
    checkpoint_tail_failures: int = 0  # of which left pages behind (a reader, an error)

    @property
    def batches(self) -> int:
        """Batches run, on either thread."""
        return self.hops + self.inline_batches


# -- the writer ----------------------------------------------------------------------


class SqliteWriter:
    """The writer connection; its methods run one batch at a time, in the writer thread
    (`execute`) or on the trio thread (`execute_if_free`).

    `cleared_at` and `known_horizon` are read by the store's trio side between hops (its
    tombstone collector sleeps while nothing this process cleared is left to collect)."""

    def __init__(
        self, path: str, durability: Durability, busy_timeout_s: float, stats: SqliteStats
    ) -> None:
        self.path = path
        # How long the last inline batch's COMMIT took (its WAL's write and fsync), by the
        # clock `execute_if_free` was given; 0 if it failed.
        self.last_commit_s = 0.0
        self.durability = durability
        self.busy_timeout_s = busy_timeout_s
        self.stats = stats
        self.conn: sqlite3.Connection | None = None
        self.synchronous = ""  # the connection's level, once open
        # The version of this process's last commit that wrote tombstones.
        self.cleared_at = 0
        self.known_horizon = 0  # the newest tombstone horizon this process saw in the file
        self.checkpoint_tail_due = False  # set by the store after a checkpoint beside commits

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def open(self) -> int:
        """Open the file (WAL, the schema once); the store's current version."""
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_s,  # the busy handler: other processes' writers
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # hops may land on different worker threads
            cached_statements=64,
        )
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"could not put {self.path} in WAL mode (got {mode!r})")
            # synchronous: in WAL mode FULL fsyncs the WAL at every COMMIT, so an
            # acknowledged commit survives power loss; NORMAL only syncs at
            # checkpoints, so a power cut may lose the last commits (never
            # corrupting the file), while a crash of the process loses nothing.
            # FULL is the default: group commit pays one fsync per batch, not
            # per transaction. durability="normal" selects NORMAL.
            synchronous = "FULL" if self.durability == "full" else "NORMAL"
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            self.synchronous = synchronous
            # Truncate the WAL after checkpoints that found it bigger than this.
            conn.execute("PRAGMA journal_size_limit = 67108864")
            # Checkpoints run beside the commits (sqlite_checkpoint.py); SQLite's own, in
            # a COMMIT, only if those fall far behind.
            conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            # A 64 MiB page cache (SQLite's default is 2 MiB): with 20,000 agents stored (a
            # 113 MB file) the default one re-read B-tree pages from the OS on every
            # transaction; this took agent activation p99 from ~66 to ~20-26 ms in the
            # bench (bench/RESULTS.md). It is an upper bound, filled only as pages are read.
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            # The schema, once, even when several processes open the file at once.
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                version = conn.execute(SQL_META).fetchone()[0]
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            # Between hops the connection is used on the trio thread (inline batches,
            # reads), which must never sit in the busy handler: only a hop waits.
            conn.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        return version

    def execute(self, ops: list[Op]) -> int:
        """Run one batch in the writer thread, where waiting out another process's lock
        (the busy timeout) is fine; set every op's outcome. Returns the newest version
        seen (or -1)."""
        self.stats.hops += 1
        conn = self.conn
        assert conn is not None
        conn.execute(f"PRAGMA busy_timeout = {round(self.busy_timeout_s * 1000)}")
        try:
            return self._execute(ops)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")  # the loop's setting (`open`)

    def execute_if_free(self, commits: list[Op], clock: Callable[[], float]) -> int | None:
        """`execute` for a batch of only commits, on the caller's thread, without waiting
        for the file's write lock: None, with nothing done, when another process holds it
        (the caller runs the batch in the writer thread instead, where waiting is fine).
        Its COMMIT is timed by `clock` (`last_commit_s`)."""
        assert all(isinstance(op, Commit) for op in commits)
        version = self._execute(commits, clock=clock)
        if version is not None:
            self.stats.inline_batches += 1
        return version

    def _execute(self, ops: list[Op], *, clock: Callable[[], float] | None = None) -> int | None:
        """`clock` given: inline (`execute_if_free`), never waiting for the write lock."""
        self.stats.largest_batch = max(self.stats.largest_batch, len(ops))
        commits: list[Commit] = []
        reads: list[Op] = []
        collects: list[Collect] = []
        for op in ops:
            if isinstance(op, Commit):
                commits.append(op)
            elif isinstance(op, Collect):
                collects.append(op)
            else:
                reads.append(op)
        version = -1
        # Commits first: reads queued beside them then see the freshest state.
        if commits:
            written = self._write_phase(commits, clock=clock)
            if written is None:
                return None  # busy, and told not to wait: nothing ran (only commits here)
            version = written
        if reads:
            version = max(version, self._read_phase(reads))
        for op in collects:
            version = max(version, self._collect(op))
        return version

    def _fail_unfinished(self, ops: Sequence[Op], exc: sqlite3.Error, what: str) -> int:
        """Roll back; every op of the phase without an outcome yet fails with `exc`."""
        self._rollback()
        for op in ops:
            if not op.finished:
                op.fail(map_error(exc, what=what, path=self.path))
        return -1

    def _rollback(self) -> None:
        conn = self.conn
        assert conn is not None
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    # reads -------------------------------------------------------------------------------

    def _read_phase(self, reads: list[Op]) -> int:
        """Serve every read of the batch from one snapshot (one SQLite read transaction)."""
        conn = self.conn
        assert conn is not None
        try:
            conn.execute("BEGIN")
            version, horizon = conn.execute(SQL_META).fetchone()
            for op in reads:
                try:
                    if isinstance(op, Get):
                        op.succeed(get_row(conn, op.rv, op.key, version, horizon))
                    else:
                        assert isinstance(op, GetRange)
                        rows = get_range_rows(
                            conn, op.rv, op.begin, op.end, op.limit, op.reverse, version, horizon
                        )
                        op.succeed(rows)
                except StoreError as error:  # this transaction's conflict, not the batch's
                    op.fail(error)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # Reads already served came from a consistent snapshot: they stand.
            return self._fail_unfinished(reads, exc, "read")
        self.stats.reads += len(reads)
        return version

    # commits -------------------------------------------------------------------------------

    def _write_phase(
        self, commits: list[Commit], *, clock: Callable[[], float] | None = None
    ) -> int | None:
        """Check and apply every commit of the batch in one write transaction (group
        commit). With a `clock` (inline): None, with nothing done, if the write lock is
        held; the COMMIT timed."""
        conn = self.conn
        assert conn is not None
        wait = clock is None
        self.last_commit_s = 0.0
        if self.checkpoint_tail_due:  # PASSIVE: never waits, on the loop neither
            self._checkpoint_tail(conn)
        try:
            unsynced = self._sync_for(commits)
            # IMMEDIATE takes the file's write lock now; a writer in another
            # process makes us wait here, up to the busy timeout.
            if wait:
                conn.execute("BEGIN IMMEDIATE")
            elif not self._begin_if_free(conn):
                return None
            self.stats.unsynced_batches += unsynced
        except sqlite3.Error as exc:
            for op in commits:
                op.fail(map_error(exc, what="begin a write transaction", path=self.path))
            return -1
        applied: list[Commit] = []
        try:
            # Read under the write lock: versions are serial across processes.
            version, horizon = conn.execute(SQL_META).fetchone()
            cleared = 0  # the version of the last commit here that wrote tombstones
            # Each commit of a batch of several runs in a SAVEPOINT, so that one can fail
            # alone. SQLite journals what a savepoint changes, past 64 KiB in a temporary
            # file made, written and unlinked every batch or so (bench/RESULTS.md: a serial
            # commit's CPU 0.8-1.0 -> 0.7 ms without); a commit alone is its own rollback unit.
            alone = len(commits) == 1
            for op in commits:
                request = op.request
                rv = request.read_version
                # Checks come before any write, so a refused transaction has
                # nothing to roll back. Blind writes (rv None) never conflict.
                if rv is not None:
                    if rv < horizon:
                        op.fail(TransactionTooOld("read version is older than the tombstone GC"))
                        continue
                    if self._conflicts(conn, request.read_ranges, rv):
                        op.fail(NotCommitted("a concurrent transaction wrote a key this one read"))
                        continue
                if not alone:
                    conn.execute("SAVEPOINT kelpie_txn")
                try:
                    if self._apply(conn, request, version + 1):
                        cleared = version + 1
                except Exception as exc:
                    if fails_the_batch(exc) or not conn.in_transaction:
                        raise
                    if alone:  # the whole batch undone: nothing was written
                        conn.execute("ROLLBACK")
                        op.fail(exc)
                        self.stats.refused += 1
                        return version
                    conn.execute("ROLLBACK TO kelpie_txn")
                    conn.execute("RELEASE kelpie_txn")
                    op.fail(exc)
                    continue
                if not alone:
                    conn.execute("RELEASE kelpie_txn")
                version += 1
                applied.append(op)
            if applied:
                conn.execute(_SQL_SET_VERSION, (version,))
        except sqlite3.Error as exc:
            # Before COMMIT: nothing of this batch is in the file.
            return self._fail_unfinished(commits, exc, "commit")
        except BaseException:
            self._rollback()
            raise
        # Before COMMIT, whatever its outcome: a needless collection costs one look.
        self.cleared_at = max(self.cleared_at, cleared)
        started = clock() if clock is not None else 0.0
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # Still in the transaction: COMMIT was refused and ROLLBACK undoes
            # it, nothing written. Out of it: SQLite gave up mid-COMMIT (an I/O
            # error writing or syncing the WAL) and frames already on disk may
            # be recovered, so the outcome is unknown; Store.transact makes the
            # retry safe with its idempotency marker.
            # SQLITE_FULL is the exception: SQLite writes the frame that marks
            # the commit last, and ENOSPC means that write did not happen.
            unknown = not conn.in_transaction and primary_code(exc) != SQLITE_FULL
            self._rollback()
            for op in applied:
                op.fail(
                    commit_unknown(exc)
                    if unknown
                    else map_error(exc, what="commit", path=self.path)
                )
            return -1
        if clock is not None:
            self.last_commit_s = clock() - started
        for op in applied:
            op.succeed(None)
        self.stats.commits += len(applied)
        self.stats.refused += len(commits) - len(applied)
        return version

    def _checkpoint_tail(self, conn: sqlite3.Connection) -> None:
        """After a checkpoint beside the commits (sqlite_checkpoint.py), the pages that
        commits appended meanwhile (a few): copied here, before this batch's BEGIN, so
        that the whole log is in the file when the batch begins, the one moment SQLite
        starts the log over (else it only grows, to the backstop). A failure changes
        nothing: the next checkpoint tries again."""
        self.checkpoint_tail_due = False
        try:
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            busy = 1
        self.stats.checkpoint_tails += 1
        self.stats.checkpoint_tail_failures += bool(busy)

    def _sync_for(self, commits: list[Commit]) -> bool:
        """Sync this batch's COMMIT unless none of its commits asks to be durable.

        A batch of only non-durable commits (heartbeats) skips the WAL's fsync: the next
        synced COMMIT syncs its frames too, so a durable commit is never behind an unsynced
        one, and a power cut loses at most such trailing frames. SQLite refuses to change
        the level inside a transaction, so it is set before BEGIN, only when it changes.
        """
        if self.durability != "full":
            return False  # never synced: nothing to count
        level = "FULL" if any(op.request.durable for op in commits) else "NORMAL"
        if level != self.synchronous:
            assert self.conn is not None
            self.conn.execute(f"PRAGMA synchronous = {level}")
            self.synchronous = level
        return level == "NORMAL"  # an unsynced batch, counted once it has begun

    @staticmethod
    def _begin_if_free(conn: sqlite3.Connection) -> bool:
        """BEGIN IMMEDIATE without the busy handler's wait (outside a hop the busy timeout
        is 0): False if the lock is held."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if primary_code(exc) == SQLITE_BUSY:
                return False
            raise
        return True

    @staticmethod
    def _conflicts(conn: sqlite3.Connection, read_ranges: list[tuple[bytes, bytes]], rv: int):
        execute = conn.execute
        for begin, end in dict.fromkeys(read_ranges):  # a key read twice is checked once
            if execute(_SQL_CONFLICT, (begin, end, rv)).fetchone() is not None:
                return True
        return False

    @staticmethod
    def _apply(conn: sqlite3.Connection, request: CommitRequest, version: int) -> bool:
        """Cleared ranges first, then the mutations (at most one per key), at `version`.
        Whether it wrote tombstones (a clear of a key that held a value)."""
        tombstones = 0
        for begin, end in request.cleared_ranges:
            tombstones += conn.execute(_SQL_CLEAR_RANGE, (version, begin, end)).rowcount
        puts: list[tuple[bytes, int, bytes]] = []
        clears: list[tuple[int, bytes]] = []
        for m in request.mutations:
            kind = m.kind
            if kind is MutationKind.SET:
                puts.append((m.key, version, m.value))
            elif kind is MutationKind.CLEAR:
                clears.append((version, m.key))
            else:  # ADD reads the value as of this commit, earlier ones in the batch included
                row = conn.execute(_SQL_GET_VALUE, (m.key,)).fetchone()
                delta = int.from_bytes(m.value, "little")
                puts.append((m.key, version, add_to_value(row[0] if row else None, delta)))
        if puts:
            conn.executemany(_SQL_PUT, puts)
        if clears:
            tombstones += conn.executemany(_SQL_CLEAR, clears).rowcount
        return tombstones > 0

    # tombstone GC ----------------------------------------------------------------------------

    def _collect(self, op: Collect) -> int:
        conn = self.conn
        assert conn is not None
        try:
            # A cheap look first: most of the time another process (or an earlier
            # run) has moved the horizon already, and we need no write lock.
            version, horizon = conn.execute(SQL_META).fetchone()
            deleted = 0
            if min(op.horizon, version) > horizon:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    version, horizon = conn.execute(SQL_META).fetchone()
                    target = min(op.horizon, version)
                    if target > horizon:
                        # Horizon first, in the same transaction: from now on
                        # no read below it can miss a deleted tombstone.
                        conn.execute(_SQL_SET_HORIZON, (target,))
                        deleted = conn.execute(_SQL_COLLECT, (target,)).rowcount
                        horizon = target
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
        except sqlite3.Error as exc:
            op.fail(map_error(exc, what="collect tombstones", path=self.path))
            return -1
        self.known_horizon = max(self.known_horizon, horizon)
        self.stats.tombstones_collected += deleted
        op.succeed(deleted)
        return version
