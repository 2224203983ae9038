"""The embedded default store: FoundationDB's transaction semantics on one SQLite file.

One file holds everything; several server processes (two nodes on one machine)
may share it. This module, sqlite_writer.py (the writer connection: commits, queued
reads, tombstone collection) and sqlite_reads.py are the only places that talk to
sqlite3; commits run on the trio thread unless storage is slow, reads on it when they
can (sqlite_reads.py):

- **One writer task, one batch at a time.** `SqliteStore.run` owns a queue: every
  commit from any transaction (and every read the trio thread could not serve at
  once) is queued, and each turn of the loop takes everything queued and executes
  it as ONE batch on one connection. A batch of only commits runs on the trio thread
  (`SqliteStore._inline_batch`): under load the same SQL cost a message 1-2 ms less CPU
  there than in a worker thread beside the busy loop (bench/RESULTS.md). The others, and
  every batch while the last inline COMMIT's fsync was slow or while another process
  holds the file's write lock, run in ONE `trio.to_thread.run_sync` call (a thread hop
  costs more CPU than a commit: stack-notes.md, section 6). Only one batch runs at a
  time, so there is effectively one writer per store. Between batches, and while none
  is in the thread, the writer's connection serves the trio thread's reads too
  (sqlite_reads.py: its page cache stays warm across its own commits).
- **Group commit.** All commits of a batch share one `BEGIN IMMEDIATE ... COMMIT`
  (one fsync). Each transaction gets its own commit version and, when the batch
  holds others, its own SAVEPOINT, so a transaction that fails rolls back only itself.
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
- **Checkpoints beside the commits.** The WAL is copied back into the file by a
  PASSIVE checkpoint on a connection of its own, in a thread of its own, every
  `checkpoint_every_commits` commits (sqlite_checkpoint.py), never inside a commit's
  COMMIT as SQLite would do by itself (unless those checkpoints fall far behind).
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
import math
import os
import sqlite3
from collections import deque
from typing import Any

import trio

from kelpie_trio.env import Env, RealEnv
from kelpie_trio.storage.base import BufferedTransaction, CommitRequest, Store
from kelpie_trio.storage.errors import StoreClosed, StoreError
from kelpie_trio.storage.limits import MAX_TRANSACTION_SECONDS
from kelpie_trio.storage.sqlite_checkpoint import WalCheckpointer
from kelpie_trio.storage.sqlite_errors import map_error
from kelpie_trio.storage.sqlite_reads import InlineReader, ReadAhead, ReadElsewhere, ReadVersion
from kelpie_trio.storage.sqlite_writer import (
    CACHE_KIB,
    Collect,
    Commit,
    Durability,
    Get,
    GetRange,
    Op,
    SqliteStats,
    SqliteWriter,
)

__all__ = ["SqliteStats", "SqliteStore", "SqliteTransaction"]

log = logging.getLogger("kelpie_trio.storage.sqlite")


# -- the queue's batches ---------------------------------------------------------


class Batch:
    """The operations the next hop will execute; all wake together when it is done."""

    __slots__ = ("done", "ops")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.done = trio.Event()


# -- transactions -------------------------------------------------------------------


class SqliteTransaction(BufferedTransaction):
    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        super().__init__(store.env)

    def _forget_read_version(self) -> None:
        self._rv = ReadVersion()
        # Reads queued ahead by `prefetch`, for this attempt only (a reset attempt gets a
        # new read version; an old read still in flight finishes unheard).
        self._prefetched: dict[bytes, tuple[Get, Batch]] = {}
        # Inline, reads said ahead wait for the next read to join its snapshot, then
        # wait to be asked for: by key, or by (begin, end) for a whole range.
        self._ahead: dict[Any, ReadAhead] = {}
        self._answered: dict[Any, ReadAhead] = {}

    def _read_version(self) -> int | None:
        return self._rv.value

    def prefetch(self, key: bytes) -> None:
        """Queue the read of `key` for the next hop now, without waiting: it joins the
        batch of this transaction's next read instead of a hop of its own after it. With
        inline reads, it joins the next read's snapshot instead (`InlineReader.get`)."""
        store = self._store
        if not store._accepting:
            return
        if store._inline is not None:
            self._read_ahead(ReadAhead(key))
            return
        if key in self._prefetched:
            return
        op = Get(self._rv, key)
        self._prefetched[key] = (op, self._store._queue(op))

    def prefetch_range(self, begin: bytes, end: bytes) -> None:
        """Inline, the range joins the next read's snapshot; the thread path has no use
        for it (its reads already share hops)."""
        if self._store._accepting and self._store._inline is not None:
            self._read_ahead(ReadAhead(begin, end))

    def _read_ahead(self, read: ReadAhead) -> None:
        if read.tag not in self._answered:
            self._ahead.setdefault(read.tag, read)

    def _take_ahead(self, tag: Any) -> list[ReadAhead]:
        """The reads said ahead, but the one about to be made."""
        ahead, self._ahead = self._ahead, {}
        ahead.pop(tag, None)
        return list(ahead.values())

    def _answer(self, ahead: list[ReadAhead]) -> None:
        for read in ahead:
            self._answered[read.tag] = read

    async def _read(self, key: bytes) -> bytes | None:
        inline = self._store._inline
        if inline is not None:
            await trio.lowlevel.checkpoint()  # a read is a checkpoint, wherever it runs
            answered = self._answered.pop(key, None)
            if answered is not None:
                return self._store._served_inline(answered.answer())
            ahead = self._take_ahead(key)
            try:
                value = inline.get(self._rv, key, ahead)
            except ReadElsewhere:
                pass  # the reads ahead are dropped: each is read when it is asked for
            else:
                self._answer(ahead)
                return self._store._served_inline(value)
        queued = self._prefetched.pop(key, None)
        if queued is None:
            return await self._store._submit(Get(self._rv, key))
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
            whole = not limit and not reverse
            answered = self._answered.pop((begin, end), None) if whole else None
            if answered is not None:
                return self._store._served_inline(answered.answer())
            ahead = self._take_ahead((begin, end) if whole else None)
            try:
                rows = inline.get_range(self._rv, begin, end, limit, reverse, ahead)
            except ReadElsewhere:
                pass
            else:
                self._answer(ahead)
                return self._store._served_inline(rows)
        return await self._store._submit(GetRange(self._rv, begin, end, limit, reverse))

    async def _commit(self, request: CommitRequest) -> None:
        await self._store._submit(Commit(request))


