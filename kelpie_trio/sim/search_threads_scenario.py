"""The `search-threads` scenario: the conversations of one agent write their messages at
once, each on its own outbox stream, and the search index converges to the store (run by
`kelpie-trio sim --scenario search-threads` and tests/dst/test_dst_search_threads.py).

Agent A talks in its default conversation and three others; agent B in its default one
and one other. A writer per thread stores message batches as the actor does (history,
message index and outbox entries in one transaction, fenced by the thread's lease), now
and then resets its thread's history, and, a fifth of the time, writes as a node of the
version before streams per thread did (every thread's entries on the agent's stream): a
rolling upgrade (but for the conversation to be deleted). Meanwhile one of A's
conversations is deleted (its writer goes on for a while, as an actor still running
would), then agent B is deleted whole; storage faults
fire; the indexer node crashes and restarts (on its index or a lost one); a searcher on
the writers' node searches A's messages (a second consumer, catching up inline).

With the faults off, every live thread of A writes a burst of batches at the same
instant: not one of them may meet a conflict (the threads' streams are distinct keys;
one head per agent made them retry). Then, once the indexer has run past the consumer
TTL, both indexes hold exactly the store's documents: every acknowledged message since
its thread's last reset is found once, nothing of the deleted conversation or agent is,
and the deleted threads' streams are gone from the outbox (entries, heads, trimmed
markers, cursors).
"""

from __future__ import annotations

import functools
from collections import Counter

import trio

from kelpie_trio.agent import message_index
from kelpie_trio.agent.conversations import is_conversation
from kelpie_trio.agent.messages import Message
from kelpie_trio.errors import NotFound
from kelpie_trio.nursery.lease import read_lease
from kelpie_trio.search import MemoryIndex, Query, SearchLayer, outbox, search_layer
from kelpie_trio.search.store_reads import read_agent_documents
from kelpie_trio.service import AgentService
from kelpie_trio.sim.faults import STORAGE_FAULTS, FaultConfig
from kelpie_trio.sim.search_scenario import WORDS, _index_view, _text, crashing_indexer
from kelpie_trio.sim.world import SimNode, SimWorld
from kelpie_trio.storage import StoreError
from kelpie_trio.storage.base import Transaction

__all__ = ["THREAD_FAULTS", "ThreadStats", "search_threads_converge"]

THREAD_FAULTS = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.06))
BURST = 4  # batches each live thread of A writes at once, faults off
CONFLICT = "NotCommitted"  # what the store counts for a retried conflict (Store.counts)


class ThreadStats(Counter):
    """What ran, by kind (message writes, legacy writes, resets, conflicts, ...)."""

    def summary(self) -> str:
        return "search-threads: " + ", ".join(f"{k} {v}" for k, v in sorted(self.items()))


async def write_thread(
    node: SimNode, agent_id: str, thread: str, start: int, texts: list[str], *, legacy: bool
) -> list[str]:
    """What the actor's _store does for `thread`: its messages and their outbox entries in
    one transaction, fenced by the thread's lease (read_lease is the fence's read; this
    writer holds none). `legacy`: as the version before streams per thread recorded them,
    on the agent's stream. The document keys written."""

    async def write(tr: Transaction) -> list[str]:
        await read_lease(tr, thread)
        messages = [
            Message(id=node.env.new_id("message"), agent_id=agent_id, seq=start + i,
                    role="user" if i % 2 == 0 else "assistant", content=text,
                    created_at=node.env.now(),
                    conversation_id=thread if is_conversation(thread) else None)
            for i, text in enumerate(texts)
        ]  # fmt: skip
        message_index.write_messages(tr, messages)
        if legacy:
            refs = [outbox.message_ref(thread, m.seq) for m in messages]
            await outbox.record(tr, agent_id, messages=refs)
        else:
            await outbox.record_messages(tr, agent_id, [(m.thread, m.seq) for m in messages])
        return [str(outbox.message_ref(thread, m.seq)) for m in messages]

    return await node.store.transact(write)


