"""The indexer sleeps until an outbox entry is committed through its store, not on a poll."""

from __future__ import annotations

import trio
import trio.testing

from kelpie_trio.env import Ticks
from kelpie_trio.nursery.metrics import RuntimeMetrics
from kelpie_trio.search import MemoryIndex, outbox
from kelpie_trio.search.indexer import Indexer, IndexerConfig
from kelpie_trio.storage import MemoryStore, keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import set_blob
from tests.calls import call_times

# A poll far longer than the test: only a wake can explain an applied entry.
QUIET = IndexerConfig(poll_interval=10_000.0, heartbeat_interval=20_000.0, settle=0.5)


async def _record(store: MemoryStore, agent_id: str) -> None:
    async def write(tr: Transaction) -> None:
        # An agent that exists (the record's content is not read): a deleted one's stream
        # would be dropped, and forgotten, once applied.
        set_blob(tr, keys.AGENTS.pack((agent_id,)), b"{}")
        await outbox.record(tr, agent_id, resync=True)

    await store.transact(write)


async def test_an_entry_committed_on_this_node_wakes_the_indexer_within_its_settle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    indexer = Indexer(store, store.env, MemoryIndex("i"), QUIET)
    async with trio.open_nursery() as nursery:
        await nursery.start(indexer.run)
        await trio.sleep(1.0)  # its first look (warm-up, scan) is over: it waits now
        started, applied = trio.current_time(), indexer.applied
        await _record(store, "agent-1")
        with trio.fail_after(1.0):  # MockClock: fails only if it waited for the poll
            while indexer.applied == applied:  # noqa: ASYNC110 - watching from outside
                await trio.sleep(0.01)
        assert QUIET.settle <= trio.current_time() - started < 1.0
        assert await indexer.index.position("agent-1") == 1
        nursery.cancel_scope.cancel()


async def test_an_idle_indexer_does_not_scan_between_polls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    indexer = Indexer(store, store.env, MemoryIndex("i"), QUIET)
    scans = call_times(indexer, "pending_streams")  # when each scan of the outbox began
    async with trio.open_nursery() as nursery:
        await nursery.start(indexer.run)
        await trio.sleep(5_000.0)  # virtual: half a poll
        assert len(scans) == 1  # the first look at start, and none since
        nursery.cancel_scope.cancel()


async def test_agents_behind_many_applied_ones_are_reached_while_entries_are_held_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Another live consumer that never advances keeps every entry from being trimmed, so
    the outbox fills with agents this index has applied already. A scan looks at a bounded
    number of agents; the scans go on from where the last stopped, so the agents behind
    them are still applied (a scan always starting from the first would stop short of
    them, and they would wait for entries nobody trims)."""
    store = MemoryStore()

    async def other_consumer(tr: Transaction) -> None:
        await outbox.heartbeat(tr, "other-index", store.env.now(), 600.0)

    await store.transact(other_consumer)
    agents = [f"agent-{n:02d}" for n in range(12)]
    for agent_id in agents:
        await _record(store, agent_id)
    config = IndexerConfig(poll_interval=10_000.0, heartbeat_interval=20_000.0, scan_agents=2)
    indexer = Indexer(store, store.env, MemoryIndex("i"), config)
    async with trio.open_nursery() as nursery:
        await nursery.start(indexer.run)
        await trio.sleep(1.0)  # far less than a poll: the scans alone must get there
        assert [await indexer.index.position(a) for a in agents] == [1] * len(agents)
        nursery.cancel_scope.cancel()


async def test_commits_within_the_settle_share_one_drain(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One client's turns a few tenths of a second apart: one scan and one batch for all."""
    store = MemoryStore()
    indexer = Indexer(store, store.env, MemoryIndex("i"), QUIET)
    scans = call_times(indexer, "pending_streams")  # when each scan of the outbox began
    async with trio.open_nursery() as nursery:
        await nursery.start(indexer.run)
        await trio.sleep(1.0)  # the first look is over
        assert len(scans) == 1
        for agent_id in ("agent-1", "agent-2", "agent-3"):
            await _record(store, agent_id)
            await trio.sleep(QUIET.settle / 4)
        await trio.sleep(QUIET.settle)
        assert len(scans) == 2  # one drain for the three commits, not one each
        for agent_id in ("agent-1", "agent-2", "agent-3"):
            assert await indexer.index.position(agent_id) == 1
        nursery.cancel_scope.cancel()


