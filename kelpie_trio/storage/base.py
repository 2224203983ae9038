"""The store interface: ordered key-value transactions with FoundationDB's semantics.

A transaction reads a consistent snapshot, buffers its writes, and commits
atomically; two transactions that conflict (one wrote what the other read)
cannot both commit: the loser fails with `NotCommitted` and `Store.transact`
runs it again. Keys and values are bytes; keys are normally made with
`kelpie_trio.storage.keys` (fdb tuple encoding).

Three layers live here:

- `Transaction`, the interface every backend's transactions implement;
- `BufferedTransaction`, the shared machinery for backends that are not FDB
  (memory, SQLite, the simulator): the write buffer, read-your-writes, conflict
  ranges, FDB's size and age limits; a backend only supplies raw reads at its
  read version and an atomic commit of a `CommitRequest`;
- `Store.transact`, the retry loop (like `@fdb.transactional`), which also makes
  `CommitUnknownResult` safe: every write transaction writes an idempotency
  marker (unless its writes are idempotent), and a retry after an unknown result
  first looks for it.
"""

from __future__ import annotations

import abc
import collections
import enum
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import trio
from sortedcontainers import SortedDict

from kelpie_trio.env import Env
from kelpie_trio.storage import keys
from kelpie_trio.storage.errors import (
    CommitTimedOut,
    CommitUnknownResult,
    RetryLimitReached,
    StoreError,
    TransactionTimedOut,
    TransactionTooOld,
)
from kelpie_trio.storage.limits import (
    MAX_TRANSACTION_SECONDS,
    check_key,
    check_range,
    check_transaction_size,
    check_value,
)

