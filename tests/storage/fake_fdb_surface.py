"""The fdb binding's surface the fake is made of: error codes and predicates, key
selectors, streaming modes, futures, and the network thread that completes them.

`fake_fdb.py` builds the fake cluster (transactions, database, module) on these.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.storage.fake_fdb import FakeFdbApi

__all__ = [
    "DESCRIPTIONS",
    "LATEST_API_VERSION",
    "LEGAL_END",
    "MAYBE_COMMITTED",
    "NETWORK",
    "RETRYABLE",
    "RETRYABLE_NOT_COMMITTED",
    "FDBError",
    "FakeFuture",
    "FakeValue",
    "KeySelector",
    "KeyValue",
    "Predicates",
    "StreamingMode",
]

LATEST_API_VERSION = 800  # the binding's header version (fdb 8.0.0's apiversion.py)

# FDB's error predicates (fdb_c's fdb_error_predicate), by code.
MAYBE_COMMITTED = frozenset({1021, 1039})  # commit_unknown_result, cluster_version_changed
RETRYABLE_NOT_COMMITTED = frozenset(
    {
        1007,  # transaction_too_old
        1009,  # future_version
        1020,  # not_committed
        1037,  # process_behind
        1038,  # database_locked
        1042,  # commit_proxy_memory_limit_exceeded
        1051,  # batch_transaction_throttled
        1078,  # grv_proxy_memory_limit_exceeded
        1213,  # tag_throttled
        1223,  # proxy_tag_throttled
    }
)
RETRYABLE = MAYBE_COMMITTED | RETRYABLE_NOT_COMMITTED

DESCRIPTIONS = {
    1007: "Transaction is too old to perform reads or be committed",
    1009: "Request for future version",
    1020: "Transaction not committed due to conflict with another transaction",
    1021: "Transaction may or may not have committed",
    1025: "Operation aborted because the transaction was cancelled",
    1031: "Operation aborted because the transaction timed out",
    1039: "The protocol version of the cluster has changed",
    1101: "Asynchronous operation cancelled",
    1515: "No cluster file found in current directory or default location",
    2000: "Invalid API call",
    2004: "Key outside legal range",
    2005: "Range begin key larger than end key",
    2006: "Option set with an invalid value",
    2101: "Transaction exceeds byte limit",
    2102: "Key length exceeds limit",
    2103: "Value length exceeds limit",
    2104: "Connection string invalid",
    2210: "EXACT streaming mode requires limits, but none were given",
    4000: "An unknown error occurred",
}

LEGAL_END = b"\xff"  # keys at or past \xff are the system keyspace


class FDBError(Exception):
    """As `fdb.FDBError`: `code`, and a `description` that is bytes (a C string)."""

    def __init__(self, code: int) -> None:
        self.code = code

    @property
    def description(self) -> bytes:
        return DESCRIPTIONS.get(self.code, "Unknown error").encode()

    def __str__(self) -> str:
        return f"{self.description!r} ({self.code})"

    def __repr__(self) -> str:
        return f"FDBError({self.code})"


class KeySelector:
    """As `fdb.KeySelector` (fdb.impl cannot be imported without libfdb_c)."""

    def __init__(self, key: bytes, or_equal: bool, offset: int) -> None:
        self.key = key
        self.or_equal = or_equal
        self.offset = offset

    @classmethod
    def last_less_than(cls, key: bytes) -> KeySelector:
        return cls(key, False, 0)

    @classmethod
    def last_less_or_equal(cls, key: bytes) -> KeySelector:
        return cls(key, True, 0)

    @classmethod
    def first_greater_than(cls, key: bytes) -> KeySelector:
        return cls(key, True, 1)

    @classmethod
    def first_greater_or_equal(cls, key: bytes) -> KeySelector:
        return cls(key, False, 1)

    def __repr__(self) -> str:
        return f"KeySelector({self.key!r}, {self.or_equal!r}, {self.offset!r})"


class StreamingMode:
    """As `fdb.StreamingMode` (the values of fdb.fdboptions)."""

    want_all = -2
    iterator = -1
    exact = 0
    small = 1
    medium = 2
    large = 3
    serial = 4


class KeyValue:
    def __init__(self, key: bytes, value: bytes) -> None:
        self.key = key
        self.value = value

    def __iter__(self):
        return iter((self.key, self.value))

    def __repr__(self) -> str:
        return f"{self.key!r}: {self.value!r}"


class Predicates:
    """As `fdb.predicates`: each takes an error with a `.code`."""

    @staticmethod
    def is_retryable(error: Any) -> bool:
        return error.code in RETRYABLE

    @staticmethod
    def is_maybe_committed(error: Any) -> bool:
        return error.code in MAYBE_COMMITTED

    @staticmethod
    def is_retryable_not_committed(error: Any) -> bool:
        return error.code in RETRYABLE_NOT_COMMITTED


# -- the network thread -------------------------------------------------------------


class _Network:
    """One daemon thread per process running scheduled jobs, like fdb's network thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, job: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._jobs, (time.monotonic() + delay, next(self._seq), job))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fake-fdb-network", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._jobs and self._jobs[0][0] <= now:
                        _, _, job = heapq.heappop(self._jobs)
                        break
                    self._cond.wait(self._jobs[0][0] - now if self._jobs else None)
            job()  # jobs report their own errors (FakeFdbApi._run_callback)


NETWORK = _Network()


# -- futures ------------------------------------------------------------------------------


class FakeFuture:
    """As the binding's Future: completes once, with a result or an FDBError."""

    def __init__(self, api: FakeFdbApi) -> None:
        self._api = api
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._result: Any = None
        self._error: FDBError | None = None
        self._callbacks: list[Callable[[Any], None]] = []

    def is_ready(self) -> bool:
        return self._done.is_set()

    def on_ready(self, callback: Callable[[Any], None]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        # Ready already: libfdb_c calls back at once, on the calling thread.
        self._api._run_callback(callback, self)

    def _complete(
        self, result: Any, error: FDBError | None
    ) -> tuple[bool, list[Callable[[Any], None]]]:
        """Set the outcome unless already set; say whether it was, and whom to call back."""
        with self._lock:
            if self._done.is_set():
                return False, []
            self._result, self._error = result, error
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
            return True, callbacks

    def _outcome(self) -> Any:
        if not self._done.is_set():
            # The binding blocks here; the trio backend must never get here early.
            self._api.blocking_waits += 1
            self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result

    def wait(self) -> Any:
        return self._outcome()

    def cancel(self) -> None:
        """As fdb_future_cancel: an unfinished future fails with 1101 operation_cancelled."""
        cancelled, callbacks = self._complete(None, FDBError(1101))
        if cancelled:
            self._api.cancelled_futures += 1
            # Callbacks of a cancelled future still run, from the network thread.
            self._api._dispatch(self, callbacks)


class FakeValue(FakeFuture):
    """As the binding's Value: `wait()` returns the future itself; `.value` is bytes or None."""

    def wait(self) -> FakeValue:
        self._outcome()
        return self

    @property
    def value(self) -> bytes | None:
        return self._outcome()

    def present(self) -> bool:
        return self.value is not None
