"""The FoundationDB backend's own logic, against the fake binding (tests/storage/fake_fdb.py).

The conformance suite (test_conformance.py, params fdb-fake and fdb) proves the
backend keeps the store contract; these tests look at what only this backend
has: the trio bridge over futures completed on another thread, cancellation,
the mapping of FDB's error codes, `on_error` driving FDB's own retry, range
paging, opening (API version, lazy import). What a real cluster does that an
instant, well-behaved one does not (upgrades, timeouts, sizes, latency) is in
test_fdb_cluster_faults.py; the tests against a real cluster are in
test_fdb_real_cluster.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from kelpie_trio.storage import (
    CommitTimedOut,
    CommitUnknownResult,
    KeyTooLarge,
    NotCommitted,
    StorageUnavailable,
    StoreClosed,
    StoreError,
    Transaction,
    TransactionTimedOut,
    TransactionTooLarge,
    TransactionTooOld,
    ValueTooLarge,
    decode_counter,
    refused_for_good,
)
from kelpie_trio.storage.foundationdb import (
    FdbError,
    FdbStore,
    fdb_available,
    map_fdb_error,
)
from kelpie_trio.storage.limits import MAX_VALUE_BYTES
from tests.storage.fake_fdb import FakeFdbApi, FDBError
from tests.storage.helpers import put, read


@pytest.fixture
def api() -> FakeFdbApi:
    return FakeFdbApi()


@pytest.fixture
async def fdb_store(api: FakeFdbApi, nursery: trio.Nursery) -> AsyncIterator[FdbStore]:
    store = FdbStore(cluster_file=None, fdb_api=api)
    await nursery.start(store.run)
    try:
        yield store
    finally:
        await store.aclose()


# -- opening ------------------------------------------------------------------------------


def test_module_imports_without_loading_libfdb_c() -> None:
    # A fresh interpreter: importing the backend must not touch fdb.impl (libfdb_c).
    code = (
        "import sys, kelpie_trio.storage.foundationdb as m; "
        "assert 'fdb.impl' not in sys.modules, 'fdb.impl imported eagerly'; "
        "assert isinstance(m.fdb_available(), bool)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_real_binding_without_libfdb_c_fails_clearly(nursery: trio.Nursery) -> None:
    if fdb_available():
        return  # this machine has the library: nothing to refuse (the cluster test covers it)
    store = FdbStore(cluster_file="/nonexistent/fdb.cluster")
    with pytest.raises(StoreError, match="libfdb_c"):
        await nursery.start(store.run)


async def test_create_transaction_needs_run_and_refuses_after_close(api: FakeFdbApi) -> None:
    store = FdbStore(cluster_file=None, fdb_api=api)
    with pytest.raises(RuntimeError, match="not open"):
        store.create_transaction()
    ended = trio.Event()

    async def run_then_note(task_status: trio.TaskStatus[None]) -> None:
        await store.run(task_status=task_status)
        ended.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(run_then_note)
        assert isinstance(store.create_transaction(), Transaction)
        await store.aclose()
        with trio.fail_after(5):
            await ended.wait()  # aclose ended the background task; the nursery can close
    with pytest.raises(StoreClosed):
        store.create_transaction()


async def test_api_version_is_chosen_once_per_process(api: FakeFdbApi) -> None:
    async with trio.open_nursery() as nursery:
        first = FdbStore(cluster_file=None, fdb_api=api)
        second = FdbStore(cluster_file=None, fdb_api=api)  # same version: fine
        await nursery.start(first.run)
        await nursery.start(second.run)
        assert api.get_api_version() == 730
        other = FdbStore(cluster_file=None, fdb_api=api, api_version=710)
        with pytest.raises(StoreError, match="already 730"):
            await nursery.start(other.run)
        await first.aclose()
        await second.aclose()


# -- the bridge ---------------------------------------------------------------------------


async def test_callbacks_come_from_the_network_thread_and_wake_trio(
    api: FakeFdbApi, fdb_store: FdbStore
) -> None:
    await put(fdb_store, {b"k": b"v"})
    tr = fdb_store.create_transaction()
    got: list[bytes | None] = []

    async def reader() -> None:
        got.append(await tr.get(b"k"))

    api.pause()  # the get stays in flight until the trio task is surely waiting
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        api.resume()
    assert got == [b"v"]
    trio_thread = threading.get_ident()
    assert trio_thread not in api.callback_threads
    assert sum(api.callback_threads.values()) > 0
    assert api.blocking_waits == 0  # the trio thread never blocked in future.wait()


async def test_cancelling_a_waiting_get_cancels_its_future(
    api: FakeFdbApi, fdb_store: FdbStore
) -> None:
    await put(fdb_store, {b"k": b"v"})
    tr = fdb_store.create_transaction()
    api.pause()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tr.get, b"k")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert api.cancelled_futures == 1
    api.resume()  # the cancelled future's callback now fires, and finds nobody waiting
    # The transaction is still usable after one of its reads was cancelled.
    assert await tr.get(b"k") == b"v"
    assert api.callback_errors == []


def test_a_callback_after_the_trio_run_has_ended_is_harmless() -> None:
    api = FakeFdbApi()
    tokens: list[trio.lowlevel.TrioToken] = []

    async def main() -> None:
        store = FdbStore(cluster_file=None, fdb_api=api)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            tokens.append(trio.lowlevel.current_trio_token())
            tr = store.create_transaction()
            api.pause()
            nursery.start_soon(tr.get, b"k")
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()

    trio.run(main)
    with pytest.raises(trio.RunFinishedError):  # what the late callback meets
        tokens[0].run_sync_soon(lambda: None)
    before = sum(api.callback_threads.values())
    api.resume()
    deadline = time.monotonic() + 5
    while sum(api.callback_threads.values()) == before:
        assert time.monotonic() < deadline, "the held callback never ran"
        time.sleep(0.001)
    time.sleep(0.01)  # let it finish
    assert api.callback_errors == []


async def test_many_concurrent_transactions_over_a_slow_network(nursery: trio.Nursery) -> None:
    api = FakeFdbApi(latency=0.002)
    store = FdbStore(cluster_file=None, fdb_api=api)
    await nursery.start(store.run)

    async def increment(tr: Transaction) -> None:
        value = int(await tr.get(b"counter") or b"0")
        tr.set(b"counter", str(value + 1).encode())
        tr.add(b"adds", 1)

    async with trio.open_nursery() as inner:
        for _ in range(25):
            inner.start_soon(store.transact, increment)
    assert await read(store, b"counter") == b"25"
    assert decode_counter(await read(store, b"adds")) == 25
    assert api.retries > 0  # they did conflict, and FDB's on_error drove the retries
    assert api.blocking_waits == 0
    await store.aclose()


# -- retries through FDB's on_error ------------------------------------------------------


async def test_an_injected_conflict_is_retried_and_applied_once(
    api: FakeFdbApi, fdb_store: FdbStore
) -> None:
    calls = 0

    async def fn(tr: Transaction) -> None:
        nonlocal calls
        calls += 1
        value = int(await tr.get(b"n") or b"0")
        tr.set(b"n", str(value + 1).encode())

    api.inject_commit_error(1020)
    await fdb_store.transact(fn)
    assert calls == 2
    assert api.retries == 1
    assert await read(fdb_store, b"n") == b"1"


@pytest.mark.parametrize(
    ("code", "applied", "calls_expected"),
    [(1021, True, 1), (1021, False, 2), (1039, True, 1)],
    ids=["1021-landed", "1021-lost", "1039-landed"],
)
async def test_maybe_committed_errors_apply_exactly_once(
    api: FakeFdbApi, fdb_store: FdbStore, code: int, applied: bool, calls_expected: int
) -> None:
    calls = 0

    async def deposit(tr: Transaction) -> int:
        nonlocal calls
        calls += 1
        balance = int(await tr.get(b"balance") or b"0")
        tr.set(b"balance", str(balance + 10).encode())
        return calls

    api.inject_commit_error(code, applied=applied)
    result = await fdb_store.transact(deposit)
    # Landed: the retry found the first attempt's marker and returned its result.
    assert (result, calls) == ((1 if applied else 2), calls_expected)
    assert await read(fdb_store, b"balance") == b"10"


async def test_on_error_takes_our_own_errors(api: FakeFdbApi, fdb_store: FdbStore) -> None:
    tr = fdb_store.create_transaction()
    tr.set(b"a", b"1")
    # Retryable, no FDB cause: handed to FDB by code (1021 is FDB's too).
    await tr.on_error(CommitUnknownResult("raised by a wrapper"))
    assert not tr.has_writes  # reset for the next attempt
    # Retryable, but with a code of ours that FDB does not know as retryable:
    # asked as a plain conflict retry instead.
    tr.set(b"a", b"1")
    await tr.on_error(StorageUnavailable())
    assert api.retries == 2
    assert not tr.has_writes
    # Not retryable: raised as it is, FDB not asked.
    error = KeyTooLarge("too long")
    with pytest.raises(KeyTooLarge) as raised:
        await tr.on_error(error)
    assert raised.value is error
    assert api.retries == 2


async def test_on_error_surfaces_fdbs_refusal_mapped(fdb_store: FdbStore) -> None:
    tr = fdb_store.create_transaction()
    # Claimed retryable, but caused by an FDB code FDB will not retry: FDB says no.
    error = FdbError(2004, "outside the legal range", retryable=True)
    error.__cause__ = FDBError(2004)
    with pytest.raises(FdbError) as raised:
        await tr.on_error(error)
    assert raised.value.code == 2004
    assert not raised.value.retryable
    assert isinstance(raised.value.__cause__, FDBError)


# -- error mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "committing", "kind", "retryable"),
    [
        (1020, True, NotCommitted, True),
        (1021, True, CommitUnknownResult, True),
        (1039, True, CommitUnknownResult, True),  # cluster_version_changed: maybe committed
        (1039, False, FdbError, True),  # ...but from a read, nothing was committed
        (1007, False, TransactionTooOld, True),
        (1007, True, TransactionTooOld, True),
        (2101, True, TransactionTooLarge, False),
        (2102, True, KeyTooLarge, False),
        (2103, True, ValueTooLarge, False),
        (1009, False, FdbError, True),  # future_version: retryable, no name of ours
        (1031, False, TransactionTimedOut, False),  # FDB does not retry it: neither do we
        (1031, True, CommitTimedOut, False),  # ...and a commit it cut short may have landed
        (2004, False, FdbError, False),  # key_outside_legal_range
        (4000, False, FdbError, False),
    ],
)
def test_fdb_error_codes_map_to_store_errors(
    api: FakeFdbApi, code: int, committing: bool, kind: type[StoreError], retryable: bool
) -> None:
    mapped = map_fdb_error(api, FDBError(code), committing=committing)
    assert type(mapped) is kind
    assert mapped.retryable is retryable
    assert f"fdb error {code}" in str(mapped)
    if kind is FdbError:
        assert mapped.code == code
    else:
        assert mapped.code == kind.code


async def test_a_non_retryable_fdb_error_surfaces_mapped(
    api: FakeFdbApi, fdb_store: FdbStore
) -> None:
    calls = 0

    async def write_system_key(tr: Transaction) -> None:
        nonlocal calls
        calls += 1
        tr.set(b"\xff/not-ours", b"x")  # within our limits; FDB refuses it at commit

    with pytest.raises(FdbError, match="Key outside legal range") as raised:
        await fdb_store.transact(write_system_key)
    assert (raised.value.code, raised.value.retryable, calls) == (2004, False, 1)
    assert isinstance(raised.value.__cause__, FDBError)

    tr = fdb_store.create_transaction()
    with pytest.raises(FdbError, match="Key outside legal range"):
        await tr.get(b"\xff/read")


async def test_a_cluster_that_stalls_on_full_disks_is_an_error_within_the_timeout(
    api: FakeFdbApi, nursery: trio.Nursery
) -> None:
    """FDB reports no disk-full error: its ratekeeper holds every transaction. The store
    sets the database's transaction timeout, so the caller hears 1031 in time, once,
    instead of waiting without end."""
    store = FdbStore(cluster_file=None, fdb_api=api)
    store.transaction_timeout = 0.2
    await nursery.start(store.run)
    assert api.transaction_timeout_ms == 200
    await put(store, {b"before": b"1"})
    api.throttle()
    attempts = 0

    async def write(tr: Transaction) -> None:
        nonlocal attempts
        attempts += 1
        await tr.get(b"before")
        tr.set(b"during", b"1")

    started = trio.current_time()
    with (
        trio.fail_after(5),
        pytest.raises(TransactionTimedOut, match="throttling writes") as raised,
    ):
        await store.transact(write)
    assert trio.current_time() - started < 2.0
    assert (raised.value.code, raised.value.retryable, attempts) == (1031, False, 1)
    assert refused_for_good(raised.value)  # answered now: not routed again nor restarted
    api.throttle(False)
    assert await read(store, b"during") is None
    await store.aclose()


async def test_fdbs_own_size_limit_maps_to_transaction_too_large(fdb_store: FdbStore) -> None:
    async def too_big(tr: Transaction) -> None:
        for i in range(101):
            tr.set(b"big%04d" % i, b"x" * MAX_VALUE_BYTES)

    with pytest.raises(TransactionTooLarge) as raised:
        await fdb_store.transact(too_big)
    cause = raised.value.__cause__
    assert isinstance(cause, FDBError) and cause.code == 2101  # FDB's verdict, mapped


async def test_fdbs_own_age_limit_maps_to_too_old_and_retries(nursery: trio.Nursery) -> None:
    now = [1000.0]
    api = FakeFdbApi(clock=lambda: now[0])
    store = FdbStore(cluster_file=None, fdb_api=api)
    await nursery.start(store.run)
    await put(store, {b"a": b"1"})
    tr = store.create_transaction()
    assert await tr.get(b"a") == b"1"
    now[0] += 6  # the cluster's clock, not trio's: only FDB can tell
    with pytest.raises(TransactionTooOld) as raised:
        await tr.get(b"a")
    assert isinstance(raised.value.__cause__, FDBError)
    await tr.on_error(raised.value)
    assert await tr.get(b"a") == b"1"  # a fresh read version after the reset
    await store.aclose()


# -- range reads --------------------------------------------------------------------------


async def test_range_reads_page_through_small_replies(api: FakeFdbApi, fdb_store: FdbStore) -> None:
    names = [b"a", b"b", b"c", b"d", b"e", b"f", b"g"]
    await put(fdb_store, {b"r/" + n: n for n in names})

    async def scan(limit: int, reverse: bool) -> list[bytes]:
        async def fn(tr: Transaction) -> list[bytes]:
            return [v for _, v in await tr.get_range(b"r/", b"r0", limit=limit, reverse=reverse)]

        return await fdb_store.transact(fn)

    before = api.range_requests
    assert await scan(0, False) == names
    assert api.range_requests - before == 4  # 7 rows in pages of 2
    assert await scan(0, True) == names[::-1]
    assert await scan(3, False) == names[:3]
    assert await scan(5, True) == names[::-1][:5]
    assert await scan(7, False) == names
    assert await scan(20, True) == names[::-1]

    async def with_local_writes(tr: Transaction) -> list[bytes]:
        tr.clear_range(b"r/b", b"r/e")
        tr.set(b"r/c", b"C")
        tr.add(b"r/z", 2)
        return [v for _, v in await tr.get_range(b"r/", b"r0", limit=4)]

    assert await fdb_store.transact(with_local_writes) == [b"a", b"C", b"e", b"f"]
    assert await scan(0, False) == [b"a", b"C", b"e", b"f", b"g", (2).to_bytes(8, "little")]


async def test_empty_and_inverted_ranges_read_nothing(fdb_store: FdbStore) -> None:
    tr = fdb_store.create_transaction()
    assert await tr.get_range(b"b", b"b") == []
    assert await tr.get_range(b"c", b"b") == []
    tr.clear_range(b"c", b"b")  # as on every backend: a no-op, not FDB's inverted_range
    assert not tr.has_writes
    with pytest.raises(ValueError, match="limit"):
        await tr.get_range(b"a", b"b", limit=-1)
