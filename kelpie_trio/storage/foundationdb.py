"""The FoundationDB backend: the store interface over the official `fdb` binding, on trio.

FDB is the reference the other backends imitate, so this room is thin: FDB
itself buffers writes, serves reads-your-writes, tracks conflicts, enforces the
10 MB transaction limit and retries with backoff (`Transaction.on_error`). What
lives here is the glue:

- the bridge from fdb futures to trio (`await_future`): a future's callback
  fires on FDB's network thread and only wakes the waiting trio task through
  its `TrioToken`; the task then reads the result without blocking the loop;
- the mapping of `fdb.FDBError` codes onto the store's own errors, so callers
  and `Store.transact` see a conflict on FDB exactly as on SQLite;
- paging of range reads through the binding's async primitive `_get_range`.

The binding is imported lazily: this module imports (and the tests run with a
fake of the binding, tests/storage/fake_fdb.py) on machines without libfdb_c;
only opening a real database needs the client library.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator
from typing import Any

import trio

from kelpie_trio.env import Env, RealEnv
from kelpie_trio.storage.base import Store, Transaction
from kelpie_trio.storage.errors import (
    CommitTimedOut,
    CommitUnknownResult,
    KeyTooLarge,
    NotCommitted,
    StoreClosed,
    StoreError,
    TransactionTimedOut,
    TransactionTooLarge,
    TransactionTooOld,
    ValueTooLarge,
)
from kelpie_trio.storage.limits import (
    MAX_TRANSACTION_SECONDS,
    check_key,
    check_range,
    check_value,
)

__all__ = [
    "DEFAULT_API_VERSION",
    "FdbError",
    "FdbStore",
    "FdbTransaction",
    "await_future",
    "fdb_available",
    "fdb_unavailable_reason",
    "library_mismatch",
    "map_fdb_error",
]

log = logging.getLogger(__name__)

DEFAULT_API_VERSION = 730
# From 610 on, a transaction's timeout is not reset by on_error: the store's timeout
# then bounds a transaction with all its retries, which is what it promises.
MIN_API_VERSION = 610
_ADD_WIDTH = 8  # FDB's ADD on an 8-byte little-endian operand, as base.add_to_value
_ADD_MODULUS = 1 << (8 * _ADD_WIDTH)

# FDB's codes that have a name of their own in errors.py.
_NAMED_ERRORS: dict[int, type[StoreError]] = {
    NotCommitted.code: NotCommitted,  # 1020 not_committed
    CommitUnknownResult.code: CommitUnknownResult,  # 1021 commit_unknown_result
    TransactionTooOld.code: TransactionTooOld,  # 1007 transaction_too_old
    TransactionTooLarge.code: TransactionTooLarge,  # 2101 transaction_too_large
    KeyTooLarge.code: KeyTooLarge,  # 2102 key_too_large
    ValueTooLarge.code: ValueTooLarge,  # 2103 value_too_large
}

# fdb.api_version() is process-wide and may be chosen only once; stores opened
# from several threads (to_thread) must not race to choose it.
_API_VERSION_LOCK = threading.Lock()


def library_mismatch(api: Any) -> str | None:
    """Why the client library behind the binding `api` cannot serve it, or None.

    The binding hands libfdb_c its own header version (`LATEST_API_VERSION`) when it
    selects an API version, and a library that does not know that version refuses
    (2203), whatever version was asked for: the binding then raises a bare
    RuntimeError. Asking the library for its newest version first gives a sentence
    that says what to install.
    """
    header = getattr(api, "LATEST_API_VERSION", None)
    try:
        newest = int(api.impl._capi.fdb_get_max_api_version())
    except AttributeError:  # a stand-in without a C library: nothing to compare
        return None
    if header is None or newest >= header:
        return None
    binding = getattr(api, "__version__", "?")
    return (
        f"the FoundationDB client library here (libfdb_c) supports API version {newest} "
        f"at most, but the installed fdb binding {binding} needs {header}: install "
        f"FoundationDB's client packages {header // 100}.{header % 100 // 10} or newer, "
        f"or a binding of the library's version (pip install "
        f"'foundationdb>={newest // 100}.{newest % 100 // 10},<{newest // 100}."
        f"{newest % 100 // 10 + 1}')"
    )


@functools.cache
def fdb_unavailable_reason() -> str | None:
    """Why the real FoundationDB binding cannot be used here, or None if it can.

    Loads libfdb_c (the binding may run `ldconfig` to find it): blocking, so call it
    off the trio thread (`FdbStore.run` does). Cached: a failed load is slow to repeat.
    """
    try:
        import fdb.impl
    except Exception:  # the binding raises a bare Exception when the library is missing
        return (
            "the FoundationDB client library libfdb_c is not installed on this machine "
            "(it comes with FoundationDB's client packages, not from PyPI or Debian); "
            "install them, or use --store sqlite"
        )
    import fdb

    return library_mismatch(fdb)


def fdb_available() -> bool:
    """Whether the real binding can be used here: libfdb_c loads and serves the binding.

    Blocking the first time (see `fdb_unavailable_reason`).
    """
    return fdb_unavailable_reason() is None


class FdbError(StoreError):
    """A FoundationDB error with no name of its own in errors.py; `code` is FDB's."""

    def __init__(self, code: int, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


def _describe(error: Any) -> str:
    try:
        description = error.description
    except Exception:  # the real binding asks libfdb_c for the text; never fail on that
        return "FoundationDB error"
    if isinstance(description, bytes):  # the binding returns the C string undecoded
        return description.decode("utf-8", "replace")
    return str(description)


def _predicate(api: Any, name: str, code: int) -> bool:
    """One of FDB's error predicates (is_retryable, is_maybe_committed) on a code."""
    return bool(getattr(api.predicates, name)(api.FDBError(code)))


# FoundationDB never tells a client that a disk is full: a cluster whose storage
# servers or logs run out of space is throttled by its ratekeeper (new read versions
# wait) until someone makes room, and every transaction just waits; so does one whose
# coordinators are gone. The transaction timeout (FdbStore.transaction_timeout, set on
# the database) turns that wait into 1031 transaction_timed_out, which is not retried:
# the caller hears within the timeout.
_TRANSACTION_TIMED_OUT = 1031


def map_fdb_error(api: Any, error: Any, *, committing: bool = False) -> StoreError:
    """The store error for an `FDBError` of the binding `api` (raise it `from error`).

    `committing`: whether the error came from a commit. Only a commit can have an
    unknown outcome; the same "maybe committed" code from a read (the client cancels
    reads in flight with 1039 cluster_version_changed during an upgrade) is an
    ordinary retryable failure, and must not send the retry loop looking for the
    marker of an attempt that wrote nothing.
    """
    code = error.code
    message = f"{_describe(error)} (fdb error {code})"
    if code == _TRANSACTION_TIMED_OUT:
        timed_out = (
            f"{message}: FoundationDB did not finish the transaction within the store's "
            "timeout; the cluster is unreachable or throttling writes (a full disk "
            "looks like this)"
        )
        if committing:
            return CommitTimedOut(f"{timed_out}. The commit may or may not have landed")
        return TransactionTimedOut(f"{timed_out}. Nothing was committed")
    if _predicate(api, "is_maybe_committed", code):
        if committing:
            # 1021, or 1039 cluster_version_changed: the commit may have landed, so
            # the retry loop looks for its idempotency marker.
            return CommitUnknownResult(message)
        return FdbError(code, message, retryable=_predicate(api, "is_retryable", code))
    named = _NAMED_ERRORS.get(code)
    if named is not None:
        return named(message)
    return FdbError(code, message, retryable=_predicate(api, "is_retryable", code))


async def await_future(future: Any) -> Any:
    """Wait for an fdb future without blocking trio, then return `future.wait()`.

    `on_ready` callbacks run on FDB's network thread (or at once on this thread
    if the future is ready by then); they only hand a wake-up to trio, and the
    task reads the result here, where `wait()` no longer blocks. If the task is
    cancelled, the future is cancelled too; its callback may still fire later
    and finds nobody waiting, harmlessly, even after the trio run has ended.
    """
    if future.is_ready():
        await trio.lowlevel.checkpoint()  # every store call stays a scheduling point
        return future.wait()
    token = trio.lowlevel.current_trio_token()
    ready = trio.Event()

    def on_ready(_future: Any) -> None:
        # A late callback after the run is over has nobody left to wake.
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(ready.set)

    future.on_ready(on_ready)
    try:
        await ready.wait()
    except BaseException:
        # Cancelled (or interrupted): stop FDB's work for a result nobody will read.
        future.cancel()
        raise
    return future.wait()


def _add_param(delta: int) -> bytes:
    """The 8-byte little-endian two's-complement operand of FDB's ADD."""
    return (delta % _ADD_MODULUS).to_bytes(_ADD_WIDTH, "little")


class FdbTransaction(Transaction):
    """One fdb transaction. FDB buffers, reads its own writes and detects conflicts.

    Created by `FdbStore.create_transaction`; `Store.transact` reuses one across
    attempts and calls `on_error` between them, like `@fdb.transactional`.
    """

    def __init__(self, store: FdbStore, tr: Any) -> None:
        self._api = store.api
        self._env = store.env
        self._tr = tr
        self._reset()

    def _reset(self) -> None:
        self._started = self._env.monotonic()
        self._waited = 0.0  # store-clock seconds spent waiting on FDB (see _check_age)
        self._has_writes = False
        self._committed = False

    @contextlib.contextmanager
    def _mapped_errors(self, *, committing: bool = False) -> Iterator[None]:
        try:
            yield
        except self._api.FDBError as error:
            raise map_fdb_error(self._api, error, committing=committing) from error

    async def _result(self, future: Any, *, committing: bool = False) -> Any:
        before = self._env.monotonic()
        try:
            with self._mapped_errors(committing=committing):
                return await await_future(future)
        finally:
            self._waited += self._env.monotonic() - before

    def _check_age(self) -> None:
        # FDB enforces its 5 s on its own clock (versions); this check on the
        # store's clock makes the limit bite under a virtual clock too, so a
        # transaction fails here exactly when it fails on every other backend.
        # Time spent waiting on FDB itself is left out: under trio's MockClock with
        # autojump, the clock jumps to the next deadline while every task waits on
        # the network thread (the store's 60 s marker sleep, say), and that virtual
        # jump must not age the transaction. The real time of those waits is FDB's
        # to judge, and it does (1007).
        if self._env.monotonic() - self._started - self._waited > MAX_TRANSACTION_SECONDS:
            raise TransactionTooOld(
                f"transaction is older than {MAX_TRANSACTION_SECONDS:g} s; "
                "it is retried from the start"
            )

    # -- reads ---------------------------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        check_key(key)
        self._check_age()
        with self._mapped_errors():
            future = self._tr.get(key)
        # The binding's Value future returns itself from wait(); `.value` is bytes or None.
        return (await self._result(future)).value

    async def get_range(
        self, begin: bytes, end: bytes, *, limit: int = 0, reverse: bool = False
    ) -> list[tuple[bytes, bytes]]:
        check_range(begin, end, limit)
        self._check_age()
        if begin >= end:  # an empty range reads nothing (FDB would refuse an inverted one)
            await trio.lowlevel.checkpoint()
            return []
        api = self._api
        selector = api.KeySelector
        begin_sel = selector.first_greater_or_equal(begin)
        end_sel = selector.first_greater_or_equal(end)
        # As FDBRange.to_list: EXACT needs a row limit; without one, fetch it all.
        mode = api.StreamingMode.exact if limit else api.StreamingMode.want_all
        remaining = limit
        iteration = 1
        results: list[tuple[bytes, bytes]] = []
        while True:
            with self._mapped_errors():
                future = self._tr._get_range(
                    begin_sel, end_sel, remaining, mode, iteration, reverse
                )
            kvs, _count, more = await self._result(future)
            results.extend((kv.key, kv.value) for kv in kvs)
            # FDB may stop a batch early (byte limits) and say `more`: page on from
            # the last key, as FDBRange.__iter__ does, until the range or limit is done.
            if not kvs or not more or (limit and len(kvs) >= remaining):
                return results
            if limit:
                remaining -= len(kvs)
            iteration += 1
            last = kvs[-1].key
            if reverse:
                end_sel = selector.first_greater_or_equal(last)
            else:
                begin_sel = selector.first_greater_than(last)

    # -- writes (buffered by FDB itself; the checks give every backend's errors) --

    def set(self, key: bytes, value: bytes) -> None:
        check_key(key)
        check_value(value)
        with self._mapped_errors():
            self._tr.set(key, value)
        self._has_writes = True

    def clear(self, key: bytes) -> None:
        check_key(key)
        with self._mapped_errors():
            self._tr.clear(key)
        self._has_writes = True

    def clear_range(self, begin: bytes, end: bytes) -> None:
        check_key(begin)
        check_key(end)
        if begin >= end:  # nothing to clear; FDB would call an inverted range an error
            return
        with self._mapped_errors():
            self._tr.clear_range(begin, end)
        self._has_writes = True

    def add(self, key: bytes, delta: int) -> None:
        check_key(key)
        with self._mapped_errors():
            self._tr.add(key, _add_param(delta))
        self._has_writes = True

    def add_read_conflict_key(self, key: bytes) -> None:
        check_key(key)
        with self._mapped_errors():
            self._tr.add_read_conflict_key(key)

    @property
    def has_writes(self) -> bool:
        return self._has_writes

    # -- commit and retry ----------------------------------------------------

    async def commit(self) -> None:
        if self._committed:
            raise RuntimeError("transaction already committed")
        self._check_age()
        self._committed = True
        if not self._has_writes:
            # A read-only commit is a no-op on FDB too: it never reaches the cluster.
            await trio.lowlevel.checkpoint()
            return
        with self._mapped_errors(committing=True):
            future = self._tr.commit()
        try:
            await self._result(future, committing=True)
        except trio.Cancelled:
            # The commit may already be on its way to (or applied by) the cluster;
            # cancelling the future does not take it back. Its outcome is unknown,
            # as after 1021, and the caller, being cancelled, cannot retry and look:
            # nothing here may assume either outcome.
            log.debug("a commit was cancelled in flight: its outcome is unknown")
            raise

    def _fdb_code(self, error: StoreError) -> int:
        """The FDB error code to hand to fdb's on_error for `error`."""
        cause = error.__cause__
        if isinstance(cause, self._api.FDBError):
            return int(cause.code)  # FDB's own error (1039 stays 1039, not 1021)
        if _predicate(self._api, "is_retryable", error.code):
            return error.code  # ours, with FDB's meaning: e.g. the flaky wrapper's 1021
        # Ours, retryable, with a code FDB does not know as retryable (such as
        # StorageUnavailable's): nothing was written, so ask for FDB's plain
        # retry after a conflict.
        return NotCommitted.code

    async def on_error(self, error: StoreError) -> None:
        if not error.retryable:
            raise error
        with self._mapped_errors():
            future = self._tr.on_error(self._fdb_code(error))
        # Resolves after FDB's own backoff, with the fdb transaction reset for the
        # next attempt; raises (mapped) if FDB will not retry this code.
        await self._result(future)
        self._reset()


def _load_binding() -> Any:
    """Import the real `fdb` binding once libfdb_c is known to serve it. Blocking."""
    reason = fdb_unavailable_reason()
    if reason is not None:
        raise StoreError(f"cannot open FoundationDB: {reason}")
    import fdb

    return fdb


def _open_database(api: Any, cluster_file: str | None, api_version: int, timeout_ms: int) -> Any:
    """Choose the API version (once per process) and open the database. Blocking.

    Every failure is a StoreError that says what is wrong, so `serve` can print it.
    """
    mismatch = library_mismatch(api)
    if mismatch is not None:
        raise StoreError(f"cannot open FoundationDB: {mismatch}")
    with _API_VERSION_LOCK:
        selected = api.get_api_version() if api.is_api_version_selected() else None
        if selected is None:
            try:
                api.api_version(api_version)
            except RuntimeError as error:  # the binding's way to refuse a version
                raise StoreError(f"cannot open FoundationDB: {error}") from error
        elif selected != api_version:
            # The binding raises on a second, different version; say which and why.
            raise StoreError(
                f"the fdb API version of this process is already {selected}; "
                f"a store asking for {api_version} cannot open"
            )
    where = cluster_file or "the default cluster file"
    try:
        db = api.open(cluster_file)
        # From API 610 on, this bounds a transaction with all its retries (on_error
        # keeps it): a cluster that does not answer is an error within the timeout.
        db.options.set_transaction_timeout(timeout_ms)
    except api.FDBError as error:  # e.g. 1515 no cluster file, 2104 a malformed one
        mapped = map_fdb_error(api, error)
        raise FdbError(
            error.code, f"cannot open FoundationDB with {where}: {mapped}", retryable=False
        ) from error
    return db


class FdbStore(Store):
    """A store on a FoundationDB cluster (`cluster_file`; None = FDB's default file).

    `fdb_api` is the binding (the `fdb` module, imported when the store opens) or
    an object with its surface, such as the tests' fake. Start `run` in the
    node's nursery before use: it opens the database. `transaction_timeout` bounds
    each transaction with its retries, so a cluster that stalls (throttled by a full
    disk, or gone) is an error within that time rather than a wait without end.
    """

    transaction_timeout: float = 10.0

    def __init__(
        self,
        cluster_file: str | None,
        env: Env | None = None,
        *,
        fdb_api: Any = None,
        api_version: int = DEFAULT_API_VERSION,
    ) -> None:
        if api_version < MIN_API_VERSION:
            raise ValueError(
                f"the FoundationDB store needs API version {MIN_API_VERSION} or later "
                f"(got {api_version}): before it, on_error resets a transaction's timeout"
            )
        self.cluster_file = cluster_file
        self.env = env or RealEnv()
        self.api_version = api_version
        self._api = fdb_api
        self._db: Any = None
        self._closed = False
        self._run_scope: trio.CancelScope | None = None

    @property
    def api(self) -> Any:
        """The binding in use (None before `run` when it is the real `fdb` module)."""
        return self._api

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Open the database, report started, then do every store's background work."""
        if self._closed:
            raise StoreClosed("the store is closed")
        if self._db is not None:
            raise RuntimeError("FdbStore.run is already running")
        api = self._api
        # Loading libfdb_c (the binding may run ldconfig to find it), selecting the
        # API version and opening the cluster file all block: off the trio thread.
        if api is None:
            api = await trio.to_thread.run_sync(_load_binding)
        db = await trio.to_thread.run_sync(
            _open_database,
            api,
            self.cluster_file,
            self.api_version,
            round(self.transaction_timeout * 1000),
        )
        self._api = api
        self._db = db
        with trio.CancelScope() as self._run_scope:
            task_status.started()
            # The base loop collects idempotency markers; its own started() call
            # goes to TASK_STATUS_IGNORED, a no-op, since we reported above.
            await super().run()

    def create_transaction(self) -> FdbTransaction:
        if self._closed:
            raise StoreClosed("the store is closed")
        if self._db is None:
            raise RuntimeError(
                "FdbStore is not open: start it first with `await nursery.start(store.run)`"
            )
        return FdbTransaction(self, self._db.create_transaction())

    async def aclose(self) -> None:
        """Stop the background work and drop the database.

        The binding's network thread is process-wide and cannot be restarted,
        so it stays up (the binding stops it at exit).
        """
        self._closed = True
        self._db = None
        if self._run_scope is not None:
            self._run_scope.cancel()
        await trio.lowlevel.checkpoint()