async def test_a_drain_over_several_streams_advances_their_cursors_in_one_commit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Many users, a turn each within one settle: their streams' cursors are one commit
    (it was one per stream: with 15 agents in turn, a commit more per message)."""
    store = MemoryStore()
    indexer = Indexer(store, store.env, MemoryIndex("i"), QUIET)
    async with trio.open_nursery() as nursery:
        await nursery.start(indexer.run)
        await trio.sleep(1.0)  # the first look is over
        agents = [f"agent-{n}" for n in range(5)]
        for agent_id in agents:
            await _record(store, agent_id)
        commits = store.counts["commit"]
        await trio.sleep(QUIET.settle * 2)  # one drain
        assert [await indexer.index.position(a) for a in agents] == [1] * len(agents)
        assert store.counts["commit"] == commits + 1

        async def cursors(tr: Transaction) -> list[int]:
            return [
                keys.unpack(await tr.get(outbox.CURSORS.pack(("i", a))) or b"")[0] for a in agents
            ]

        assert await store.transact(cursors) == [1] * len(agents)  # and trimmable
        nursery.cancel_scope.cancel()


async def test_an_idle_indexers_polls_end_on_the_nodes_ticks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With the node's timer grid (env.Ticks, the heartbeat's period), every poll after
    the first look begins on a tick: the node wakes once for it and its heartbeat."""
    store = MemoryStore()
    store.env.ticks = Ticks(10.0 / 3, phase=1.25)
    config = IndexerConfig(poll_interval=60.0, heartbeat_interval=120.0, settle=0.5)
    indexer = Indexer(store, store.env, MemoryIndex("i"), config)
    times = call_times(indexer, "pending_streams")
    async with trio.open_nursery() as nursery:
        await nursery.start(indexer.run)
        await trio.sleep(600.0)
        nursery.cancel_scope.cancel()
    polls = times[1:]
    assert 9 <= len(polls) <= 10, times  # one a minute, no more
    assert [t for t in polls if store.env.ticks.at_or_after(t) != t] == []


async def test_caught_up_from_the_wake_to_the_end_of_its_drain_and_at_a_scrape(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What a bench waits for before it measures an idle node (`kelpie_search_caught_up`):
    not while a commit's wake-up waits out its settle, nor while the drain runs, and again
    once the drain has applied the entry."""
    store = MemoryStore()
    indexer = Indexer(store, store.env, MemoryIndex("i"), QUIET)
    metrics = RuntimeMetrics()
    metrics.watch_indexer(indexer)
    scraped = call_times(indexer, "pending_streams")
    assert not indexer.caught_up  # not started: it has not looked yet
    async with trio.open_nursery() as nursery:
        await nursery.start(indexer.run)
        await trio.sleep(1.0)  # the first look is over
        assert indexer.caught_up
        assert "kelpie_search_caught_up 1.0" in metrics.render().decode()
        await _record(store, "agent-1")
        assert not indexer.caught_up  # woken: the drain is ahead
        assert "kelpie_search_caught_up 0.0" in metrics.render().decode()
        seen_during_drain: list[bool] = []
        drain = indexer.catch_up_stream

        async def watched(stream: str, **kwargs: object) -> int:
            seen_during_drain.append(indexer.caught_up)
            return await drain(stream, **kwargs)  # type: ignore[arg-type]

        indexer.catch_up_stream = watched  # type: ignore[method-assign]
        await trio.sleep(QUIET.settle / 2)
        assert not indexer.caught_up  # the settle
        await trio.sleep(QUIET.settle)
        assert seen_during_drain == [False] and len(scraped) == 2
        assert indexer.caught_up and await indexer.index.position("agent-1") == 1
        assert "kelpie_search_batches_applied_total 1.0" in metrics.render().decode()
        nursery.cancel_scope.cancel()
