"""A fake of the fdb binding's surface, for machines without libfdb_c.

`FdbStore(cluster_file=None, fdb_api=FakeFdbApi())` runs the real backend code
(kelpie_trio/storage/foundationdb.py) against this: the same calls
(`api_version`, `open`, `create_transaction`, `get`, `_get_range`, `set`,
`clear`, `clear_range`, `add`, `commit`, `on_error`), the same futures
(`on_ready`, `is_ready`, `wait`, `cancel`) and FDB's error codes.

What makes it worth testing against:

- futures complete on a background "network" thread, one per process like the
  binding's, and their callbacks run there: the backend's trio bridge is really
  crossed by another thread (`pause()` holds completions back, for tests of
  cancellation and of callbacks arriving after the trio run);
- transactions have FDB's semantics, on the shared MVCC engine
  (kelpie_trio/storage/engine.py): a snapshot at the first read's version,
  read-your-writes, read conflict ranges, ADD without a read conflict, commit
  refused with 1020 on conflict, 2101 when the size *as FDB counts it* (mutations
  plus coalesced read and write conflict ranges, NativeAPI's `getSize`) is over
  10 MB, 1007 when the read version is older than 5 s; `on_error` retries FDB's
  retryable codes after FDB's backoff (10 ms doubling to 1 s, jittered) and resets
  the transaction, and raises the others;
- the transaction timeout (the database option) runs from the transaction's
  creation or explicit `reset()`, *not* from `on_error` (API 610+), and fails every
  operation pending or issued after it with 1031; `throttle()` (or `disconnect()`)
  holds every operation, as a cluster with full disks or dead coordinators does;
- reads fail as on a real cluster when told to (`inject_read_error`: 1039 during an
  upgrade, 1007, 1009); the next commit's failure can be injected too
  (`inject_commit_error`), e.g. 1021 commit_unknown_result after it was applied;
- `api_version` refuses as the binding does when the client library (its maximum
  API version, `impl._capi.fdb_get_max_api_version()`) is older than the binding
  (`LATEST_API_VERSION`); `open` refuses a missing or malformed cluster file.

Reads are computed when issued (under one lock: calls come from the trio thread,
completions from the network thread) and delivered after `latency` from the
network thread. A commit is decided and applied only when it completes: until
then it can be cancelled, and a commit cancelled before completion never lands,
while one whose reply is lost (`inject_commit_error(..., applied=True)`) did, as
on FDB, where a cancelled commit's outcome is unknown.
"""

from __future__ import annotations

import collections
import os
import random
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from typing import Any

from sortedcontainers import SortedDict

from kelpie_trio.storage.base import CommitRequest, Mutation, MutationKind, add_to_value, key_after
from kelpie_trio.storage.engine import MemoryEngine
from kelpie_trio.storage.errors import StoreError
from kelpie_trio.storage.limits import (
    MAX_KEY_BYTES,
    MAX_TRANSACTION_BYTES,
    MAX_TRANSACTION_SECONDS,
    MAX_VALUE_BYTES,
)
from tests.storage.fake_fdb_surface import (
    LATEST_API_VERSION,
    LEGAL_END,
    NETWORK,
    RETRYABLE,
    FakeFuture,
    FakeValue,
    FDBError,
    KeySelector,
    KeyValue,
    Predicates,
    StreamingMode,
)

__all__ = ["FDBError", "FakeDatabase", "FakeFdbApi", "FakeFuture", "FakeTransaction"]

# -- transactions -----------------------------------------------------------------------


class _Add:
    """A buffered ADD on a key whose stored value the transaction has not seen."""

    __slots__ = ("delta",)

    def __init__(self, delta: int) -> None:
        self.delta = delta


