"""What a real FoundationDB cluster does that an instant, well-behaved one does not.

Each test runs the real backend on the strict fake binding (tests/storage/fake_fdb.py)
and covers one way the backend would break on a cluster (issue 22): reads failing
with "maybe committed" codes during an upgrade, a cluster that never answers, a
client library older than the binding, FDB's own way of counting a transaction's
size, virtual time jumping while trio waits on the network thread, opening a bad
cluster file, and commits cancelled in flight.
"""

from __future__ import annotations

import random
import sys
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from kelpie_trio.storage import (
    CommitTimedOut,
    MemoryStore,
    StoreError,
    Transaction,
    TransactionTimedOut,
    TransactionTooLarge,
    foundationdb,
    refused_for_good,
)
from kelpie_trio.storage.foundationdb import FdbError, FdbStore, library_mismatch
from kelpie_trio.storage.limits import MAX_TRANSACTION_BYTES
from tests.storage.fake_fdb import FakeFdbApi
from tests.storage.helpers import lone_dispatcher, put, read


async def _open(nursery: trio.Nursery, api: FakeFdbApi, *, limit: float = 10.0) -> FdbStore:
    store = FdbStore(cluster_file=None, fdb_api=api)
    store.transaction_timeout = limit
    await nursery.start(store.run)
    return store


# -- 1. a read's "maybe committed" error is an ordinary retry --------------------------


@pytest.mark.parametrize("code", [1039, 1007, 1009])
async def test_a_read_failing_during_an_upgrade_is_retried_and_applied_once(
    nursery: trio.Nursery, code: int
) -> None:
    """The client cancels reads in flight with 1039 cluster_version_changed during an
    upgrade. Only a commit has an unknown result: a read's 1039 is retried like 1007
    or 1009, without looking for the marker of an attempt that never wrote one."""
    api = FakeFdbApi()
    store = await _open(nursery, api)
    await put(store, {b"balance": b"0"})
    calls = 0

    async def deposit(tr: Transaction) -> None:
        nonlocal calls
        calls += 1
        balance = int(await tr.get(b"balance") or b"0")
        tr.set(b"balance", str(balance + 10).encode())

    api.inject_read_error(code)
    await store.transact(deposit)
    assert calls == 2
    assert await read(store, b"balance") == b"10"


# -- 2. a cluster that does not answer is an error within the timeout ------------------


async def test_dead_coordinators_fail_within_the_timeout(nursery: trio.Nursery) -> None:
    api = FakeFdbApi()
    store = await _open(nursery, api, limit=0.2)
    api.disconnect()
    started = trio.current_time()
    with trio.fail_after(5), pytest.raises(TransactionTimedOut, match="Nothing was committed"):
        await read(store, b"k")
    assert trio.current_time() - started < 1.0


async def test_the_timeout_spans_every_retry(nursery: trio.Nursery) -> None:
    """FDB keeps a transaction's timeout across on_error (API 610+): a transaction
    that keeps conflicting ends at the timeout, not after its 100 attempts."""
    # Backoffs far shorter than the timeout: only a timeout that on_error keeps ends it.
    api = FakeFdbApi(initial_backoff=0.02, max_backoff=0.04)
    store = await _open(nursery, api, limit=0.3)
    for _ in range(150):
        api.inject_commit_error(1020)

    async def write(tr: Transaction) -> None:
        tr.set(b"k", b"v")

    started = trio.current_time()
    with trio.fail_after(10), pytest.raises(TransactionTimedOut) as raised:
        await store.transact(write)
    assert trio.current_time() - started < 1.5
    assert refused_for_good(raised.value)  # answered now (503), not routed again
    assert await read(store, b"k") is None


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "lost"])
async def test_a_commit_cut_short_by_the_timeout_has_an_unknown_outcome(
    nursery: trio.Nursery, landed: bool
) -> None:
    api = FakeFdbApi()
    store = await _open(nursery, api)
    api.inject_commit_error(1031, applied=landed)

    async def write(tr: Transaction) -> None:
        tr.set(b"k", b"v")

    with pytest.raises(CommitTimedOut, match="may or may not have landed"):
        await store.transact(write)
    assert await read(store, b"k") == (b"v" if landed else None)


