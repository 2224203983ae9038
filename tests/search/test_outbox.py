"""The outbox in the store: positions, pending reads, cursors and trimming."""

from __future__ import annotations

from kelpie_trio.search import outbox
from kelpie_trio.storage import MemoryStore, keys
from kelpie_trio.storage.base import Transaction

A = "agent-a"


async def test_record_gives_consecutive_positions_per_agent() -> None:
    store = MemoryStore()

    async def write(tr: Transaction) -> int:
        return await outbox.record(tr, A, passages=["p1", "p2"], messages=[7])

    assert await store.transact(write) == 3
    assert await store.transact(write) == 6

    async def other(tr: Transaction) -> int:
        return await outbox.record(tr, "agent-b", resync=True)

    assert await store.transact(other) == 1

    async def pending(tr: Transaction) -> outbox.Pending:
        return await outbox.read_pending(tr, A, 2, limit=3)

    found = await store.transact(pending)
    assert [p for p, _ in found.entries] == [3, 4, 5] and found.more
    assert found.entries[0][1] == outbox.Change(outbox.MESSAGE, 7)


async def test_entries_are_trimmed_to_the_lowest_live_cursor() -> None:
    store = MemoryStore()

    async def write(tr: Transaction) -> int:
        return await outbox.record(tr, A, passages=[f"p{i}" for i in range(5)])

    await store.transact(write)

    async def step(tr: Transaction, index_id: str, position: int, now: float) -> int:
        await outbox.heartbeat(tr, index_id, now, ttl=60)
        assert not await outbox.advance(tr, index_id, A, position, now, ttl=60)
        return keys.unpack(await tr.get(outbox.TRIMMED.pack((A,))))[0]  # how far trimmed

    assert await store.transact(lambda tr: step(tr, "i1", 4, 0.0)) == 4  # alone: trims to 4
    await store.transact(lambda tr: outbox.heartbeat(tr, "i2", 1.0, ttl=60))
    # i2 is live and has not applied the agent: nothing more is trimmed.
    assert await store.transact(lambda tr: step(tr, "i1", 5, 2.0)) == 4
    assert await store.transact(lambda tr: step(tr, "i2", 5, 3.0)) == 5
    # A consumer silent past the TTL no longer holds anything back, and is forgotten.
    await store.transact(lambda tr: outbox.record(tr, A, passages=["p9"]))
    assert await store.transact(lambda tr: step(tr, "i1", 6, 100.0)) == 6

    async def left(tr: Transaction) -> list:
        return await tr.get_range(outbox.ENTRIES.range().start, outbox.ENTRIES.range().stop)

    assert await store.transact(left) == []