class FakeTransaction:
    """An FDB transaction: snapshot reads, read-your-writes, conflict ranges, limits."""

    def __init__(self, api: FakeFdbApi) -> None:
        self._api = api
        self._backoff = api.initial_backoff
        # The timeout runs from here or an explicit reset(); on_error keeps it (API 610+).
        self._timeout_start = api.clock()
        self._reset()

    def _reset(self) -> None:
        self._rv: int | None = None
        self._rv_time: float | None = None
        self._writes: SortedDict = SortedDict()  # key -> bytes | None | _Add
        self._cleared: list[tuple[bytes, bytes]] = []
        self._read_ranges: list[tuple[bytes, bytes]] = []
        self._deferred: FDBError | None = None  # the first error of a void call
        self._cancelled = False

    # -- the binding's plumbing ---------------------------------------------------

    def _timeout_left(self) -> float | None:
        """Seconds until the transaction times out (<= 0: it has), None without a timeout."""
        milliseconds = self._api.transaction_timeout_ms
        if not milliseconds:
            return None
        return milliseconds / 1000 - (self._now() - self._timeout_start)

    def _issue(
        self, future: FakeFuture, compute: Callable[[], Any], *, at_completion: bool = False
    ) -> FakeFuture:
        """Run `compute` under the engine lock and deliver its outcome from the network.

        Reads are computed now; a commit (`at_completion`) when it completes, so a
        commit cancelled before then never happens. A timeout that runs out first
        wins: the operation fails with 1031 when it does.
        """
        api = self._api
        left = self._timeout_left()
        if left is not None and left <= 0:
            api._deliver(future, None, FDBError(1031), 0.0)
            return future
        if api.throttled:
            # The ratekeeper holds every transaction (or the coordinators are gone):
            # nothing happens, and with a timeout the caller hears 1031 when it runs out.
            if left is not None:
                api._deliver(future, None, FDBError(1031), left)
            return future
        if left is not None and left < api.latency:
            api._deliver(future, None, FDBError(1031), left)
            return future

        def outcome() -> tuple[Any, FDBError | None]:
            with api.lock:
                try:
                    if self._cancelled:
                        raise FDBError(1025)
                    return compute(), None
                except FDBError as exc:
                    return None, exc

        if not at_completion:
            result, error = outcome()
            api._deliver(future, result, error, api.latency)
            return future

        def complete() -> None:
            if future.is_ready():
                return  # cancelled before it completed: it never reached the cluster
            result, error = outcome()

            def reply() -> None:
                _, callbacks = future._complete(result, error)
                api._run_callbacks(future, callbacks)

            api._through_gate(reply)

        api._schedule(api.latency, complete, work=True)
        return future

    def _read_fault(self) -> None:
        """An error injected into the next read, as a cluster raises them (1039, 1007...)."""
        if self._api._read_errors:
            raise FDBError(self._api._read_errors.popleft())

    def _defer(self, code: int) -> None:
        # The binding's set/clear/atomic_op are void C calls: the fault shows at commit.
        if self._deferred is None:
            self._deferred = FDBError(code)

    def _check_write_key(self, key: bytes) -> bool:
        if len(key) > MAX_KEY_BYTES:
            self._defer(2102)
            return False
        if key >= LEGAL_END:
            self._defer(2004)
            return False
        return True

    def _now(self) -> float:
        return self._api.clock()

    def _version_for_read(self) -> int:
        if self._rv is None:
            self._rv = self._api.engine.read_version()
            self._rv_time = self._now()
        elif self._now() - self._rv_time > MAX_TRANSACTION_SECONDS:  # type: ignore[operator]
            raise FDBError(1007)
        return self._rv

    def _engine_call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except StoreError as exc:  # the engine speaks the store's errors, with FDB's codes
            raise FDBError(exc.code) from exc

    def _add_read_range(self, begin: bytes, end: bytes) -> None:
        if begin < end:
            self._read_ranges.append((begin, end))

    def _is_cleared(self, key: bytes) -> bool:
        return any(b <= key < e for b, e in self._cleared)

    # -- reads ----------------------------------------------------------------------

    def get(self, key: bytes) -> FakeValue:
        def compute() -> bytes | None:
            if len(key) > MAX_KEY_BYTES:
                raise FDBError(2102)
            if key >= LEGAL_END:
                raise FDBError(2004)
            self._read_fault()
            state = self._writes.get(key, _MISSING)
            if state is not _MISSING and not isinstance(state, _Add):
                return state  # set or cleared here: storage is not consulted
            if state is _MISSING and self._is_cleared(key):
                return None
            rv = self._version_for_read()
            stored = self._engine_call(lambda: self._api.engine.get(key, rv))
            self._add_read_range(key, key_after(key))
            return stored if state is _MISSING else add_to_value(stored, state.delta)

        return self._issue(FakeValue(self._api), compute)  # type: ignore[return-value]

    @staticmethod
    def _resolve(selector: KeySelector) -> bytes:
        if selector.offset == 1 and not selector.or_equal:  # first_greater_or_equal
            return selector.key
        if selector.offset == 1 and selector.or_equal:  # first_greater_than
            return key_after(selector.key)
        raise NotImplementedError(f"the fake resolves only first_greater_* selectors: {selector}")

    def _get_range(
        self,
        begin: KeySelector,
        end: KeySelector,
        limit: int,
        streaming_mode: int,
        iteration: int,
        reverse: bool,
    ) -> FakeFuture:
        def compute() -> tuple[list[KeyValue], int, bool]:
            b, e = self._resolve(begin), self._resolve(end)
            if b > LEGAL_END or e > LEGAL_END:
                raise FDBError(2004)
            if streaming_mode == StreamingMode.exact and limit <= 0:
                raise FDBError(2210)
            self._read_fault()
            self._api.range_requests += 1
            if b >= e:
                return [], 0, False
            rows = self._view(b, e, reverse)
            # Pages smaller than FDB's, in every mode, so the caller's paging runs.
            take = self._api.page_size if not limit else min(limit, self._api.page_size)
            page = rows[:take]
            more = len(rows) > len(page)
            if more and page:
                last = page[-1][0]
                self._add_read_range(*((last, e) if reverse else (b, key_after(last))))
            else:
                self._add_read_range(b, e)
            kvs = [KeyValue(k, v) for k, v in page]
            return kvs, len(kvs), more

        return self._issue(FakeFuture(self._api), compute)

    def _view(self, begin: bytes, end: bytes, reverse: bool) -> list[tuple[bytes, bytes]]:
        """[begin, end) as this transaction sees it: its snapshot plus its own writes."""
        rv = self._version_for_read()
        stored = self._engine_call(lambda: self._api.engine.get_range(begin, end, 0, False, rv))
        merged: dict[bytes, bytes | None] = {k: v for k, v in stored if not self._is_cleared(k)}
        for key in self._writes.irange(begin, end, inclusive=(True, False)):
            state = self._writes[key]
            if isinstance(state, _Add):
                merged[key] = add_to_value(merged.get(key), state.delta)
            else:
                merged[key] = state
        return [(k, v) for k, v in sorted(merged.items(), reverse=reverse) if v is not None]

    # -- writes ---------------------------------------------------------------------

    def set(self, key: bytes, value: bytes) -> None:
        with self._api.lock:
            if not self._check_write_key(key):
                return
            if len(value) > MAX_VALUE_BYTES:
                self._defer(2103)
                return
            self._writes[key] = value

    def clear(self, key: bytes) -> None:
        with self._api.lock:
            if not self._check_write_key(key):
                return
            self._writes[key] = None

    def clear_range(self, begin: bytes, end: bytes) -> None:
        with self._api.lock:
            if begin > end:
                self._defer(2005)
                return
            if end > LEGAL_END:
                self._defer(2004)
                return
            for key in list(self._writes.irange(begin, end, inclusive=(True, False))):
                del self._writes[key]
            self._cleared.append((begin, end))

    def add(self, key: bytes, param: bytes) -> None:
        if len(param) != 8:
            raise NotImplementedError("the fake's ADD takes 8-byte operands only")
        delta = int.from_bytes(param, "little")
        with self._api.lock:
            if not self._check_write_key(key):
                return
            state = self._writes.get(key, _MISSING)
            if state is _MISSING:
                # After a clear of its range the stored value is known: nothing.
                self._writes[key] = (
                    add_to_value(None, delta) if self._is_cleared(key) else _Add(delta)
                )
            elif isinstance(state, _Add):
                state.delta += delta
            else:
                self._writes[key] = add_to_value(state, delta)

    def add_read_conflict_key(self, key: bytes) -> None:
        with self._api.lock:
            if self._check_write_key(key):
                # No read version is taken: without reads, FDB takes it at commit,
                # where nothing can have been written after it (see CommitRequest).
                self._add_read_range(key, key_after(key))

    # -- commit, errors, reset ----------------------------------------------------------

    def _commit_request(self) -> CommitRequest:
        mutations = []
        for key, state in self._writes.items():
            if isinstance(state, _Add):
                param = (state.delta % (1 << 64)).to_bytes(8, "little")
                mutations.append(Mutation(MutationKind.ADD, key, param))
            elif state is None:
                mutations.append(Mutation(MutationKind.CLEAR, key))
            else:
                mutations.append(Mutation(MutationKind.SET, key, state))
        return CommitRequest(
            read_version=self._rv,
            read_ranges=list(self._read_ranges),
            cleared_ranges=list(self._cleared),
            mutations=mutations,
        )

    def size(self) -> int:
        """The transaction's size as FDB's client counts it at commit.

        The read-your-writes layer hands the native transaction one mutation per
        written key (a clear of one key is the range [key, key + \\x00)), the clear
        ranges merged, and the read and write conflict ranges merged where they touch;
        `Transaction::getSize` sums the mutations' parameters and every range's ends.
        """
        with self._api.lock:
            cleared = _merge(self._cleared)
            mutations = sum(len(b) + len(e) for b, e in cleared)
            for key, state in self._writes.items():
                if state is None:
                    mutations += len(key) + len(key_after(key))
                elif isinstance(state, _Add):
                    mutations += len(key) + 8
                else:
                    mutations += len(key) + len(state)
            written = _merge(cleared + [(key, key_after(key)) for key in self._writes])
            reads = _merge(self._read_ranges)
            return mutations + sum(len(b) + len(e) for b, e in written + reads)

    def commit(self) -> FakeFuture:
        def compute() -> None:
            api = self._api
            api.commit_attempts += 1
            if self._deferred is not None:
                raise self._deferred
            if self._rv_time is not None and self._now() - self._rv_time > MAX_TRANSACTION_SECONDS:
                raise FDBError(1007)
            if not (self._writes or self._cleared):
                return  # read-only: nothing goes to the cluster, no size is checked
            if self.size() > MAX_TRANSACTION_BYTES:
                raise FDBError(2101)
            injected = api._injected.popleft() if api._injected else None
            if injected is not None and not injected[1]:
                raise FDBError(injected[0])
            request = self._commit_request()
            self._engine_call(lambda: api.engine.commit(request, self._now()))
            api.commits += 1
            api.commit_applied.set()
            if injected is not None:  # applied, and yet reported as failed
                raise FDBError(injected[0])

        return self._issue(FakeFuture(self._api), compute, at_completion=True)

    def on_error(self, error: FDBError | int) -> FakeFuture:
        """FDB's on_error: retryable codes back off then reset; others come back raised."""
        code = error.code if isinstance(error, FDBError) else error
        future = FakeFuture(self._api)
        left = self._timeout_left()
        if left is not None and left <= 0:
            code = 1031  # a timed-out transaction answers every call with 1031
        with self._api.lock:
            if code not in RETRYABLE:
                error_out: FDBError | None = FDBError(code)
                delay = self._api.latency
            else:
                # Reset now rather than when the backoff ends: nobody uses the
                # transaction while its on_error is pending.
                delay = self._backoff * self._api.rng.uniform(0.5, 1.0)
                self._backoff = min(self._backoff * 2, self._api.max_backoff)
                self._reset()
                self._api.retries += 1
                error_out = None
                if left is not None and left < delay:
                    delay, error_out = left, FDBError(1031)
        self._api._deliver(future, None, error_out, delay)
        return future

    def reset(self) -> None:
        with self._api.lock:
            self._reset()
            self._backoff = self._api.initial_backoff
            self._timeout_start = self._api.clock()

    def cancel(self) -> None:
        with self._api.lock:
            self._cancelled = True


