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


async def test_a_trim_clears_from_past_the_last_one_not_from_the_streams_start() -> None:
    """What an earlier trim cleared is not cleared again: on SQLite a clear walks the
    range's tombstones, as many as the stream took within its collector's horizon."""
    store = MemoryStore()
    await store.transact(lambda tr: outbox.record(tr, A, passages=[f"p{i}" for i in range(6)]))
    await store.transact(lambda tr: outbox.heartbeat(tr, "i1", 0.0, ttl=60))
    cleared: list[tuple[bytes, bytes]] = []

    class Recording:
        def __init__(self, tr: Transaction) -> None:
            self.tr = tr

        def __getattr__(self, name: str):
            return getattr(self.tr, name)

        def clear_range(self, begin: bytes, end: bytes) -> None:
            cleared.append((begin, end))
            self.tr.clear_range(begin, end)

    for position in (2, 5):
        await store.transact(
            lambda tr, p=position: outbox.advance(Recording(tr), "i1", A, p, 1.0, ttl=60)
        )
    (first_begin, first_end), (begin, end) = cleared
    assert first_begin <= outbox.ENTRIES.pack((A, 1)) < first_end  # the first from the start
    assert outbox.ENTRIES.pack((A, 2)) < begin <= outbox.ENTRIES.pack((A, 3)) < end
    assert outbox.ENTRIES.pack((A, 5)) < end <= outbox.ENTRIES.pack((A, 6))

    async def left(tr: Transaction) -> list[int]:
        stream = outbox.ENTRIES.range((A,))
        rows = await tr.get_range(stream.start, stream.stop)
        return [outbox.ENTRIES.unpack(k)[1] for k, _ in rows]

    assert await store.transact(left) == [6]


async def test_each_thread_of_an_agent_has_a_stream_and_a_head_of_its_own() -> None:
    store = MemoryStore()
    conv = "conv-1"
    assert outbox.stream_of(A, A) == A and outbox.stream_of(A, conv) == f"{A}/{conv}"
    assert outbox.split_stream(f"{A}/{conv}") == (A, conv)
    assert outbox.split_stream("archive-9") == ("archive-9", None)

    async def write(tr: Transaction) -> None:
        await outbox.record_messages(tr, A, [(A, 0), (conv, 0), (conv, 1)])

    await store.transact(write)

    async def heads(tr: Transaction) -> tuple[int, int]:
        return await outbox.read_head(tr, A), await outbox.read_head(tr, f"{A}/{conv}")

    assert await store.transact(heads) == (1, 2)
    pending = await store.transact(lambda tr: outbox.read_pending(tr, f"{A}/{conv}", 0, 10))
    assert [c.ref for _, c in pending.entries] == [f"{conv}/0", f"{conv}/1"]


async def test_two_threads_writing_at_once_do_not_conflict_on_the_outbox() -> None:
    store = MemoryStore()
    first, second = store.create_transaction(), store.create_transaction()
    # Both read their heads before either commits: with one head per agent, the second
    # commit would be refused.
    await outbox.record_messages(first, A, [("conv-1", 0)])
    await outbox.record_messages(second, A, [("conv-2", 0)])
    await first.commit()
    await second.commit()


def test_a_stream_feeds_its_own_documents_only() -> None:
    agent, conv = A, f"{A}/conv-1"
    assert outbox.in_scope(agent, "passage", "passage-1")
    assert outbox.in_scope(agent, "message", "7")
    assert not outbox.in_scope(agent, "message", "conv-1/7")
    assert outbox.in_scope(conv, "message", "conv-1/7")
    assert not outbox.in_scope(conv, "message", "conv-10/7")  # a prefix is not its own
    assert not outbox.in_scope(conv, "message", "7")
    assert not outbox.in_scope(conv, "passage", "passage-1")
    # An older version's entry for a conversation's message, on the agent's stream.
    old = outbox.Change(outbox.MESSAGE, "conv-1/7")
    assert outbox.stream_of_change(agent, old) == conv
    assert outbox.stream_of_change(agent, outbox.Change(outbox.MESSAGE, 7)) == agent


async def test_a_gone_stream_is_dropped_whole_once_no_live_consumer_is_behind() -> None:
    store = MemoryStore()
    stream = f"{A}/conv-1"
    await store.transact(lambda tr: outbox.record(tr, stream, messages=["conv-1/0"]))
    await store.transact(lambda tr: outbox.record(tr, stream, resync=True))
    for index_id in ("i1", "i2"):
        await store.transact(lambda tr, i=index_id: outbox.heartbeat(tr, i, 0.0, ttl=60))

    async def advance(tr: Transaction, index_id: str) -> bool:
        return await outbox.advance(tr, index_id, stream, 2, 1.0, ttl=60, gone=True)

    assert not await store.transact(lambda tr: advance(tr, "i1"))  # i2 has not applied it
    assert await store.transact(lambda tr: advance(tr, "i2"))

    async def left(tr: Transaction) -> list:
        found = []
        for subspace in (outbox.ENTRIES, outbox.HEADS, outbox.TRIMMED, outbox.CURSORS):
            found += await tr.get_range(subspace.range().start, subspace.range().stop)
        return found

    assert await store.transact(left) == []