async def test_a_timeout_after_an_unknown_commit_says_it_may_have_landed(
    nursery: trio.Nursery,
) -> None:
    # The backoff after the 1021 outlasts the timeout: on_error answers 1031.
    api = FakeFdbApi(initial_backoff=0.4)
    store = await _open(nursery, api, limit=0.1)
    api.inject_commit_error(1021, applied=True)

    async def write(tr: Transaction) -> None:
        tr.set(b"k", b"v")

    with trio.fail_after(5), pytest.raises(CommitTimedOut, match="may or may not have landed"):
        await store.transact(write)


# -- 3. a client library older than the binding ----------------------------------------


async def test_a_client_library_older_than_the_binding_is_refused_clearly(
    nursery: trio.Nursery,
) -> None:
    api = FakeFdbApi(library_api_version=730)
    assert "supports API version 730 at most" in (library_mismatch(api) or "")
    store = FdbStore(cluster_file=None, fdb_api=api)
    with pytest.raises(StoreError, match=r"730 at most.*needs 800.*foundationdb>=7\.3,<7\.4"):
        await nursery.start(store.run)
    assert library_mismatch(FakeFdbApi()) is None


def test_without_libfdb_c_the_reason_is_a_sentence() -> None:
    reason = foundationdb.fdb_unavailable_reason()
    if reason is None:
        pytest.skip("this machine has a working libfdb_c")
    assert "libfdb_c" in reason
    assert not foundationdb.fdb_available()


# -- 4. sizes counted as FoundationDB counts them ------------------------------------


def _key(i: int) -> bytes:
    return b"size/%034d" % i  # 40 bytes


def _random_ops(rng: random.Random) -> list[tuple]:
    """Random reads, then random writes. (Reads after writes differ in a way that only
    makes the store stricter: FDB takes no read conflict on keys a transaction wrote
    itself, base.py does for those inside a range read.)"""
    ops: list[tuple] = []
    for _ in range(rng.randrange(1, 40)):
        a, b = sorted(rng.sample(range(60), 2))
        kind = rng.choice(["set", "clear", "clear_range", "add", "read"])
        ops.append((kind, _key(a), _key(b), b"v" * rng.randrange(0, 50)))
    return sorted(ops, key=lambda op: op[0] != "read")


@pytest.mark.parametrize("seed", range(20))
async def test_the_store_counts_a_transactions_size_as_the_fake_cluster(
    nursery: trio.Nursery, seed: int
) -> None:
    """Two independent countings, base.py's and the fake binding's (NativeAPI's rule:
    mutations plus coalesced read and write conflict ranges), agree on random work."""
    rng = random.Random(seed)
    api = FakeFdbApi()
    fdb_store = await _open(nursery, api)
    memory = MemoryStore()
    await put(memory, {_key(i): b"x" for i in range(0, 60, 3)})
    await put(fdb_store, {_key(i): b"x" for i in range(0, 60, 3)})
    mem_tr = memory.create_transaction()
    fake_tr = fdb_store.create_transaction()
    for kind, a, b, value in _random_ops(rng):
        for tr in (mem_tr, fake_tr):
            if kind == "set":
                tr.set(a, value)
            elif kind == "clear":
                tr.clear(a)
            elif kind == "clear_range":
                tr.clear_range(a, b)
            elif kind == "add":
                tr.add(a, 3)
            else:
                await tr.get_range(a, b)
    assert mem_tr._commit_request().size() == fake_tr._tr.size()