async def reset_thread(node: SimNode, agent_id: str, thread: str, *, legacy: bool) -> None:
    """What the actor's _reset does to the history and the outbox (legacy: an agent-wide
    resync on the agent's stream, as before streams per thread)."""

    async def clear(tr: Transaction) -> None:
        await read_lease(tr, thread)
        await message_index.clear_history(tr, thread)
        stream = agent_id if legacy else outbox.stream_of(agent_id, thread)
        await outbox.record(tr, stream, resync=True)

    await node.store.transact(clear)


async def _outbox_keys(tr: Transaction, streams: set[str]) -> list[str]:
    """Every outbox key (entry, head, trimmed marker, cursor) of these streams."""
    found = []
    for subspace, at in ((outbox.ENTRIES, 0), (outbox.HEADS, 0), (outbox.TRIMMED, 0),
                         (outbox.CURSORS, 1)):  # fmt: skip
        for key, _ in await tr.get_range(subspace.range().start, subspace.range().stop):
            if subspace.unpack(key)[at] in streams:
                found.append(repr(subspace.unpack(key)))
    return found


async def search_threads_converge(world: SimWorld) -> ThreadStats:
    stats = ThreadStats()
    rng = world.rng("test")
    api = world.new_node("api")
    api.store.max_attempts = 4  # give up sooner: failed writes, whose fate is unknown, happen
    service = AgentService(api.store, api.env)
    service.search_layer = SearchLayer(api.store, api.env)
    world.faults.enabled = False
    a = (await service.create_agent({"name": "a"})).agent.id
    b = (await service.create_agent({"name": "b"})).agent.id
    a_threads = [a] + [(await service.create_conversation(a, {}))["id"] for _ in range(3)]
    b_threads = [b, (await service.create_conversation(b, {}))["id"]]
    doomed = a_threads[2]  # the conversation deleted while its writer goes on
    world.faults.enabled = True

    durable = MemoryIndex("index-durable")
    indexer_up = trio.Event()
    final_layer: list[SearchLayer] = []
    indexer_node = functools.partial(
        crashing_indexer, world, rng, stats, durable,
        embedder=None, up=indexer_up, final_layer=final_layer,
    )  # fmt: skip
    # thread -> the keys acknowledged since its last reset; threads with a reset of unknown
    # fate (it may land after later writes) are left out of the acknowledged check.
    acked: dict[str, set[str]] = {t: set() for t in a_threads + b_threads}
    uncertain: set[str] = set()
    next_seq: dict[str, int] = dict.fromkeys(acked, 0)

    async def writer(agent_id: str, thread: str, rounds: int) -> None:
        for _ in range(rounds):
            # The deleted conversation's writer is never legacy: then no entry on the
            # agent's stream names it after its deletion, and an inline index that held
            # its messages must find them through the stream it knows.
            legacy = rng.random() < 0.2 and thread != doomed
            try:
                if next_seq[thread] and rng.random() < 0.12:
                    stats["resets"] += 1
                    await reset_thread(api, agent_id, thread, legacy=legacy)
                    acked[thread].clear()
                else:
                    texts = [_text(rng) for _ in range(rng.randint(1, 3))]
                    start = next_seq[thread]
                    next_seq[thread] += 3  # a failed write's fate is unknown: never reuse
                    acked[thread] |= set(
                        await write_thread(api, agent_id, thread, start, texts, legacy=legacy)
                    )
                    stats["legacy writes" if legacy else "message writes"] += 1
            except StoreError:
                stats["writes failed"] += 1
                uncertain.add(thread)  # a reset or write whose fate is unknown
            await trio.sleep(rng.uniform(0.0, 0.4))

    async def searcher() -> None:
        layer = search_layer(service)
        for _ in range(8):
            try:
                await layer.search(Query(a, "message", rng.choice(WORDS), limit=3))
                stats["searches"] += 1
            except StoreError:
                stats["searches failed"] += 1
            await trio.sleep(rng.uniform(0.1, 1.0))

    async def delete(what: str, ident: str, after: float) -> None:
        await trio.sleep(after)
        for _ in range(20):  # until it is known gone: its fate must be the store's
            try:
                if what == "conversation":
                    await service.delete_conversation(ident)
                else:
                    await service.delete_agent(ident)
                stats[f"{what}s deleted"] += 1
                return
            except NotFound:
                return  # an earlier try landed after all
            except StoreError:
                stats["writes failed"] += 1
                await trio.sleep(0.2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(indexer_node)
        await indexer_up.wait()
        for thread in a_threads:
            nursery.start_soon(writer, a, thread, rng.randint(5, 9))
        for thread in b_threads:
            nursery.start_soon(writer, b, thread, rng.randint(3, 6))
        nursery.start_soon(searcher)
        nursery.start_soon(delete, "conversation", doomed, rng.uniform(0.5, 2.0))
        nursery.start_soon(delete, "agent", b, rng.uniform(1.0, 3.0))

    world.faults.enabled = False
    # Every live thread of A writes at the same instant: their streams must keep them apart.
    live = [t for t in a_threads if t != doomed]
    conflicts = api.store.counts[CONFLICT]

    async def burst(thread: str) -> None:
        for _ in range(BURST):
            start = next_seq[thread]
            next_seq[thread] += 3
            acked[thread] |= set(
                await write_thread(api, a, thread, start, [_text(rng)], legacy=False)
            )

    async with trio.open_nursery() as nursery:
        for thread in live:
            nursery.start_soon(burst, thread)  # all of them start at the same instant
    stats["burst conflicts"] += api.store.counts[CONFLICT] - conflicts
    assert stats["burst conflicts"] == 0, (
        f"the threads of one agent met {stats['burst conflicts']} conflicts writing their "
        "messages at once (the outbox streams must be one per thread)"
    )

    # Past the consumer TTL: lost indexes' registrations expire, deleted streams are dropped.
    await trio.sleep(40)

    async def truth(tr: Transaction) -> dict[str, set]:
        return {
            agent: {(d.kind, d.key, d.text, d.role, d.tags, d.created_at)
                    for d in await read_agent_documents(tr, agent)}
            for agent in (a, b)
        }  # fmt: skip

    stored = await api.store.transact(truth)
    assert stored[b] == set(), "the deleted agent still has documents in the store"
    [background] = final_layer
    inline = search_layer(service)
    await inline.search(Query(a, "message", "tea", limit=1))  # catches A's streams up
    for name, index in (("background", background.index), ("inline", inline.index)):
        assert isinstance(index, MemoryIndex)
        for agent in (a, b):
            assert _index_view(index, agent) == stored[agent], (
                f"the {name} index of {agent} differs from the store"
            )
        keys_found = {d.key for d in index.documents(a, "message")}
        for thread in live:
            if thread not in uncertain:
                missing = acked[thread] - keys_found
                assert not missing, f"{name}: acknowledged messages not found: {missing}"
                stats["acknowledged found"] += len(acked[thread])
        assert not any(k.startswith(doomed + "/") for k in keys_found), (
            f"{name}: the deleted conversation's messages are still found"
        )
        corpus = index._corpora["message"]  # no document counted twice
        assert corpus.documents == sum(len(index.documents(x, "message")) for x in (a, b))
        # A search finds each acknowledged message it asks for, once (in the threads whose
        # acknowledged messages are known: a reset of unknown fate may have cleared them).
        for thread in live:
            if thread in uncertain:
                continue
            for key in sorted(acked[thread])[:2]:
                [doc] = [d for d in index.documents(a, "message") if d.key == key]
                hits = await index.search(Query(a, "message", doc.text, limit=100))
                assert [h.key for h in hits].count(key) == 1
                stats["searches checked"] += 1

    gone = {outbox.stream_of(a, doomed), *(outbox.stream_of(b, t) for t in b_threads)}
    left = await api.store.transact(lambda tr: _outbox_keys(tr, gone))
    assert not left, f"deleted threads' streams are still in the outbox: {left}"

    async def heads(tr: Transaction) -> dict[str, int]:
        return {t: await outbox.read_head(tr, outbox.stream_of(a, t)) for t in live}

    # Each thread of A has its own stream (the burst alone wrote BURST entries to each).
    assert all(head >= BURST for head in (await api.store.transact(heads)).values())
    stats["threads"] += len(a_threads) + len(b_threads)
    return stats