_MISSING: Any = object()


def _merge(ranges: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Ranges merged where they overlap or touch, as FDB's coalesced range maps keep them."""
    out: list[tuple[bytes, bytes]] = []
    for begin, end in sorted(r for r in ranges if r[0] < r[1]):
        if out and begin <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((begin, end))
    return out


class _DatabaseOptions:
    """As `Database.options`: only the options the backend sets."""

    def __init__(self, api: FakeFdbApi) -> None:
        self._api = api

    def set_transaction_timeout(self, milliseconds: int) -> None:
        if not 0 <= milliseconds <= 2**31 - 1:
            raise FDBError(2006)  # invalid_option_value
        self._api.transaction_timeout_ms = milliseconds


class FakeDatabase:
    def __init__(self, api: FakeFdbApi, cluster_file: str | None) -> None:
        self._api = api
        self.cluster_file = cluster_file
        self.options = _DatabaseOptions(api)

    def create_transaction(self) -> FakeTransaction:
        return FakeTransaction(self._api)


# -- the module --------------------------------------------------------------------------


class FakeFdbApi:
    """Stands in for the `fdb` module: one fake cluster (a `MemoryEngine`) per instance.

    clock: seconds for FDB's 5 s limit and the timeout (wall-clock by default, as the
    cluster's); page_size: most rows per `_get_range` reply; latency: seconds before
    each completion (never zero by default: a real cluster answers later, and code
    that only works when answers are instant must fail here); initial_backoff and
    max_backoff: on_error's schedule (FDB's: 10 ms doubling to 1 s);
    library_api_version: the newest API version the "installed libfdb_c" supports.
    """

    LATEST_API_VERSION = LATEST_API_VERSION
    __version__ = "8.0.0"
    FDBError = FDBError
    KeySelector = KeySelector
    StreamingMode = StreamingMode
    KeyValue = KeyValue
    predicates = Predicates()

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        page_size: int = 2,
        latency: float = 0.001,
        initial_backoff: float = 0.01,
        max_backoff: float = 1.0,
        seed: int | None = None,
        library_api_version: int = LATEST_API_VERSION,
    ) -> None:
        self.engine = MemoryEngine()
        self.lock = threading.RLock()  # the engine and every transaction's buffer
        self.clock = clock
        self.page_size = page_size
        self.latency = latency
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.rng = random.Random(seed)
        self._version: int | None = None
        self._injected: collections.deque[tuple[int, bool]] = collections.deque()
        self._read_errors: collections.deque[int] = collections.deque()
        # As `fdb.impl._capi`: the loaded C library, asked for its newest API version.
        self.impl = types.SimpleNamespace(
            _capi=types.SimpleNamespace(fdb_get_max_api_version=lambda: library_api_version)
        )
        self.library_threads: list[int] = []  # threads that "loaded libfdb_c" (api_version)
        self._gate = threading.Lock()  # guards _paused and _held
        self._paused: str | None = None  # "all", or "replies": the cluster works, replies wait
        self._held: list[Callable[[], None]] = []
        # What tests look at.
        self.callback_threads: collections.Counter[int] = collections.Counter()  # ident -> runs
        self.callback_errors: list[BaseException] = []
        self.blocking_waits = 0
        self.cancelled_futures = 0
        self.commit_attempts = 0
        self.commits = 0
        self.commit_applied = threading.Event()  # set by every commit the cluster applies
        self.retries = 0
        self.range_requests = 0
        self.transaction_timeout_ms = 0  # the database option; 0: no timeout, as FDB's
        self.throttled = False  # see throttle()

    # -- fdb's module functions -------------------------------------------------------

    def api_version(self, version: int) -> None:
        """As `fdb.api_version`, with the binding's messages (fdb/__init__.py)."""
        if self._version is not None:
            if self._version != version:
                raise RuntimeError(f"FDB API already loaded at version {self._version}")
            return
        if version > LATEST_API_VERSION:
            raise RuntimeError(f"Latest known FDB API version is {LATEST_API_VERSION}")
        self.library_threads.append(threading.get_ident())
        # fdb_select_api_version_impl(version, header): 2203 when the library is older
        # than the binding's header version, whatever version was asked for.
        library = self.impl._capi.fdb_get_max_api_version()
        if library < LATEST_API_VERSION:
            raise RuntimeError(
                "This version of the FoundationDB Python binding is not supported by the "
                "installed FoundationDB C library. The binding requires a library that "
                f"supports API version {LATEST_API_VERSION}, but the installed library "
                f"supports a maximum version of {library}."
            )
        self._version = version

    def is_api_version_selected(self) -> bool:
        return self._version is not None

    def get_api_version(self) -> int:
        if self._version is None:
            raise RuntimeError("API version is not set")
        return self._version

    def open(self, cluster_file: str | None = None) -> FakeDatabase:
        if self._version is None:
            raise RuntimeError("You must call api_version() before using any fdb methods")
        if cluster_file is not None:
            # As fdb_create_database: a missing file is 1515, one that holds no
            # connection string (description:id@address:port) 2104.
            if not os.path.exists(cluster_file):
                raise FDBError(1515)
            with open(cluster_file, encoding="utf-8", errors="replace") as f:
                text = f.read().strip()
            if "@" not in text or ":" not in text.split("@", 1)[0]:
                raise FDBError(2104)
        return FakeDatabase(self, cluster_file)

    # -- test controls ----------------------------------------------------------------

    def throttle(self, on: bool = True) -> None:
        """Hold every transaction, as FDB's ratekeeper does when the cluster's disks are
        (nearly) full: FDB reports no disk-full error, it only stops serving."""
        self.throttled = on

    def disconnect(self, on: bool = True) -> None:
        """Dead coordinators: a read version is asked for and never given. To a client
        this looks exactly like a throttled cluster: nothing answers."""
        self.throttled = on

    def inject_read_error(self, code: int) -> None:
        """Make the next read (get or range) fail with `code`, e.g. 1039 during an upgrade."""
        with self.lock:
            self._read_errors.append(code)

    def inject_commit_error(self, code: int, *, applied: bool = False) -> None:
        """Make the next commit fail with `code`; with `applied`, after applying it."""
        with self.lock:
            self._injected.append((code, applied))

    def pause(self, *, replies_only: bool = False) -> None:
        """Hold every completion and callback until `resume()`. With `replies_only`,
        the cluster still applies commits; only the replies wait (a lost connection)."""
        with self._gate:
            self._paused = "replies" if replies_only else "all"

    def resume(self) -> None:
        with self._gate:
            self._paused = None
            held, self._held = self._held, []
        for job in held:
            NETWORK.schedule(0.0, job)

    def snapshot(self) -> dict[bytes, bytes]:
        with self.lock:
            return self.engine.snapshot()

    # -- delivery -----------------------------------------------------------------------

    def _through_gate(self, job: Callable[[], None], *, work: bool = False) -> None:
        with self._gate:
            if self._paused == "all" or (self._paused == "replies" and not work):
                self._held.append(job)
                return
        job()

    def _schedule(self, delay: float, job: Callable[[], None], *, work: bool = False) -> None:
        NETWORK.schedule(delay, lambda: self._through_gate(job, work=work))

    def _deliver(
        self, future: FakeFuture, result: Any, error: FDBError | None, delay: float
    ) -> None:
        def job() -> None:
            _, callbacks = future._complete(result, error)
            self._run_callbacks(future, callbacks)

        self._schedule(delay, job)

    def _dispatch(self, future: FakeFuture, callbacks: list[Callable[[Any], None]]) -> None:
        if callbacks:
            NETWORK.schedule(
                0.0, lambda: self._through_gate(lambda: self._run_callbacks(future, callbacks))
            )

    def _run_callbacks(self, future: FakeFuture, callbacks: list[Callable[[Any], None]]) -> None:
        for callback in callbacks:
            self._run_callback(callback, future)

    def _run_callback(self, callback: Callable[[Any], None], future: FakeFuture) -> None:
        self.callback_threads[threading.get_ident()] += 1
        try:
            callback(future)
        except Exception as exc:  # as the binding: report and discard, never kill the thread
            self.callback_errors.append(exc)
            sys.stderr.write("Discarding uncaught exception from user FDB callback:\n")
            traceback.print_exception(exc, file=sys.stderr)
