"""The FoundationDB backend against a real cluster, for whoever has one.

    KELPIE_FDB_CLUSTER_FILE=/etc/foundationdb/fdb.cluster \\
        .venv/bin/python -m pytest tests/storage/test_fdb_real_cluster.py \\
        tests/storage/test_conformance.py -k "fdb and not fdb-fake" -v

Without a cluster file, or without a libfdb_c that serves the installed binding, every
test here skips and says which. The first test checks the client library itself;
the rest check what the fake binding can only imitate: range reads over FDB's own
batch sizes, its size rule, its timeout against dead coordinators, cancelled reads,
concurrent increments and atomic add. Every key lives under a random prefix that is
cleared afterwards, so a shared development cluster stays clean.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from kelpie_trio.storage import (
    NotCommitted,
    Transaction,
    TransactionTimedOut,
    TransactionTooLarge,
    decode_counter,
)
from kelpie_trio.storage.foundationdb import FdbStore, fdb_unavailable_reason
from tests.storage.helpers import put, read, read_range


@pytest.fixture
def cluster_file() -> str:
    # A sync fixture: under pytest-trio, a skip raised in async code loses its reason.
    path = os.environ.get("KELPIE_FDB_CLUSTER_FILE")
    if not path:
        pytest.skip("no FoundationDB cluster: set KELPIE_FDB_CLUSTER_FILE to run against one")
    reason = fdb_unavailable_reason()
    if reason is not None:
        pytest.fail(f"KELPIE_FDB_CLUSTER_FILE is set, but {reason}")
    return path


@pytest.fixture
async def store(cluster_file: str, nursery: trio.Nursery) -> AsyncIterator[FdbStore]:
    s = FdbStore(cluster_file=cluster_file)
    await nursery.start(s.run)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
async def prefix(store: FdbStore) -> AsyncIterator[bytes]:
    p = b"kelpie-test/" + os.urandom(6).hex().encode() + b"/"
    yield p

    async def clean(tr: Transaction) -> None:
        tr.clear_range(p, p + b"\xff")

    await store.transact(clean)


def test_the_installed_libfdb_c_serves_the_binding(cluster_file: str) -> None:
    import fdb

    assert fdb_unavailable_reason() is None
    newest = fdb.impl._capi.fdb_get_max_api_version()
    assert newest >= fdb.LATEST_API_VERSION, (newest, fdb.LATEST_API_VERSION)


async def test_round_trip_and_a_conflict(store: FdbStore, prefix: bytes) -> None:
    await put(store, {prefix + b"x": b"0"})
    assert await read(store, prefix + b"x") == b"0"
    t1, t2 = store.create_transaction(), store.create_transaction()
    assert await t1.get(prefix + b"x") == b"0"
    assert await t2.get(prefix + b"x") == b"0"
    t1.set(prefix + b"x", b"1")
    t2.set(prefix + b"x", b"2")
    await t1.commit()
    with pytest.raises(NotCommitted) as raised:
        await t2.commit()
    await t2.on_error(raised.value)  # FDB's backoff and reset
    assert await t2.get(prefix + b"x") == b"1"


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
async def test_range_reads_over_80_kb_page_correctly(
    store: FdbStore, prefix: bytes, reverse: bool
) -> None:
    """~200 kB in 2,000 rows: more than one of FDB's batches, with and without limits."""
    rows = {prefix + b"r/%05d" % i: bytes([i % 251]) * 100 for i in range(2_000)}
    keys = sorted(rows)
    for start in range(0, len(keys), 500):
        await put(store, {key: rows[key] for key in keys[start : start + 500]})
    expected = keys[::-1] if reverse else keys
    for limit in (0, 1, 999, 1_500, 2_000, 5_000):
        got = await read_range(store, prefix + b"r/", prefix + b"r0", limit=limit, reverse=reverse)
        want = expected[:limit] if limit else expected
        assert [key for key, _ in got] == want
        assert all(value == rows[key] for key, value in got)


async def test_120k_small_writes_are_refused_as_too_large(store: FdbStore, prefix: bytes) -> None:
    """9.6 MB of keys and values, ~19.3 MB as FDB counts: refused here as by every
    backend (test_conformance.py checks the others)."""

    async def writes(tr: Transaction) -> None:
        for i in range(120_000):
            tr.set((prefix + b"s/%08d" % i).ljust(40, b"."), b"v" * 40)

    with pytest.raises(TransactionTooLarge):
        await store.transact(writes)
    assert await read_range(store, prefix + b"s/", prefix + b"s0", limit=1) == []


@pytest.fixture
def dead_cluster_file(cluster_file: str, tmp_path: Path) -> str:
    # A coordinator nobody listens on (TEST-NET-1, reserved and unroutable): read
    # versions are asked for and never given, as with a cluster whose coordinators died.
    path = tmp_path / "dead.cluster"
    path.write_text("dead:dead@192.0.2.1:4500\n")
    return str(path)


async def test_dead_coordinators_fail_within_the_timeout(
    dead_cluster_file: str, nursery: trio.Nursery
) -> None:
    dead = dead_cluster_file
    store = FdbStore(cluster_file=dead)
    store.transaction_timeout = 2.0
    await nursery.start(store.run)
    started = trio.current_time()
    with trio.fail_after(20), pytest.raises(TransactionTimedOut):
        await read(store, b"kelpie-test/never")
    assert trio.current_time() - started < 5.0
    await store.aclose()


async def test_a_cancelled_read_leaves_its_transaction_usable(
    store: FdbStore, prefix: bytes
) -> None:
    await put(store, {prefix + b"k": b"v"})
    tr = store.create_transaction()
    with trio.move_on_after(0):  # cancelled at its first checkpoint, in flight or not
        await tr.get(prefix + b"k")
    assert await tr.get(prefix + b"k") == b"v"


async def test_25_concurrent_increments_are_exact(store: FdbStore, prefix: bytes) -> None:
    async def increment(tr: Transaction) -> None:
        value = int(await tr.get(prefix + b"counter") or b"0")
        tr.set(prefix + b"counter", str(value + 1).encode())
        tr.add(prefix + b"adds", 1)

    async with trio.open_nursery() as nursery:
        for _ in range(25):
            nursery.start_soon(store.transact, increment)
    assert await read(store, prefix + b"counter") == b"25"
    assert decode_counter(await read(store, prefix + b"adds")) == 25


async def test_adding_minus_one_to_a_missing_key(store: FdbStore, prefix: bytes) -> None:
    async def decrement(tr: Transaction) -> None:
        tr.add(prefix + b"missing", -1)

    await store.transact(decrement)
    assert decode_counter(await read(store, prefix + b"missing")) == -1
    assert await read(store, prefix + b"missing") == b"\xff" * 8