def test_sizes_of_single_operations_follow_fdbs_rule() -> None:
    from kelpie_trio.storage.base import CommitRequest, Mutation, MutationKind

    k, v = b"k" * 40, b"v" * 40
    one = CommitRequest(None, [], [], [Mutation(MutationKind.SET, k, v)])
    assert one.size() == 40 + 40 + (2 * 40 + 1)  # the mutation and its write conflict
    clear = CommitRequest(None, [], [], [Mutation(MutationKind.CLEAR, k)])
    assert clear.size() == 2 * (2 * 40 + 1)  # [k, k + \x00) as mutation and as conflict
    read_too = CommitRequest(1, [(k, k + b"\x00")], [], [Mutation(MutationKind.SET, k, v)])
    assert read_too.size() == one.size() + 2 * 40 + 1


async def test_120k_small_writes_are_refused_as_fdb_refuses_them(nursery: trio.Nursery) -> None:
    """9.6 MB of keys and values, 19.3 MB as FDB counts: refused with 2101 by the fake
    cluster itself, and by the store before it asks (the conformance suite checks the
    same on every backend)."""
    api = FakeFdbApi()
    store = await _open(nursery, api)
    fdb_tr = store.create_transaction()
    for i in range(120_000):
        fdb_tr._tr.set(_key(i), b"v" * 40)
    assert fdb_tr._tr.size() > MAX_TRANSACTION_BYTES
    fdb_tr._has_writes = True
    with pytest.raises(TransactionTooLarge) as raised:
        await fdb_tr.commit()
    assert raised.value.__cause__.code == 2101  # type: ignore[union-attr]
    assert api.commits == 0


async def test_two_records_of_the_service_budget_still_fit_one_transaction() -> None:
    """service/limits.py lets one transaction write two records of MAX_RECORD_BYTES
    (chunked): with FDB's counting, they and their keys' conflict ranges still fit,
    with room for the small records beside them."""
    from kelpie_trio.service.limits import MAX_RECORD_BYTES
    from kelpie_trio.storage import keys
    from kelpie_trio.storage.chunks import set_blob

    tr = MemoryStore().create_transaction()
    for n in range(2):
        agent_id = f"agent-{n:08d}-0000-4000-8000-000000000000"
        set_blob(tr, keys.AGENTS.pack((agent_id,)), b"x" * MAX_RECORD_BYTES)
    size = tr._commit_request().size()  # type: ignore[attr-defined]
    assert MAX_TRANSACTION_BYTES - size > 900_000, size


# -- 5. virtual time and the network thread -----------------------------------------------