# -- the store ------------------------------------------------------------------------


class SqliteStore(Store):
    """A store in one SQLite file. Start `run` in a nursery before using it.

    durability="full" (the default) survives power loss; "normal" survives a
    crash of the process only, for a multiple of the commit rate (see `SqliteWriter.open`).
    Writers from other processes wait up to `busy_timeout_s` for the file's
    write lock, in the writer thread, never on the trio loop.
    """

    # Tombstone GC timing; tests may lower both. The age is twice the 5 s
    # transaction limit: a live transaction's read version is never that old.
    tombstone_gc_interval_s: float = 5.0
    tombstone_min_age_s: float = 2 * MAX_TRANSACTION_SECONDS
    # A batch of commits runs on the trio thread (`_inline_batch`) unless it writes more
    # than this many keys and ranges: a bound on how long it holds the loop (here a batch
    # of ~2,000, 150-190 messages' commits under load, took 20-35 ms in its COMMIT alone).
    inline_max_writes: int = 5_000
    # An inline COMMIT (its batch's WAL pages written, then one fsync) slower than
    # `slow_commit_s` plus `slow_commit_per_write_s` for each key and range its batch
    # wrote sends the batches after it to the writer thread for `slow_commit_hold_s`:
    # storage that slow is waited for off the loop, which runs on meanwhile. Here a
    # COMMIT under load takes ~1.5 ms plus ~15 us a write (35 ms at most, for 1,900
    # writes: bench/RESULTS.md, 2026-12-07, eleventh session).
    slow_commit_s: float = 0.02
    slow_commit_per_write_s: float = 50e-6
    slow_commit_hold_s: float = 10.0
    # Commits between two WAL checkpoints (sqlite_checkpoint.py): an agent's commit one
    # at a time logs ~20 pages, so ~4,000 pages (16 MB) each. Few and large: a
    # checkpoint's sync of the file slows the commits syncing beside it on the same disk.
    checkpoint_every_commits: int = 200
    _off_loop_until: float = -math.inf
    _writer_in_thread = False  # a batch is in the writer thread: its connection is busy

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
        self.inline_reads = inline_reads
        self._reader: InlineReader | None = None
        self.stats = SqliteStats()
        self._writer = SqliteWriter(self.path, durability, busy_timeout_s, self.stats)
        self._pending = Batch()
        self._wakeup = trio.Event()
        self._running = False
        self._closed = False
        self._run_scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None
        # (monotonic time, a version known to be current by then), oldest first.
        self._samples: deque[tuple[float, int]] = deque()
        self._latest_version = 0
        self._uncollected = trio.Event()  # set when a batch here wrote tombstones
        self._checkpointer = WalCheckpointer(
            self.path, "FULL" if durability == "full" else "NORMAL", self.stats
        )
        self._checkpoint_due = trio.Event()
        self._commits_at_checkpoint = 0  # stats.commits when the last checkpoint began

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
                version = await trio.to_thread.run_sync(self._writer.open)
                if self.inline_reads:
                    self._reader = await trio.to_thread.run_sync(
                        lambda: InlineReader.open(
                            self.path, cache_kib=CACHE_KIB, writer=self._lend_writer
                        )
                    )
                await trio.to_thread.run_sync(self._checkpointer.open)
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
                nursery.start_soon(self._checkpoint_when_due)
                # Store.run collects expired idempotency markers every minute.
                nursery.start_soon(super().run)
                task_status.started()
        finally:
            self._running = False
            self._fail_pending("the SQLite store stopped before this operation ran")
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()  # a reader's close never checkpoints: the writer's is open
            self._checkpointer.close()  # no checkpoint runs now: the nursery has ended
            if self._writer.conn is not None:
                # Closing may checkpoint the WAL (disk I/O): off the loop, and
                # finished even while we are being cancelled.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._writer.close)
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
        batch, self._pending = self._pending, Batch()
        for op in batch.ops:
            op.fail(StoreClosed(message))
        batch.done.set()

    # -- the queue ------------------------------------------------------------------------

    async def _submit(self, op: Op) -> Any:
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

    def _lend_writer(self) -> sqlite3.Connection | None:
        """The writer's connection for a read on the trio thread, unless a batch holds it
        in the writer thread (or it is not open, or not between transactions)."""
        conn = self._writer.conn
        if self._writer_in_thread or conn is None or conn.in_transaction:
            return None
        return conn

    def _served_inline(self, result: Any) -> Any:
        self.stats.reads += 1
        self.stats.inline_reads += 1
        reader = self._reader
        if reader is not None:
            self._observe(reader.latest_version)
        return result

    def _queue(self, op: Op) -> Batch:
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
            batch, self._pending = self._pending, Batch()
            if not batch.ops:  # aclose() failed them already
                continue
            try:
                version = self._inline_batch(batch.ops)
                if version is None:
                    # Shielded: once taken off the queue, a batch runs to the end
                    # (a hop cannot be interrupted anyway), so each op gets a
                    # true outcome, never a guess.
                    with trio.CancelScope(shield=True):
                        self._writer_in_thread = True
                        try:
                            version = await trio.to_thread.run_sync(
                                self._writer.execute, batch.ops, limiter=limiter
                            )
                        finally:
                            self._writer_in_thread = False
                self._observe(version)
                commits = self.stats.commits - self._commits_at_checkpoint
                if commits >= self.checkpoint_every_commits:
                    self._checkpoint_due.set()
                if self._writer.cleared_at > self._writer.known_horizon:
                    self._uncollected.set()  # the GC has something to do
            finally:
                for op in batch.ops:
                    if not op.finished:  # only if _execute itself raised: a bug, re-raised
                        op.fail(StoreError("the SQLite batch failed unexpectedly"))
                batch.done.set()

    def _inline_batch(self, ops: list[Op]) -> int | None:
        """Run a batch of only commits on the trio thread: None if it ran nothing (then
        the writer thread runs it).

        The same SQL costs less CPU here than in the writer thread: under load a message
        cost 1-2 ms less in all (bench/RESULTS.md, 2026-12-07, eleventh session), and an
        idle node's heartbeat wakes the process once instead of three times (its timer,
        the writer thread, the loop again for the result). The loop waits for the
        COMMIT's fsync meanwhile, so it goes to the thread when a recent one was slow for
        its size (`slow_commit_s`), and so does a batch that writes more than
        `inline_max_writes`, one with queued reads or a tombstone collection, and one that
        finds another process holding the file's write lock (where waiting is fine)."""
        writer = self._writer
        if self.env.monotonic() < self._off_loop_until:
            return None
        writes = 0
        for op in ops:
            if not isinstance(op, Commit):
                return None
            writes += len(op.request.mutations) + len(op.request.cleared_ranges)
        if writes > self.inline_max_writes:
            return None
        version = writer.execute_if_free(ops, self.env.monotonic)
        allowed = self.slow_commit_s + self.slow_commit_per_write_s * writes
        if version is not None and writer.last_commit_s > allowed:
            self.stats.slow_inline_commits += 1
            self._off_loop_until = self.env.monotonic() + self.slow_commit_hold_s
        return version

    async def _checkpoint_when_due(self) -> None:
        """Checkpoint the WAL in a thread of its own (one at a time) when a batch has
        taken the commits since the last one to `checkpoint_every_commits`."""
        limiter = trio.CapacityLimiter(1)  # not the writer's: commits go on meanwhile
        while True:
            await self._checkpoint_due.wait()
            self._checkpoint_due = trio.Event()
            self._commits_at_checkpoint = self.stats.commits
            try:
                # Not abandoned if cancelled: the store's close waits for it to end.
                await trio.to_thread.run_sync(self._checkpointer.checkpoint, limiter=limiter)
                self._writer.checkpoint_tail_due = True  # read by the writer's next batch
            except sqlite3.Error as exc:
                # Another process checkpointing, a full disk: the log grows until the next
                # one (or the writer's backstop); no commit waits on this one.
                self.stats.checkpoint_failures += 1
                log.warning("WAL checkpoint failed (next after %d commits): %r",
                            self.checkpoint_every_commits, exc)  # fmt: skip

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
        deleted: int = await self._submit(Collect(horizon))
        return deleted

    async def _collect_tombstones_periodically(self) -> None:
        while True:
            if self._writer.cleared_at <= self._writer.known_horizon:
                # Nothing this process cleared is left to collect (an idle node's
                # heartbeats write no tombstones): sleep until a commit clears something.
                # Another process collects its own.
                self._uncollected = trio.Event()
                await self._uncollected.wait()
            await self.env.sleep(self.tombstone_gc_interval_s)
            self._sample()
            if self._horizon_candidate() <= self._writer.known_horizon:
                continue
            try:
                await self.collect_tombstones()
            except StoreError as error:  # e.g. another process held the lock: next time
                log.warning("tombstone collection failed: %r", error)
