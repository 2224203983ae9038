"""Deleting an agent, or one of its conversations, takes the waits its threads had out of
the wait-for graph (agent/wait_graph.py): nothing is left for walks to step over."""

from __future__ import annotations

import trio

from kelpie_trio.agent import wait_graph
from kelpie_trio.env import RealEnv
from kelpie_trio.service import AgentService
from kelpie_trio.storage import MemoryStore
from kelpie_trio.storage.base import Transaction


async def _edges(store: MemoryStore) -> list[tuple]:
    async def read(tr: Transaction) -> list[tuple]:
        rows = await tr.get_prefix(wait_graph.WAITS.key())
        return [wait_graph.WAITS.unpack(k) for k, _ in rows]

    return await store.transact(read)


async def test_a_deleted_agents_and_conversations_waits_leave_the_graph(
    nursery: trio.Nursery,
) -> None:
    store = MemoryStore()
    await nursery.start(store.run)
    service = AgentService(store, RealEnv())
    asker = (await service.create_agent({"name": "asker"})).agent.id
    other = (await service.create_agent({"name": "other"})).agent.id
    conversation = (await service.create_conversation(other, {}))["id"]

    async def wait(tr: Transaction, thread: str, target: str, run: str) -> None:
        # The edge as `register` writes it (its walk would drop these edges as stale:
        # their runs are not stored here).
        tr.set(wait_graph.WAITS.pack((thread, run, "call-1", target)), b"")

    await store.transact(lambda tr: wait(tr, asker, other, "run-a"))
    await store.transact(lambda tr: wait(tr, conversation, asker, "run-c"))
    await store.transact(lambda tr: wait(tr, other, asker, "run-o"))
    assert {e[0] for e in await _edges(store)} == {asker, conversation, other}
    await service.delete_conversation(conversation)
    assert {e[0] for e in await _edges(store)} == {asker, other}
    await service.delete_agent(asker)
    # The wait of another agent on the gone one stays until its own run ends (a walk
    # meeting it then removes it as stale).
    assert {e[0] for e in await _edges(store)} == {other}
