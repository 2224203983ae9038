"""A store counts what its transactions met (commits, and each retry by its cause), and
/metrics reports it: the number that says whether writers of one key keep meeting."""

from __future__ import annotations

from pathlib import Path

import trio

from kelpie_trio.nursery.metrics import RuntimeMetrics
from kelpie_trio.storage import MemoryStore
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.sqlite import SqliteStore
from kelpie_trio.storage.sqlite_reads import ReadVersion
from kelpie_trio.storage.sqlite_writer import Get


async def _watched_memory_store(nursery: trio.Nursery) -> tuple[MemoryStore, RuntimeMetrics]:
    """A running MemoryStore and the /metrics that scrape its counts."""
    store = MemoryStore()
    await nursery.start(store.run)
    metrics = RuntimeMetrics()
    metrics.watch_store(store)
    return store, metrics


async def test_commits_and_conflict_retries_are_counted_and_scraped(
    nursery: trio.Nursery,
) -> None:
    store, metrics = await _watched_memory_store(nursery)
    first_read = trio.Event()
    other_done = trio.Event()
    attempts = 0

    async def slow_increment(tr: Transaction) -> None:
        nonlocal attempts
        attempts += 1
        value = await tr.get(b"n")
        if attempts == 1:  # the other writer commits between this read and this commit
            first_read.set()
            await other_done.wait()
        tr.set(b"n", str(int(value or b"0") + 1).encode())

    async def other(tr: Transaction) -> None:
        tr.set(b"n", b"10")

    async def run_other() -> None:
        await first_read.wait()
        await store.transact(other)
        other_done.set()

    async with trio.open_nursery() as inner:
        inner.start_soon(run_other)
        await store.transact(slow_increment)
    assert attempts == 2  # the conflict made it run again
    assert await store.transact(lambda tr: tr.get(b"n")) == b"11"
    assert (store.counts["commit"], store.counts["NotCommitted"]) == (2, 1)
    assert store.counts["read_only"] == 1  # the read back: it wrote nothing
    scraped = metrics.render().decode()
    assert "kelpie_store_commits_total 2.0" in scraped
    assert "kelpie_store_read_only_total 1.0" in scraped
    assert 'error="read_only"' not in scraped  # a read is not a retry
    assert 'kelpie_store_retries_total{error="NotCommitted"} 1.0' in scraped


async def test_read_only_transactions_and_backend_reads_are_counted_and_scraped(
    nursery: trio.Nursery,
) -> None:
    store, metrics = await _watched_memory_store(nursery)

    async def write_then_read_back(tr: Transaction) -> None:
        assert await tr.get(b"a") is None  # the backend: one read
        tr.set(b"a", b"1")
        assert await tr.get(b"a") == b"1"  # its own write: no round trip

    async def two_reads(tr: Transaction) -> None:
        await tr.get(b"a")
        await tr.get_range(b"a", b"b")

    await store.transact(write_then_read_back)
    await store.transact(two_reads)
    await store.transact(two_reads)
    counts = store.counts
    assert (counts["commit"], counts["read_only"], counts["reads"]) == (1, 2, 5)
    scraped = metrics.render().decode()
    assert "kelpie_store_read_only_total 2.0" in scraped
    assert "kelpie_store_reads_total 5.0" in scraped
    assert "kelpie_store_retries_total{" not in scraped  # the new keys are no retries


async def test_sqlite_batches_and_thread_hops_are_scraped(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "kelpie.db")
    await nursery.start(store.run)
    metrics = RuntimeMetrics()
    metrics.watch_store(store)
    batches, hops = store.stats.batches, store.stats.hops

    async def one_write(tr: Transaction) -> None:
        tr.set(b"a", b"1")

    await store.transact(one_write)
    assert store.stats.batches == batches + 1  # one commit, one batch, on the loop
    assert store.stats.hops == hops
    await store._submit(Get(ReadVersion(), b"a"))  # a queued read: a batch in the writer thread
    assert (store.stats.batches, store.stats.hops) == (batches + 2, hops + 1)
    scraped = metrics.render().decode()
    assert f"kelpie_store_batches_total {float(batches + 2)}" in scraped
    assert f"kelpie_store_hops_total {float(hops + 1)}" in scraped
    assert "kelpie_store_batches_total" not in _scraped_memory_store()
    assert "kelpie_store_hops_total" not in _scraped_memory_store()


async def test_sqlite_slow_inline_commits_are_scraped(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "kelpie.db")
    store.slow_commit_s = -1.0  # every inline COMMIT counts as slow
    store.slow_commit_per_write_s = 0.0
    await nursery.start(store.run)
    metrics = RuntimeMetrics()
    metrics.watch_store(store)

    async def one_write(tr: Transaction) -> None:
        tr.set(b"a", b"1")

    await store.transact(one_write)
    assert store.stats.slow_inline_commits == 1
    await store.transact(one_write)  # held off the loop: in the thread, not counted
    assert store.stats.slow_inline_commits == 1
    scraped = metrics.render().decode()
    assert "kelpie_store_slow_inline_commits_total 1.0" in scraped
    assert "kelpie_store_slow_inline_commits_total" not in _scraped_memory_store()


def _scraped_memory_store() -> str:
    metrics = RuntimeMetrics()
    metrics.watch_store(MemoryStore())
    return metrics.render().decode()