async def test_waiting_on_the_cluster_does_not_age_a_transaction_under_autojump(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While every task waits on the network thread, the autojump clock jumps to the
    next deadline (the store's 60 s marker sleep): that must not make a transaction
    of two quick reads 'older than five seconds'."""
    api = FakeFdbApi(latency=0.005)
    async with trio.open_nursery() as nursery:
        store = await _open(nursery, api)
        await put(store, {b"a": b"1", b"b": b"2"})
        started = trio.current_time()

        async def two_reads(tr: Transaction) -> tuple[bytes | None, bytes | None]:
            first = await tr.get(b"a")
            second = await tr.get(b"b")
            tr.set(b"c", b"3")
            return first, second

        assert await store.transact(two_reads) == (b"1", b"2")
        assert trio.current_time() - started > 5  # virtual time did jump meanwhile
        assert api.retries == 0  # and no attempt was lost to a spurious TransactionTooOld
        await store.aclose()


# -- 6. opening, loading, cancelled commits -------------------------------------------------


@pytest.mark.parametrize(("content", "code"), [(None, 1515), ("not a connection string", 2104)])
async def test_a_bad_cluster_file_is_a_store_error_naming_it(
    nursery: trio.Nursery, tmp_path: Path, content: str | None, code: int
) -> None:
    path = tmp_path / "fdb.cluster"
    if content is not None:
        path.write_text(content)
    store = FdbStore(cluster_file=str(path), fdb_api=FakeFdbApi())
    with pytest.raises(FdbError, match=f"cannot open FoundationDB with {path}") as raised:
        await nursery.start(store.run)
    assert (raised.value.code, raised.value.retryable) == (code, False)


async def test_the_client_library_is_loaded_off_the_trio_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeFdbApi()
    checked_on: list[int] = []

    def reason() -> None:
        checked_on.append(threading.get_ident())  # where libfdb_c would be loaded

    monkeypatch.setattr(foundationdb, "fdb_unavailable_reason", reason)
    monkeypatch.setattr(foundationdb, "fdb_available", lambda: reason() is None)
    monkeypatch.setitem(sys.modules, "fdb", api)  # `import fdb` gets the fake
    store = FdbStore(cluster_file=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.aclose()
    trio_thread = threading.get_ident()
    assert checked_on and trio_thread not in checked_on
    assert api.library_threads and trio_thread not in api.library_threads


async def test_a_commit_cancelled_before_it_completes_never_lands(nursery: trio.Nursery) -> None:
    api = FakeFdbApi()
    store = await _open(nursery, api)

    async def write(tr: Transaction) -> None:
        tr.set(b"k", b"v")

    api.pause()  # the cluster has not got to it yet
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as inner:
            inner.start_soon(store.transact, write)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    api.resume()
    assert await read(store, b"k") is None


async def test_a_commit_cancelled_after_the_cluster_applied_it_has_landed(
    nursery: trio.Nursery,
) -> None:
    """The other half: cancelling a commit does not take it back. A caller that
    cancels `transact` while it commits cannot assume either outcome."""
    api = FakeFdbApi()
    store = await _open(nursery, api)

    async def write(tr: Transaction) -> None:
        tr.set(b"k", b"v")

    api.pause(replies_only=True)  # the cluster applies; the reply is held
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as inner:
            inner.start_soon(store.transact, write)
            assert await trio.to_thread.run_sync(api.commit_applied.wait, 5)
            scope.cancel()
    api.resume()
    assert await read(store, b"k") == b"v"


async def test_an_unreachable_cluster_is_a_503_at_the_api_within_the_timeout(
    nursery: trio.Nursery,
) -> None:
    """Through the HTTP edge: a store that does not answer is a 503 with Retry-After
    after one timeout, not a request that hangs, nor one retried timeout after timeout."""
    from kelpie_trio.api.app import create_app

    api = FakeFdbApi()
    store = await _open(nursery, api, limit=0.3)
    app = create_app(store)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (
            await client.post("/v1/blocks/", json={"label": "x", "value": "y"})
        ).status_code == 200
        api.disconnect()
        started = trio.current_time()
        with trio.fail_after(10):
            response = await client.post("/v1/blocks/", json={"label": "x", "value": "y"})
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert "detail" in await response.get_json()
        assert trio.current_time() - started < 2.0
        api.disconnect(False)


async def test_an_unreachable_cluster_fails_a_message_after_one_timeout(
    nursery: trio.Nursery,
) -> None:
    """The runtime does not route a message again after a timeout (8 routing attempts
    would make the caller wait eight timeouts): the timeout already spanned the retries."""
    api = FakeFdbApi()
    store = await _open(nursery, api, limit=0.2)

    class Idle:
        """An actor with nothing to load: its activation is the lease's transaction
        (taken by the host), the one that meets the unreachable store."""

        def __init__(self, ctx: object) -> None:
            self.ctx = ctx

        async def on_activate(self) -> None:
            pass

        async def handle(self, message: object) -> None:
            raise AssertionError("no actor can run a message without the store")

        async def on_deactivate(self) -> None:
            pass

    dispatcher = lone_dispatcher(store, Idle)
    await nursery.start(dispatcher.run)
    api.disconnect()
    started = trio.current_time()
    with trio.fail_after(10), pytest.raises(TransactionTimedOut):
        await dispatcher.invoke("agent-00000000-0000-4000-8000-000000000000", {"x": 1})
    assert trio.current_time() - started < 0.6
    api.disconnect(False)