__all__ = [
    "BufferedTransaction",
    "CommitRequest",
    "Mutation",
    "MutationKind",
    "Store",
    "Transaction",
    "add_to_value",
    "decode_counter",
    "key_after",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

_ADD_WIDTH = 8  # atomic add works on 8-byte little-endian integers, as FDB's ADD does
_MARKER_BUCKET_SECONDS = 60.0
_MARKER_KEEP_BUCKETS = 10  # markers live >= 9 minutes: far beyond any retry loop


def key_after(key: bytes) -> bytes:
    """The first key after `key`: `[key, key_after(key))` holds exactly `key`."""
    return key + b"\x00"


def add_to_value(existing: bytes | None, delta: int) -> bytes:
    """FDB's ADD on an 8-byte operand: little-endian, missing bytes are zero, wraps."""
    current = int.from_bytes((existing or b"")[:_ADD_WIDTH].ljust(_ADD_WIDTH, b"\0"), "little")
    return ((current + delta) % (1 << 64)).to_bytes(_ADD_WIDTH, "little")


def decode_counter(value: bytes | None) -> int:
    """Read a value written by `Transaction.add` as a signed integer (None -> 0)."""
    if value is None:
        return 0
    return struct.unpack("<q", value[:_ADD_WIDTH].ljust(_ADD_WIDTH, b"\0"))[0]


class Transaction(abc.ABC):
    """One transaction. Reads are awaited; writes are buffered until commit."""

    # Reads that went to the backend (each a round trip: on SQLite, a queued hop to its
    # thread), over all attempts; `Store.transact` adds them to the store's counts.
    reads: int = 0
    # False: the commit must survive a crash of the process but not a power cut of the
    # machine (`Store.transact(durable=False)`); a backend may then skip its sync.
    durable: bool = True

    @abc.abstractmethod
    async def get(self, key: bytes) -> bytes | None: ...

    @abc.abstractmethod
    async def get_range(
        self, begin: bytes, end: bytes, *, limit: int = 0, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """Key-value pairs with begin <= key < end, in key order (or reversed); limit 0 = all."""

    def prefetch(self, key: bytes) -> None:  # noqa: B027 - a hint; most backends ignore it
        """A hint: `key` will be read by this attempt. A backend whose reads are round trips
        may start the read now, so that it shares the trip of the next read instead of
        taking one of its own after it; a later `get(key)` takes its answer. The read
        itself (its snapshot, its conflict range) is the `get`'s, as without the hint."""

    def prefetch_range(self, begin: bytes, end: bytes) -> None:  # noqa: B027 - a hint too
        """A hint: this attempt will read all of [begin, end) (`get_range` without a limit,
        forward), as `prefetch` says of a key."""

    def prefetch_prefix(self, prefix: bytes) -> None:
        """A hint: `get_prefix(prefix)` (without a limit, forward) follows."""
        self.prefetch_range(*keys.prefix_range(prefix))

    @abc.abstractmethod
    def set(self, key: bytes, value: bytes) -> None: ...

    @abc.abstractmethod
    def clear(self, key: bytes) -> None: ...

    @abc.abstractmethod
    def clear_range(self, begin: bytes, end: bytes) -> None: ...

    @abc.abstractmethod
    def add(self, key: bytes, delta: int) -> None:
        """Atomic add of a signed integer, without a read conflict (FDB's ADD)."""

    @abc.abstractmethod
    def add_read_conflict_key(self, key: bytes) -> None:
        """Conflict with any commit that writes `key` after this transaction's read version,
        without reading it (FDB's add_read_conflict_key)."""

    @property
    @abc.abstractmethod
    def has_writes(self) -> bool: ...

    def notify_on_commit(self, topic: str) -> None:
        """Have `Store.transact` call this store's listeners of `topic` once this transaction
        commits (a new search outbox entry wakes this node's indexer). A hint, not a
        delivery: a listener may be called for a commit whose outcome was unknown, and
        other processes' commits call nobody here, so listeners keep a slow poll too."""
        topics: set[str] | None = getattr(self, "_commit_topics", None)
        if topics is None:
            self._commit_topics = topics = set()
        topics.add(topic)

    @abc.abstractmethod
    async def commit(self) -> None: ...

    @abc.abstractmethod
    async def on_error(self, error: StoreError) -> None:
        """Raise `error` if it may not be retried; else back off and reset for the next attempt."""

    async def get_prefix(
        self, prefix: bytes, *, limit: int = 0, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """Every pair whose key starts with the tuple-packed `prefix`."""
        begin, end = keys.prefix_range(prefix)
        return await self.get_range(begin, end, limit=limit, reverse=reverse)


class Store(abc.ABC):
    """A transactional key-value store. Use `transact`; it retries for you."""

    env: Env
    max_attempts: int = 100

    @property
    def counts(self) -> collections.Counter[str]:
        """What this store's transactions met, for /metrics: `commit`, a writing transaction
        committed; `read_only`, a transaction that wrote nothing finished; `reads`, reads
        that went to the backend (round trips); and, for each retry, the error that caused
        it (`NotCommitted`: a conflict, `StorageUnavailable`, ...). A few increments per
        transaction, no lock, no label lookup per read."""
        found = self.__dict__.get("_counts")
        if found is None:
            found = self.__dict__["_counts"] = collections.Counter()
        return found

    def on_commit(self, topic: str, listener: Callable[[], None]) -> None:
        """Call `listener` (synchronously: keep it to setting an event) after each commit
        through this store whose transaction asked for `topic` (`notify_on_commit`)."""
        listeners: dict[str, list[Callable[[], None]]] | None = getattr(
            self, "_commit_listeners", None
        )
        if listeners is None:
            self._commit_listeners = listeners = {}
        listeners.setdefault(topic, []).append(listener)

    def _notify(self, tr: Transaction) -> None:
        topics = getattr(tr, "_commit_topics", None)
        listeners = getattr(self, "_commit_listeners", None)
        if topics and listeners:
            for topic in topics:
                for listener in listeners.get(topic, ()):
                    listener()

    @abc.abstractmethod
    def create_transaction(self) -> Transaction: ...

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The store's own background work, as a child of the node's nursery.

        Backends that need a task (SQLite's writer) override this; every store
        collects expired idempotency markers here: once the oldest bucket this process
        wrote a marker in is past the keep window, and then each minute while it writes
        more. A node that writes none (an idle one: its heartbeat is idempotent) sleeps
        until it does. Markers another process left are cleared by the next collection
        of any process (each clears every bucket past the window).
        """
        task_status.started()
        while True:
            oldest = self.__dict__.get("_oldest_marker_bucket")
            if oldest is None:
                wake = self.__dict__["_marker_written"] = trio.Event()
                await wake.wait()
                continue
            past_window = (oldest + _MARKER_KEEP_BUCKETS + 1) * _MARKER_BUCKET_SECONDS
            await trio.sleep(max(_MARKER_BUCKET_SECONDS, past_window - self.env.now()))
            try:
                horizon = await self.collect_garbage()
            except StoreError as error:
                # Old markers only cost space; an outage must not take the node down.
                log.warning("idempotency marker collection failed, retrying later: %r", error)
                continue
            newest = self.__dict__.get("_newest_marker_bucket")
            # Buckets below the horizon are gone; the horizon's own bucket may still
            # hold some of ours, so it is the oldest left (None: none left).
            self.__dict__["_oldest_marker_bucket"] = (
                None if newest is None or newest < horizon else horizon
            )

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release the backend's resources."""

    async def transact(
        self,
        fn: Callable[[Transaction], Awaitable[T]],
        *,
        max_attempts: int | None = None,
        idempotent: bool = False,
        durable: bool = True,
    ) -> T:
        """Run `fn(tr)` in a transaction and commit, retrying retryable failures.

        `fn` may run several times, so it must not have effects outside the
        transaction. A commit whose result is unknown is never applied twice:
        each attempt that writes also writes a marker naming itself, and the
        attempt after an unknown result reads that marker first; the marker's
        read conflict stops the retry from committing beside a late landing of
        the earlier attempt.

        `idempotent`: applying `fn`'s writes twice leaves what applying them once does (a
        record rewritten whole with a value decided before the transaction, a range
        cleared), so an attempt after an unknown result simply runs again, and no marker
        is written: a node's periodic writes (its heartbeat) then cost one key each and
        leave no marker to collect.

        `durable=False`: the commit must survive a crash of the process, not a power cut
        of the machine, so a backend may skip its sync (SQLite's fsync of the WAL; a later
        synced commit syncs it too). Only for writes whose loss with the whole machine
        harms nobody: a node's heartbeat renewal, which every process that could read it
        loses with it.

        Only a commit has an unknown result: the same error from a read or from `fn`
        is an ordinary failure. A `transact` cancelled while it commits leaves the
        outcome unknown on every backend (the commit may be applied, or on its way):
        a caller that cancels must read back before assuming either.
        """
        tr = self.create_transaction()
        tr.durable = durable
        try:
            return await self._attempts(fn, tr, max_attempts or self.max_attempts, idempotent)
        finally:
            self.counts["reads"] += tr.reads

    async def _attempts(
        self,
        fn: Callable[[Transaction], Awaitable[T]],
        tr: Transaction,
        limit: int,
        idempotent: bool,
    ) -> T:
        marker: bytes | None = None  # made at the first write: read-only work needs none
        unknown_results: dict[int, T] = {}  # attempt number -> its result, commit unknown
        for attempt in range(1, limit + 1):
            result: T | None = None
            committing = False
            try:
                if marker is not None and unknown_results:
                    landed = await tr.get(marker)
                    if landed is not None:
                        self._notify(tr)  # it landed after all
                        return unknown_results[int(landed)]
                result = await fn(tr)
                if tr.has_writes:
                    if not idempotent:
                        marker = marker or self._new_marker()
                        # The read conflict makes a late landing of this attempt fail
                        # once a later attempt has written the marker.
                        tr.add_read_conflict_key(marker)
                        tr.set(marker, str(attempt).encode())
                    committing = True
                    await tr.commit()
                    self.counts["commit"] += 1
                    self._notify(tr)
                else:
                    self.counts["read_only"] += 1
                return result
            except StoreError as error:
                if committing and isinstance(error, CommitUnknownResult):
                    unknown_results[attempt] = result  # type: ignore[assignment]
                if attempt < limit and error.retryable:
                    self.counts[type(error).__name__] += 1  # retried (if on_error allows)
                if attempt == limit:
                    if error.retryable:
                        raise RetryLimitReached(
                            f"gave up after {limit} attempts; last error: {error!r}"
                        ) from error
                    raise
                try:
                    await tr.on_error(error)
                except TransactionTimedOut as timed_out:
                    if unknown_results and not isinstance(timed_out, CommitTimedOut):
                        # An earlier attempt's commit may still have landed.
                        raise CommitTimedOut(
                            f"{timed_out}; an earlier attempt's commit had an unknown "
                            "outcome: it may or may not have landed"
                        ) from timed_out
                    raise
        raise AssertionError("unreachable")

    def _new_marker(self) -> bytes:
        bucket = int(self.env.now() // _MARKER_BUCKET_SECONDS)
        state = self.__dict__
        state["_newest_marker_bucket"] = bucket
        if state.get("_oldest_marker_bucket") is None:
            state["_oldest_marker_bucket"] = bucket
            wake = state.get("_marker_written")
            if wake is not None:
                wake.set()  # the collector sleeps until there is something to collect
        return keys.TXN_MARKERS.pack((bucket, self.env.new_uuid().bytes))

    async def collect_garbage(self) -> int:
        """Clear idempotency markers old enough that no retry loop still needs them;
        returns the horizon: every bucket below it is clear."""
        horizon = int(self.env.now() // _MARKER_BUCKET_SECONDS) - _MARKER_KEEP_BUCKETS
        if horizon <= 0:
            return horizon
        begin = keys.TXN_MARKERS.range().start
        end = keys.TXN_MARKERS.pack((horizon,))

        async def clear(tr: Transaction) -> None:
            tr.clear_range(begin, end)

        # Clearing twice clears the same: no marker of its own, so a collection leaves
        # nothing for the next one.
        await self.transact(clear, idempotent=True)
        return horizon


class MutationKind(enum.Enum):
    SET = "set"
    CLEAR = "clear"
    ADD = "add"


@attrs.frozen
class Mutation:
    kind: MutationKind
    key: bytes
    value: bytes = b""  # SET: the value; ADD: the 8-byte little-endian delta


@attrs.frozen
class CommitRequest:
    """Everything a backend needs to check and apply one transaction atomically.

    Apply `cleared_ranges` first, then `mutations` (at most one per key): the
    write buffer has already folded every later write over earlier ones.
    Conflict: if any key in `read_ranges` was written by a commit after
    `read_version`, the transaction must fail with NotCommitted. With
    `read_version` None nothing was read, and `read_ranges` holds only
    explicit conflict keys: read as of the commit itself, they cannot conflict
    unless the commit lands later than it was submitted (the simulator's
    late-landing unknown results fix a read version for that case).
    """

    read_version: int | None  # None: the transaction read nothing
    read_ranges: list[tuple[bytes, bytes]]
    cleared_ranges: list[tuple[bytes, bytes]]
    mutations: list[Mutation]
    durable: bool = True  # False: see `Transaction.durable`

    def write_ranges(self) -> list[tuple[bytes, bytes]]:
        return [*self.cleared_ranges, *((m.key, key_after(m.key)) for m in self.mutations)]

    def size(self) -> int:
        """The bytes FoundationDB counts against its 10 MB limit for this commit.

        FDB's client (NativeAPI `Transaction::getSize`, fed by the read-your-writes
        layer at commit) counts every mutation's parameters *plus* the read and the
        write conflict ranges, each range as len(begin) + len(end) after coalescing
        ranges that touch. So a `set` costs len(key) + len(value) and a write conflict
        of 2 * len(key) + 1; a single-key clear is the range [key, key + \\x00) twice:
        about 4 * len(key). Counting only keys and values lets through transactions of
        many small writes that FDB refuses with 2101 transaction_too_large.
        """
        size = _ranges_bytes(_coalesced(self.cleared_ranges))  # the clear-range mutations
        for mutation in self.mutations:
            if mutation.kind is MutationKind.CLEAR:
                size += 2 * len(mutation.key) + 1  # a clear of [key, key + \x00)
            else:
                size += len(mutation.key) + len(mutation.value)
        size += _ranges_bytes(_coalesced(self.write_ranges()))
        return size + _ranges_bytes(_coalesced(self.read_ranges))


def _coalesced(ranges: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The union of `ranges` as disjoint ranges, touching ones merged (as FDB's RYW map)."""
    merged: list[tuple[bytes, bytes]] = []
    for begin, end in sorted(ranges):
        if merged and begin <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((begin, end))
    return merged


def _ranges_bytes(ranges: list[tuple[bytes, bytes]]) -> int:
    return sum(len(begin) + len(end) for begin, end in ranges)


class _Pending:
    """A buffered atomic add on a key whose stored value this transaction has not seen."""

    __slots__ = ("delta",)

    def __init__(self, delta: int) -> None:
        self.delta = delta


_Buffered = bytes | None | _Pending  # a key's state in the write buffer


class BufferedTransaction(Transaction):
    """Write buffer, read-your-writes, conflict ranges and limits, for non-FDB backends.

    Subclasses implement `_read`, `_read_range` (raw reads at the backend's
    read version, chosen at the first read) and `_commit`.
    """

    def __init__(self, env: Env) -> None:
        self._env = env
        self._attempt = 0
        self._reset()

    def _reset(self) -> None:
        self._started = self._env.monotonic()
        self._writes: SortedDict = SortedDict()  # key -> _Buffered
        self._cleared: list[tuple[bytes, bytes]] = []
        self._read_ranges: list[tuple[bytes, bytes]] = []
        self._committed = False
        self._forget_read_version()

    # -- the backend's part --------------------------------------------------

    @abc.abstractmethod
    async def _read(self, key: bytes) -> bytes | None: ...

    @abc.abstractmethod
    async def _read_range(
        self, begin: bytes, end: bytes, limit: int, reverse: bool
    ) -> list[tuple[bytes, bytes]]: ...

    @abc.abstractmethod
    async def _commit(self, request: CommitRequest) -> None: ...

    @abc.abstractmethod
    def _read_version(self) -> int | None:
        """The version reads were served at, or None if nothing was read."""

    @abc.abstractmethod
    def _forget_read_version(self) -> None:
        """Start afresh: the next read picks a new read version."""

    # -- reads ---------------------------------------------------------------

    def _check_age(self) -> None:
        if self._env.monotonic() - self._started > MAX_TRANSACTION_SECONDS:
            raise TransactionTooOld(
                f"transaction is older than {MAX_TRANSACTION_SECONDS:g} s; "
                "it is retried from the start"
            )

    def _is_cleared(self, key: bytes) -> bool:
        return any(b <= key < e for b, e in self._cleared)

    async def get(self, key: bytes) -> bytes | None:
        check_key(key)
        self._check_age()
        state = self._writes.get(key, _MISSING)
        if state is _MISSING:
            if self._is_cleared(key):
                return None
            self.reads += 1
            value = await self._read(key)
            self._add_read_range(key, key_after(key))
            return value
        if isinstance(state, _Pending):
            self.reads += 1
            value = await self._read(key)
            self._add_read_range(key, key_after(key))
            return add_to_value(value, state.delta)
        return state

    async def get_range(
        self, begin: bytes, end: bytes, *, limit: int = 0, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        check_range(begin, end, limit)
        self._check_age()
        results: list[tuple[bytes, bytes]] = []
        for sub_begin, sub_end, cleared in self._segments(begin, end, reverse):
            need = limit - len(results) if limit else 0
            local = list(
                self._writes.irange(sub_begin, sub_end, inclusive=(True, False), reverse=reverse)
            )
            stored: list[tuple[bytes, bytes]] = []
            if not cleared:
                # Local clears may hide up to len(local) stored pairs: ask for that many more.
                ask = need + len(local) if limit else 0
                self.reads += 1
                stored = await self._read_range(sub_begin, sub_end, ask, reverse)
                if ask and len(stored) == ask:
                    last = stored[-1][0]
                    scanned = (last, sub_end) if reverse else (sub_begin, key_after(last))
                    local = [k for k in local if (k >= last if reverse else k <= last)]
                else:
                    scanned = (sub_begin, sub_end)
                self._add_read_range(*scanned)
            results.extend(self._merge(stored, local, reverse))
            if limit and len(results) >= limit:
                return results[:limit]
        return results

    def _segments(self, begin: bytes, end: bytes, reverse: bool) -> list[tuple[bytes, bytes, bool]]:
        """[begin, end) cut into (begin, end, cleared) pieces by this transaction's clear_ranges.

        A cleared piece reads nothing from storage, only writes made after the clear.
        """
        parts: list[tuple[bytes, bytes, bool]] = []
        cursor = begin
        for b, e in sorted(self._cleared):
            if e <= cursor or b >= end:
                continue
            if b > cursor:
                parts.append((cursor, b, False))
            parts.append((max(cursor, b), min(e, end), True))
            cursor = max(cursor, e)
            if cursor >= end:
                break
        if cursor < end:
            parts.append((cursor, end, False))
        return parts[::-1] if reverse else parts

    def _merge(
        self, stored: list[tuple[bytes, bytes]], local: list[bytes], reverse: bool
    ) -> list[tuple[bytes, bytes]]:
        merged: dict[bytes, bytes | None] = dict(stored)
        for key in local:
            state = self._writes[key]
            if isinstance(state, _Pending):
                merged[key] = add_to_value(merged.get(key), state.delta)
            else:
                merged[key] = state
        return [(k, v) for k, v in sorted(merged.items(), reverse=reverse) if v is not None]

    def add_read_conflict_key(self, key: bytes) -> None:
        check_key(key)
        self._add_read_range(key, key_after(key))

    def _add_read_range(self, begin: bytes, end: bytes) -> None:
        if begin < end:
            self._read_ranges.append((begin, end))

    # -- writes --------------------------------------------------------------

    def set(self, key: bytes, value: bytes) -> None:
        check_key(key)
        check_value(value)
        self._writes[key] = value

    def clear(self, key: bytes) -> None:
        check_key(key)
        self._writes[key] = None

    def clear_range(self, begin: bytes, end: bytes) -> None:
        check_key(begin)
        check_key(end)
        if begin >= end:
            return
        for key in list(self._writes.irange(begin, end, inclusive=(True, False))):
            del self._writes[key]
        self._cleared.append((begin, end))

    def add(self, key: bytes, delta: int) -> None:
        check_key(key)
        state = self._writes.get(key, _MISSING)
        if state is _MISSING:
            if self._is_cleared(key):
                self._writes[key] = add_to_value(None, delta)
            else:
                self._writes[key] = _Pending(delta)
        elif isinstance(state, _Pending):
            state.delta += delta
        else:
            self._writes[key] = add_to_value(state, delta)

    @property
    def has_writes(self) -> bool:
        return bool(self._writes or self._cleared)

    # -- commit --------------------------------------------------------------

    def _commit_request(self) -> CommitRequest:
        mutations = []
        for key, state in self._writes.items():
            if isinstance(state, _Pending):
                delta = (state.delta % (1 << 64)).to_bytes(_ADD_WIDTH, "little")
                mutations.append(Mutation(MutationKind.ADD, key, delta))
            elif state is None:
                mutations.append(Mutation(MutationKind.CLEAR, key))
            else:
                mutations.append(Mutation(MutationKind.SET, key, state))
        return CommitRequest(
            read_version=self._read_version(),
            read_ranges=list(self._read_ranges),
            cleared_ranges=list(self._cleared),
            mutations=mutations,
            durable=self.durable,
        )

    async def commit(self) -> None:
        if self._committed:
            raise RuntimeError("transaction already committed")
        self._check_age()
        if not self.has_writes:
            # Read-only: nothing reaches the cluster, and FDB checks no size.
            self._committed = True
            return
        request = self._commit_request()
        # Counted as FDB counts it, so no backend takes what FDB would refuse.
        check_transaction_size(request.size())
        self._committed = True
        await self._commit(request)

    async def on_error(self, error: StoreError) -> None:
        if not error.retryable:
            raise error
        self._attempt += 1
        # FDB's schedule: 10 ms doubling to 1 s, jittered so that losers spread out.
        delay = min(1.0, 0.01 * 2 ** min(self._attempt - 1, 7))
        await self._env.sleep(delay * self._env.jitter(0.5, 1.0))
        self._reset()


_MISSING: Any = object()
