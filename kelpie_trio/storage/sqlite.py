"""The embedded default store: FoundationDB's transaction semantics on one SQLite file.

One file holds everything; several server processes (two nodes on one machine)
may share it. This module and sqlite_reads.py are the only places that talk to
sqlite3; writes run off the trio thread, reads on it when they can (sqlite_reads.py):

- **One writer task, one hop per batch.** A thread hop costs more CPU than a
  commit (stack-notes.md, section 6), so `SqliteStore.run` owns a queue: every
  commit from any transaction (and every read the trio thread could not serve at
  once) is queued, and each turn of the loop takes everything queued and executes
  it in ONE `trio.to_thread.run_sync` call on one connection. Only one hop runs at
  a time, so there is effectively one writer thread per store.
- **Group commit.** All commits of a batch share one `BEGIN IMMEDIATE ... COMMIT`
  (one fsync). Each transaction gets its own commit version and its own
  SAVEPOINT, so a transaction that fails rolls back only itself.
- **Optimistic, serializable, across processes.** Every row carries the version
  of the commit that last wrote it; a deleted row stays as a tombstone (value
  NULL) so its deletion is still visible to conflict checks. A transaction's
  read version is the store's commit version at its first read. Reading a row
  newer than that fails at once with NotCommitted (FDB would fail it at commit
  anyway, and this keeps every read a consistent snapshot); at commit, any row
  in a read range newer than the read version means a conflict. The commit
  version lives in the file (table `meta`) and is read and bumped under the
  write lock, so conflicts between processes are caught exactly as conflicts
  between tasks.
- **Tombstone GC.** Tombstones older than a horizon (a version that was current
  at least 10 s ago, twice the 5 s transaction limit) are deleted; the horizon
  is recorded in `meta`, and a transaction whose read version is older fails
  with TransactionTooOld (retryable), since it could no longer see a deletion.
- **Errors.** SQLite's transient failures (busy or locked past the busy timeout,
  I/O errors) surface as StorageUnavailable, retryable: the write transaction is
  rolled back, so nothing was written. A full disk (SQLITE_FULL, or an I/O error
  while the file system has next to no room left) is StorageFull, which is not
  retried: only an operator frees space, and the client should hear so at once.
  A failure inside COMMIT after SQLite dropped the transaction is
  CommitUnknownResult (WAL frames may already be on disk), except SQLITE_FULL,
  which means the commit frame was never written. Anything else (a corrupt or
  read-only file) is a plain StoreError that retrying will not cure.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections import deque
from typing import Any, Literal

import attrs
import trio

from kelpie_trio.env import Env, RealEnv
from kelpie_trio.storage.base import (
    BufferedTransaction,
    CommitRequest,
    MutationKind,
    Store,
    add_to_value,
)
from kelpie_trio.storage.errors import (
    NotCommitted,
    StoreClosed,
    StoreError,
    TransactionTooOld,
)
from kelpie_trio.storage.limits import MAX_TRANSACTION_SECONDS
from kelpie_trio.storage.sqlite_errors import (
    SQLITE_FULL,
    commit_unknown,
    fails_the_batch,
    map_error,
    primary_code,
)
from kelpie_trio.storage.sqlite_reads import (
    SQL_META,
    InlineReader,
    ReadElsewhere,
    ReadVersion,
    get_range_rows,
    get_row,
)

__all__ = ["SqliteStats", "SqliteStore", "SqliteTransaction"]

log = logging.getLogger("kelpie_trio.storage.sqlite")

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

# Each connection's page cache, KiB (the writer's and the inline reader's; see `_open`).
_CACHE_KIB = 65536


# -- queued operations ------------------------------------------------------------


class _Op:
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


class _Get(_Op):
    __slots__ = ("key", "rv")

    def __init__(self, rv: ReadVersion, key: bytes) -> None:
        super().__init__()
        self.rv = rv
        self.key = key


class _GetRange(_Op):
    __slots__ = ("begin", "end", "limit", "reverse", "rv")

    def __init__(self, rv: ReadVersion, begin: bytes, end: bytes, limit: int, reverse: bool):
        super().__init__()
        self.rv = rv
        self.begin = begin
        self.end = end
        self.limit = limit
        self.reverse = reverse


class _Commit(_Op):
    __slots__ = ("request",)

    def __init__(self, request: CommitRequest) -> None:
        super().__init__()
        self.request = request


class _Collect(_Op):
    """Move the tombstone horizon up to `horizon` (capped at the current version)."""

    __slots__ = ("horizon",)

    def __init__(self, horizon: int) -> None:
        super().__init__()
        self.horizon = horizon


class _Batch:
    """The operations the next hop will execute; all wake together when it is done."""

    __slots__ = ("done", "ops")

    def __init__(self) -> None:
        self.ops: list[_Op] = []
        self.done = trio.Event()


@attrs.define
class SqliteStats:
    """Counters for tests and benchmarks (one store, this process only).

    The writer thread updates them during a hop; read them between operations.
    """

    hops: int = 0  # thread hops, one per batch
    commits: int = 0  # transactions committed
    refused: int = 0  # commits failed alone (NotCommitted, TransactionTooOld, their own error)
    reads: int = 0  # point and range reads served
    inline_reads: int = 0  # of which on the trio thread (no hop)
    largest_batch: int = 0
    tombstones_collected: int = 0
    unsynced_batches: int = 0  # write batches of only non-durable commits: no fsync


# -- transactions -------------------------------------------------------------------


class SqliteTransaction(BufferedTransaction):
    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        super().__init__(store.env)

    def _forget_read_version(self) -> None:
        self._rv = ReadVersion()
        # Reads queued ahead by `prefetch`, for this attempt only (a reset attempt gets a
        # new read version; an old read still in flight finishes unheard).
        self._prefetched: dict[bytes, tuple[_Get, _Batch]] = {}

    def _read_version(self) -> int | None:
        return self._rv.value

    def prefetch(self, key: bytes) -> None:
        """Queue the read of `key` for the next hop now, without waiting: it joins the
        batch of this transaction's next read instead of a hop of its own after it. With
        inline reads there is no hop to share: nothing to do."""
        store = self._store
        if key in self._prefetched or not store._accepting or store._inline is not None:
            return
        op = _Get(self._rv, key)
        self._prefetched[key] = (op, self._store._queue(op))

    async def _read(self, key: bytes) -> bytes | None:
        inline = self._store._inline
        if inline is not None:
            await trio.lowlevel.checkpoint()  # a read is a checkpoint, wherever it runs
            try:
                return self._store._served_inline(inline.get(self._rv, key))
            except ReadElsewhere:
                pass
        queued = self._prefetched.pop(key, None)
        if queued is None:
            return await self._store._submit(_Get(self._rv, key))
        op, batch = queued
        await batch.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    async def _read_range(
        self, begin: bytes, end: bytes, limit: int, reverse: bool
    ) -> list[tuple[bytes, bytes]]:
        inline = self._store._inline
        if inline is not None:
            await trio.lowlevel.checkpoint()
            try:
                rows = inline.get_range(self._rv, begin, end, limit, reverse)
                return self._store._served_inline(rows)
            except ReadElsewhere:
                pass
        return await self._store._submit(_GetRange(self._rv, begin, end, limit, reverse))

    async def _commit(self, request: CommitRequest) -> None:
        await self._store._submit(_Commit(request))


# -- the store ------------------------------------------------------------------------


class SqliteStore(Store):
    """A store in one SQLite file. Start `run` in a nursery before using it.

    durability="full" (the default) survives power loss; "normal" survives a
    crash of the process only, for a multiple of the commit rate (see `_open`).
    Writers from other processes wait up to `busy_timeout_s` for the file's
    write lock, in the writer thread, never on the trio loop.
    """

    # Tombstone GC timing; tests may lower both. The age is twice the 5 s
    # transaction limit: a live transaction's read version is never that old.
    tombstone_gc_interval_s: float = 5.0
    tombstone_min_age_s: float = 2 * MAX_TRANSACTION_SECONDS

    def __init__(
        self,
        path: str | os.PathLike[str],
        env: Env | None = None,
        *,
        durability: Durability = "full",
        busy_timeout_s: float = 10.0,
        inline_reads: bool = True,
    ) -> None:
        if durability not in ("full", "normal"):
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        self.env = env or RealEnv()
        self.path = os.fspath(path)
        self.durability = durability
        self.busy_timeout_s = busy_timeout_s
        self.inline_reads = inline_reads
        self._reader: InlineReader | None = None
        self.stats = SqliteStats()
        self._conn: sqlite3.Connection | None = None
        self._synchronous = ""  # the writer connection's level, once open
        self._pending = _Batch()
        self._wakeup = trio.Event()
        self._running = False
        self._closed = False
        self._run_scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None
        # (monotonic time, a version known to be current by then), oldest first.
        self._samples: deque[tuple[float, int]] = deque()
        self._known_horizon = 0
        self._latest_version = 0
        # The version of this process's last commit that wrote tombstones (set in the
        # writer thread): the GC looks at the file only while some may be uncollected.
        self._cleared_at = 0
        self._uncollected = trio.Event()  # set when a batch here wrote tombstones

    def create_transaction(self) -> SqliteTransaction:
        return SqliteTransaction(self)

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Open the file, then serve batches until cancelled or closed."""
        if self._closed:
            raise StoreClosed("the SQLite store is closed")
        if self._stopped is not None:
            raise RuntimeError("SqliteStore.run is already running (or has run)")
        self._stopped = trio.Event()
        try:
            try:
                self._conn, version = await trio.to_thread.run_sync(self._open)
                if self.inline_reads:
                    self._reader = await trio.to_thread.run_sync(
                        lambda: InlineReader.open(self.path, cache_kib=_CACHE_KIB)
                    )
            except sqlite3.Error as exc:
                raise map_error(exc, what=f"open {self.path}", path=self.path) from exc
            self._observe(version)
            self._sample()
            limiter = trio.CapacityLimiter(1)  # our own: other to_thread users cannot starve us
            async with trio.open_nursery() as nursery:
                self._run_scope = nursery.cancel_scope
                self._running = True
                nursery.start_soon(self._serve_batches, limiter)
                nursery.start_soon(self._collect_tombstones_periodically)
                # Store.run collects expired idempotency markers every minute.
                nursery.start_soon(super().run)
                task_status.started()
        finally:
            self._running = False
            self._fail_pending("the SQLite store stopped before this operation ran")
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()  # a reader's close never checkpoints: the writer's is open
            conn, self._conn = self._conn, None
            if conn is not None:
                # Closing may checkpoint the WAL (disk I/O): off the loop, and
                # finished even while we are being cancelled.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(conn.close)
            self._stopped.set()

    async def aclose(self) -> None:
        """Stop `run` (the batch in flight completes), close the file; later calls raise."""
        self._closed = True
        # Cancel first: our own tasks waiting on the queue (the marker GC) then
        # end with Cancelled rather than crash `run` with StoreClosed.
        if self._run_scope is not None:
            self._run_scope.cancel()
        self._fail_pending("the SQLite store is closed")
        if self._stopped is not None:
            await self._stopped.wait()

    def _fail_pending(self, message: str) -> None:
        """Fail every queued operation with StoreClosed (each its own instance)."""
        batch, self._pending = self._pending, _Batch()
        for op in batch.ops:
            op.fail(StoreClosed(message))
        batch.done.set()

    # -- the queue ------------------------------------------------------------------------

    async def _submit(self, op: _Op) -> Any:
        """Queue `op` for the next hop and wait for its outcome.

        If the caller is cancelled, the operation still runs with its batch (a
        commit may land); only its outcome is dropped.
        """
        if self._closed:
            raise StoreClosed("the SQLite store is closed")
        if not self._running:
            raise StoreClosed(
                "the SQLite store is not running: start it with `await nursery.start(store.run)`"
            )
        batch = self._queue(op)
        await batch.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    @property
    def _accepting(self) -> bool:
        return self._running and not self._closed

    @property
    def _inline(self) -> InlineReader | None:
        """The trio thread's reader, while the store serves."""
        return self._reader if self._running and not self._closed else None

    def _served_inline(self, result: Any) -> Any:
        self.stats.reads += 1
        self.stats.inline_reads += 1
        reader = self._reader
        if reader is not None:
            self._observe(reader.latest_version)
        return result

    def _queue(self, op: _Op) -> _Batch:
        """Put `op` in the next hop's batch (the caller waits on the batch)."""
        batch = self._pending
        batch.ops.append(op)
        self._wakeup.set()
        return batch

    async def _serve_batches(self, limiter: trio.CapacityLimiter) -> None:
        while True:
            await self._wakeup.wait()
            # One more turn of the scheduler lets every task that is already
            # runnable queue its operation too: bigger batches, fewer hops.
            await trio.lowlevel.checkpoint()
            self._wakeup = trio.Event()
            batch, self._pending = self._pending, _Batch()
            if not batch.ops:  # aclose() failed them already
                continue
            try:
                # Shielded: once taken off the queue, a batch runs to the end
                # (a hop cannot be interrupted anyway), so each op gets a
                # true outcome, never a guess.
                with trio.CancelScope(shield=True):
                    version = await trio.to_thread.run_sync(
                        self._execute, batch.ops, limiter=limiter
                    )
                self._observe(version)
                if self._cleared_at > self._known_horizon:
                    self._uncollected.set()  # the GC has something to do
            finally:
                for op in batch.ops:
                    if not op.finished:  # only if _execute itself raised: a bug, re-raised
                        op.fail(StoreError("the SQLite batch failed unexpectedly"))
                batch.done.set()

    # -- tombstone GC ---------------------------------------------------------------------

    def _observe(self, version: int) -> None:
        """Remember the newest version a hop saw (it was current no later than now)."""
        self._latest_version = max(self._latest_version, version)

    def _sample(self) -> None:
        """Note that the newest version seen was current by now (for the GC horizon).

        Sampled at each GC tick rather than after each hop: cheap, a few samples
        per horizon age, and a burst of commits is sampled even if the store
        then goes idle.
        """
        if not self._samples or self._samples[-1][1] < self._latest_version:
            self._samples.append((self.env.monotonic(), self._latest_version))

    def _horizon_candidate(self) -> int:
        """The newest version known to have been current `tombstone_min_age_s` ago (or 0)."""
        cutoff = self.env.monotonic() - self.tombstone_min_age_s
        samples = self._samples
        while len(samples) >= 2 and samples[1][0] <= cutoff:
            samples.popleft()
        if samples and samples[0][0] <= cutoff:
            return samples[0][1]
        return 0

    async def collect_tombstones(self, *, horizon: int | None = None) -> int:
        """Delete tombstones up to a horizon version; returns how many were deleted.

        By default the horizon is a version that was current at least 10 s ago:
        no transaction can still be reading below it (they live 5 s). Passing
        `horizon` (tests) forces it; it is capped at the current version. Any
        transaction, in any process, with an older read version then fails with
        TransactionTooOld.
        """
        if horizon is None:
            horizon = self._horizon_candidate()
        deleted: int = await self._submit(_Collect(horizon))
        return deleted

    async def _collect_tombstones_periodically(self) -> None:
        while True:
            if self._cleared_at <= self._known_horizon:
                # Nothing this process cleared is left to collect (an idle node's
                # heartbeats write no tombstones): sleep until a commit clears something.
                # Another process collects its own.
                self._uncollected = trio.Event()
                await self._uncollected.wait()
            await self.env.sleep(self.tombstone_gc_interval_s)
            self._sample()
            if self._horizon_candidate() <= self._known_horizon:
                continue
            try:
                await self.collect_tombstones()
            except StoreError as error:  # e.g. another process held the lock: next time
                log.warning("tombstone collection failed: %r", error)

    # -- the writer thread: everything below runs in `trio.to_thread` -----------------------

    def _open(self) -> tuple[sqlite3.Connection, int]:
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
            self._synchronous = synchronous
            # Truncate the WAL after checkpoints that found it bigger than this.
            conn.execute("PRAGMA journal_size_limit = 67108864")
            # A 64 MiB page cache (SQLite's default is 2 MiB): with 20,000 agents stored (a
            # 113 MB file) the default one re-read B-tree pages from the OS on every
            # transaction; this took agent activation p99 from ~66 to ~20-26 ms in the
            # bench (bench/RESULTS.md). It is an upper bound, filled only as pages are read.
            conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
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
        except BaseException:
            conn.close()
            raise
        return conn, version

    def _execute(self, ops: list[_Op]) -> int:
        """Run one batch; set every op's outcome. Returns the newest version seen (or -1)."""
        self.stats.hops += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(ops))
        commits: list[_Commit] = []
        reads: list[_Op] = []
        collects: list[_Collect] = []
        for op in ops:
            if isinstance(op, _Commit):
                commits.append(op)
            elif isinstance(op, _Collect):
                collects.append(op)
            else:
                reads.append(op)
        version = -1
        # Commits first: reads queued beside them then see the freshest state.
        if commits:
            version = self._write_phase(commits)
        if reads:
            version = max(version, self._read_phase(reads))
        for op in collects:
            version = max(version, self._collect(op))
        return version

    def _rollback(self) -> None:
        conn = self._conn
        assert conn is not None
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    # reads -------------------------------------------------------------------------------

    def _read_phase(self, reads: list[_Op]) -> int:
        """Serve every read of the batch from one snapshot (one SQLite read transaction)."""
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN")
            version, horizon = conn.execute(SQL_META).fetchone()
            for op in reads:
                try:
                    if isinstance(op, _Get):
                        op.succeed(get_row(conn, op.rv, op.key, version, horizon))
                    else:
                        assert isinstance(op, _GetRange)
                        rows = get_range_rows(
                            conn, op.rv, op.begin, op.end, op.limit, op.reverse, version, horizon
                        )
                        op.succeed(rows)
                except StoreError as error:  # this transaction's conflict, not the batch's
                    op.fail(error)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # Reads already served came from a consistent snapshot: they stand.
            self._rollback()
            for op in reads:
                if not op.finished:
                    op.fail(map_error(exc, what="read", path=self.path))
            return -1
        self.stats.reads += len(reads)
        return version

    # commits -------------------------------------------------------------------------------

    def _write_phase(self, commits: list[_Commit]) -> int:
        """Check and apply every commit of the batch in one write transaction (group commit)."""
        conn = self._conn
        assert conn is not None
        try:
            self._sync_for(commits)
            # IMMEDIATE takes the file's write lock now; a writer in another
            # process makes us wait here, up to the busy timeout.
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for op in commits:
                op.fail(map_error(exc, what="begin a write transaction", path=self.path))
            return -1
        applied: list[_Commit] = []
        try:
            # Read under the write lock: versions are serial across processes.
            version, horizon = conn.execute(SQL_META).fetchone()
            cleared = 0  # the version of the last commit here that wrote tombstones
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
                conn.execute("SAVEPOINT kelpie_txn")
                try:
                    if self._apply(conn, request, version + 1):
                        cleared = version + 1
                except Exception as exc:
                    if fails_the_batch(exc) or not conn.in_transaction:
                        raise
                    conn.execute("ROLLBACK TO kelpie_txn")
                    conn.execute("RELEASE kelpie_txn")
                    op.fail(exc)
                    continue
                conn.execute("RELEASE kelpie_txn")
                version += 1
                applied.append(op)
            if applied:
                conn.execute(_SQL_SET_VERSION, (version,))
        except sqlite3.Error as exc:
            # Before COMMIT: nothing of this batch is in the file.
            self._rollback()
            for op in commits:
                if not op.finished:
                    op.fail(map_error(exc, what="commit", path=self.path))
            return -1
        except BaseException:
            self._rollback()
            raise
        # Before COMMIT, whatever its outcome: a needless collection costs one look.
        self._cleared_at = max(self._cleared_at, cleared)
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
        for op in applied:
            op.succeed(None)
        self.stats.commits += len(applied)
        self.stats.refused += len(commits) - len(applied)
        return version

    def _sync_for(self, commits: list[_Commit]) -> None:
        """Sync this batch's COMMIT unless none of its commits asks to be durable.

        A batch of only non-durable commits (heartbeats) skips the WAL's fsync: the next
        synced COMMIT syncs its frames too, so a durable commit is never behind an unsynced
        one, and a power cut loses at most such trailing frames. SQLite refuses to change
        the level inside a transaction, so it is set before BEGIN, only when it changes.
        """
        if self.durability != "full":
            return
        level = "FULL" if any(op.request.durable for op in commits) else "NORMAL"
        if level != self._synchronous:
            assert self._conn is not None
            self._conn.execute(f"PRAGMA synchronous = {level}")
            self._synchronous = level
        if level == "NORMAL":
            self.stats.unsynced_batches += 1

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

    def _collect(self, op: _Collect) -> int:
        conn = self._conn
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
        self._known_horizon = max(self._known_horizon, horizon)
        self.stats.tombstones_collected += deleted
        op.succeed(deleted)
        return version
