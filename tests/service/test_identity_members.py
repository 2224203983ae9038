"""The reverse index of identities (member -> identity ids, service/identities.py): written
with every identity write and with an agent's or block's deletion, and built on first use
for identities stored before it existed."""

from __future__ import annotations

import trio

from kelpie_trio.env import RealEnv
from kelpie_trio.models.identities import Identity
from kelpie_trio.service import AgentService
from kelpie_trio.service.common import read_record
from kelpie_trio.service.identities import IDENTITY_MEMBERS, MEMBERS_BUILT
from kelpie_trio.storage import MemoryStore
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.keys import AGENTS, IDENTITIES, prefix_range


async def _entries(service: AgentService) -> list[tuple]:
    async def read(tr: Transaction) -> list[tuple]:
        r = IDENTITY_MEMBERS.range()
        return [IDENTITY_MEMBERS.unpack(k) for k, _ in await tr.get_range(r.start, r.stop)]

    return await service.store.transact(read)


async def _records(service: AgentService) -> list[bytes]:
    async def read(tr: Transaction) -> list[bytes]:
        r = IDENTITIES.range()
        return [k for k, _ in await tr.get_range(r.start, r.stop)]

    return await service.store.transact(read)


async def test_identities_stored_before_the_index_show_on_their_agents(
    nursery: trio.Nursery,
) -> None:
    store = MemoryStore()
    await nursery.start(store.run)
    service = AgentService(store, RealEnv())
    agent = (await service.create_agent({"name": "old"})).agent
    gone = (await service.create_agent({"name": "gone"})).agent
    identity = await service.create_identity(
        {"identifier_key": "old", "name": "Old", "identity_type": "user",
         "agent_ids": [agent.id, gone.id]}
    )  # fmt: skip

    async def as_before_the_index(tr: Transaction) -> None:
        r = IDENTITY_MEMBERS.range()
        tr.clear_range(r.start, r.stop)
        tr.clear(MEMBERS_BUILT)
        # An agent deleted by a server that left it in its identities' records.
        tr.clear_range(*prefix_range(AGENTS.pack((gone.id,))))
        tr.clear(AGENTS.pack((gone.id,)))

    await store.transact(as_before_the_index)
    assert [i.id for i in (await service.get_agent(agent.id)).identities] == [identity.id]
    assert await _entries(service) == [("agent", agent.id, identity.id)]  # built, once
    stored = await store.transact(
        lambda tr: read_record(tr, IDENTITIES.pack((identity.id,)), Identity)
    )
    assert stored.agent_ids == [agent.id]  # the deleted agent dropped from the record
    await service.delete_agent(agent.id)
    assert await _entries(service) == []
    assert (await service.get_identity(identity.id)).agent_ids == []


async def test_the_index_follows_every_identity_write(nursery: trio.Nursery) -> None:
    store = MemoryStore()
    await nursery.start(store.run)
    service = AgentService(store, RealEnv())
    a, b = [(await service.create_agent({"name": n})).agent.id for n in ("a", "b")]
    block = (await service.create_block({"label": "x", "value": "v"})).id
    made = await service.create_identity(
        {"identifier_key": "k", "name": "K", "identity_type": "org", "agent_ids": [a],
         "block_ids": [block]}
    )  # fmt: skip
    i = made.id
    assert sorted(await _entries(service)) == [("agent", a, i), ("block", block, i)]
    await service.update_identity(i, {"agent_ids": [b]})
    assert sorted(await _entries(service)) == sorted(
        [("agent", a, i), ("agent", b, i), ("block", block, i)]
    )
    await service.upsert_identity(
        {"identifier_key": "k", "name": "K", "identity_type": "org", "agent_ids": [b]}
    )
    assert sorted(await _entries(service)) == [("agent", b, i), ("block", block, i)]
    await service.attach_identity(a, i, attach=True)
    await service.attach_identity(b, i, attach=False)
    assert sorted(await _entries(service)) == [("agent", a, i), ("block", block, i)]
    await service.delete_block(block)
    assert await _entries(service) == [("agent", a, i)]
    await service.delete_identity(i)
    assert await _entries(service) == [] and await _records(service) == []
