"""The store contract, run against every backend (see conftest.py).

FDB is the reference: what passes here on memory and SQLite behaves as it
would on a FoundationDB cluster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
import trio
import trio.testing

from kelpie_trio.storage import (
    KeyTooLarge,
    NotCommitted,
    Store,
    Transaction,
    TransactionTooLarge,
    TransactionTooOld,
    ValueTooLarge,
    decode_counter,
)
from kelpie_trio.storage.chunks import clear_blob, get_blob, set_blob
from kelpie_trio.storage.limits import MAX_KEY_BYTES, MAX_VALUE_BYTES
from tests.storage.flaky import FlakyCommitStore
from tests.storage.helpers import put, read, read_range

Key = Callable[[str], bytes]


# -- basic reads and writes ---------------------------------------------------


async def test_set_get_clear_round_trip(store: Store, k: Key) -> None:
    await put(store, {k("a"): b"1"})
    assert await read(store, k("a")) == b"1"
    assert await read(store, k("missing")) is None

    async def clear(tr: Transaction) -> None:
        tr.clear(k("a"))

    await store.transact(clear)
    assert await read(store, k("a")) is None


async def test_empty_value_is_not_missing(store: Store, k: Key) -> None:
    await put(store, {k("empty"): b""})
    assert await read(store, k("empty")) == b""


async def test_get_range_is_ordered_by_key_bytes(store: Store, k: Key) -> None:
    names = ["b", "a", "c", "ab", "b\x00", "B"]
    await put(store, {k(n): n.encode() for n in names})
    got = await read_range(store, k(""), k("\xff"))
    assert [key for key, _ in got] == sorted(k(n) for n in names)


async def test_get_range_end_is_exclusive_and_begin_inclusive(store: Store, k: Key) -> None:
    await put(store, {k(n): b"x" for n in "abcd"})
    got = await read_range(store, k("b"), k("d"))
    assert [key for key, _ in got] == [k("b"), k("c")]


async def test_get_range_limit_and_reverse(store: Store, k: Key) -> None:
    await put(store, {k(n): n.encode() for n in "abcdef"})
    assert [v for _, v in await read_range(store, k(""), k("z"), limit=2)] == [b"a", b"b"]
    assert [v for _, v in await read_range(store, k(""), k("z"), reverse=True)] == [
        n.encode() for n in "fedcba"
    ]
    assert [v for _, v in await read_range(store, k(""), k("z"), limit=3, reverse=True)] == [
        b"f",
        b"e",
        b"d",
    ]


async def test_clear_range_removes_only_the_range(store: Store, k: Key) -> None:
    await put(store, {k(n): b"x" for n in "abcde"})

    async def fn(tr: Transaction) -> None:
        tr.clear_range(k("b"), k("d"))

    await store.transact(fn)
    got = await read_range(store, k(""), k("z"))
    assert [key for key, _ in got] == [k("a"), k("d"), k("e")]


async def test_get_prefix_reads_a_tuple_subspace(store: Store, k: Key) -> None:
    from kelpie_trio.storage.keys import Subspace

    space = Subspace((k("space").decode(),))
    await put(store, {space.pack(("x", i)): str(i).encode() for i in range(3)})
    await put(store, {space.pack(("y",)): b"other"})

    async def fn(tr: Transaction) -> list[tuple[bytes, bytes]]:
        return await tr.get_prefix(space.pack(("x",)))

    assert [v for _, v in await store.transact(fn)] == [b"0", b"1", b"2"]


# -- read your writes -------------------------------------------------------------


async def test_reads_see_own_writes_before_commit(store: Store, k: Key) -> None:
    await put(store, {k("a"): b"old", k("b"): b"b", k("c"): b"c"})

    async def fn(tr: Transaction) -> tuple:
        tr.set(k("a"), b"new")
        tr.clear(k("b"))
        tr.set(k("d"), b"d")
        tr.add(k("n"), 3)
        tr.add(k("n"), 4)
        return (
            await tr.get(k("a")),
            await tr.get(k("b")),
            decode_counter(await tr.get(k("n"))),
            await tr.get_range(k("a"), k("e")),
        )

    a, b, n, rng = await store.transact(fn)
    assert (a, b, n) == (b"new", None, 7)
    assert rng == [(k("a"), b"new"), (k("c"), b"c"), (k("d"), b"d")]


async def test_range_limit_counts_after_local_clears(store: Store, k: Key) -> None:
    await put(store, {k(n): n.encode() for n in "abcdef"})

    async def fn(tr: Transaction) -> list[bytes]:
        tr.clear(k("a"))
        tr.clear_range(k("b"), k("d"))
        tr.set(k("c"), b"C")
        return [v for _, v in await tr.get_range(k(""), k("z"), limit=3)]

    assert await store.transact(fn) == [b"C", b"d", b"e"]


async def test_add_is_little_endian_and_signed(store: Store, k: Key) -> None:
    async def fn(tr: Transaction) -> None:
        tr.add(k("n"), 5)
        tr.add(k("m"), -2)

    await store.transact(fn)
    assert await read(store, k("n")) == (5).to_bytes(8, "little")
    assert decode_counter(await read(store, k("m"))) == -2


# -- conflicts ----------------------------------------------------------------------


async def test_conflicting_read_modify_write_loses(store: Store, k: Key) -> None:
    await put(store, {k("x"): b"0"})
    t1, t2 = store.create_transaction(), store.create_transaction()
    assert await t1.get(k("x")) == b"0"
    assert await t2.get(k("x")) == b"0"
    t1.set(k("x"), b"1")
    t2.set(k("x"), b"2")
    await t1.commit()
    with pytest.raises(NotCommitted):
        await t2.commit()
    assert await read(store, k("x")) == b"1"


async def test_range_read_conflicts_with_insert_into_the_range(store: Store, k: Key) -> None:
    await put(store, {k("a"): b"1"})
    t1, t2 = store.create_transaction(), store.create_transaction()
    assert len(await t1.get_range(k("a"), k("z"))) == 1
    t2.set(k("m"), b"new")
    await t2.commit()
    t1.set(k("count"), b"1")
    with pytest.raises(NotCommitted):
        await t1.commit()


async def test_disjoint_transactions_both_commit(store: Store, k: Key) -> None:
    await put(store, {k("a"): b"1", k("b"): b"1"})
    t1, t2 = store.create_transaction(), store.create_transaction()
    await t1.get(k("a"))
    await t2.get(k("b"))
    t1.set(k("a"), b"2")
    t2.set(k("b"), b"2")
    await t1.commit()
    await t2.commit()
    assert (await read(store, k("a")), await read(store, k("b"))) == (b"2", b"2")


async def test_blind_writes_and_atomic_adds_never_conflict(store: Store, k: Key) -> None:
    t1, t2 = store.create_transaction(), store.create_transaction()
    t1.set(k("x"), b"1")
    t2.set(k("x"), b"2")
    t1.add(k("n"), 1)
    t2.add(k("n"), 1)
    await t1.commit()
    await t2.commit()
    assert await read(store, k("x")) == b"2"
    assert decode_counter(await read(store, k("n"))) == 2


async def test_reads_are_a_consistent_snapshot(store: Store, k: Key) -> None:
    await put(store, {k("a"): b"1", k("b"): b"1"})
    t1 = store.create_transaction()
    assert await t1.get(k("a")) == b"1"
    await put(store, {k("a"): b"2", k("b"): b"2"})
    # FDB serves the old snapshot; a backend may instead fail fast, but never
    # show a mix of before and after.
    with contextlib.suppress(NotCommitted):
        assert await t1.get(k("b")) == b"1"


async def test_concurrent_increments_equal_a_serial_order(store: Store, k: Key) -> None:
    await put(store, {k("counter"): b"0"})

    async def increment(tr: Transaction) -> None:
        value = int(await tr.get(k("counter")) or b"0")
        tr.set(k("counter"), str(value + 1).encode())

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(store.transact, increment)
    assert await read(store, k("counter")) == b"20"


async def test_concurrent_transfers_conserve_the_total(store: Store, k: Key) -> None:
    accounts = [k(f"acct{i}") for i in range(4)]
    await put(store, {a: b"100" for a in accounts})

    def transfer(src: bytes, dst: bytes, amount: int):
        async def fn(tr: Transaction) -> None:
            s, d = int(await tr.get(src)), int(await tr.get(dst))
            tr.set(src, str(s - amount).encode())
            tr.set(dst, str(d + amount).encode())

        return fn

    async with trio.open_nursery() as nursery:
        for i in range(24):
            src, dst = accounts[i % 4], accounts[(i * 3 + 1) % 4]
            if src != dst:
                nursery.start_soon(store.transact, transfer(src, dst, i))
    values = [int(v) for _, v in await read_range(store, k("acct"), k("acct\xff"))]
    assert sum(values) == 400


# -- limits -------------------------------------------------------------------------


async def test_oversize_key_value_and_transaction_are_refused(store: Store, k: Key) -> None:
    tr = store.create_transaction()
    with pytest.raises(KeyTooLarge):
        tr.set(b"k" * (MAX_KEY_BYTES + 1), b"v")
    with pytest.raises(ValueTooLarge):
        tr.set(k("v"), b"v" * (MAX_VALUE_BYTES + 1))

    async def too_big(tr: Transaction) -> None:
        for i in range(101):
            tr.set(k(f"big{i:04}"), b"x" * MAX_VALUE_BYTES)

    with pytest.raises(TransactionTooLarge):
        await store.transact(too_big)
    assert await read_range(store, k("big"), k("big\xff")) == []


async def test_many_small_writes_are_counted_as_foundationdb_counts_them(
    store: Store, k: Key
) -> None:
    """120,000 sets of 40-byte keys and values: 9.6 MB of keys and values, but FDB
    counts each set's write conflict range too (2 * len(key) + 1): ~19.3 MB, refused
    with 2101. Every backend refuses it; half as many writes fit everywhere."""

    def key(i: int) -> bytes:
        return (k("s") + b"%08d" % i).ljust(40, b".")

    def writes(count: int):
        async def fn(tr: Transaction) -> None:
            for i in range(count):
                tr.set(key(i), b"v" * 40)

        return fn

    with pytest.raises(TransactionTooLarge):
        await store.transact(writes(120_000))
    assert await read(store, key(0)) is None
    await store.transact(writes(60_000))  # ~9.7 MB as FDB counts: accepted
    assert await read(store, key(59_999)) == b"v" * 40


async def test_limits_allow_values_at_the_limit(store: Store, k: Key) -> None:
    await put(store, {k("max"): b"v" * MAX_VALUE_BYTES})
    assert len(await read(store, k("max")) or b"") == MAX_VALUE_BYTES


async def test_transaction_older_than_five_seconds_is_too_old(
    store: Store, k: Key, autojump_clock: trio.testing.MockClock
) -> None:
    await put(store, {k("a"): b"1"})
    tr = store.create_transaction()
    await tr.get(k("a"))
    await trio.sleep(6)
    tr.set(k("a"), b"2")
    with pytest.raises(TransactionTooOld):
        await tr.commit()
    assert await read(store, k("a")) == b"1"


async def test_chunked_blobs_store_values_beyond_the_value_limit(store: Store, k: Key) -> None:
    big = bytes(range(256)) * 1400  # 358,400 bytes: four chunks
    prefix = k("blob")

    async def write(tr: Transaction, data: bytes) -> None:
        set_blob(tr, prefix, data)

    await store.transact(lambda tr: write(tr, big))
    assert await store.transact(lambda tr: get_blob(tr, prefix)) == big
    await store.transact(lambda tr: write(tr, b"small"))
    assert await store.transact(lambda tr: get_blob(tr, prefix)) == b"small"

    async def drop(tr: Transaction) -> None:
        clear_blob(tr, prefix)

    await store.transact(drop)
    assert await store.transact(lambda tr: get_blob(tr, prefix)) is None


# -- commit_unknown_result -----------------------------------------------------------


@pytest.mark.parametrize("landed", [True, False], ids=["commit-landed", "commit-lost"])
async def test_commit_unknown_result_is_applied_exactly_once(
    store: Store, k: Key, landed: bool
) -> None:
    flaky = FlakyCommitStore(store, unknown_commits=1, apply_before_failing=landed)
    calls = 0

    async def deposit(tr: Transaction) -> str:
        nonlocal calls
        calls += 1
        balance = int(await tr.get(k("balance")) or b"0")
        tr.set(k("balance"), str(balance + 10).encode())
        return f"deposited on call {calls}"

    result = await flaky.transact(deposit)
    assert flaky.unknown_raised == 1
    assert await read(store, k("balance")) == b"10"
    # If the first commit landed, the retry found its marker and returned its result.
    assert result == ("deposited on call 1" if landed else "deposited on call 2")
