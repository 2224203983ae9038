"""A store counts what its transactions met (commits, and each retry by its cause), and
/metrics reports it: the number that says whether writers of one key keep meeting."""

from __future__ import annotations

import trio

from kelpie_trio.nursery.metrics import RuntimeMetrics
from kelpie_trio.storage import MemoryStore
from kelpie_trio.storage.base import Transaction


async def test_commits_and_conflict_retries_are_counted_and_scraped(
    nursery: trio.Nursery,
) -> None:
    store = MemoryStore()
    await nursery.start(store.run)
    metrics = RuntimeMetrics()
    metrics.watch_store(store)
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
    assert store.counts["read"] == 1  # the read back: it wrote nothing
    scraped = metrics.render().decode()
    assert "kelpie_store_commits_total 2.0" in scraped
    assert "kelpie_store_read_transactions_total 1.0" in scraped
    assert 'error="read"' not in scraped  # a read is not a retry
    assert 'kelpie_store_retries_total{error="NotCommitted"} 1.0' in scraped
