"""The message index (agent/message_index.py) on a store written before it existed: the
first listing indexes every stored message once, across batches, and marks the store."""

from __future__ import annotations

import trio

from kelpie_trio.agent import message_index
from kelpie_trio.agent.history import history_key
from kelpie_trio.agent.messages import Message
from kelpie_trio.env import RealEnv
from kelpie_trio.models import convert
from kelpie_trio.service import AgentService
from kelpie_trio.service.common import Page
from kelpie_trio.storage import MemoryStore, keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import set_blob


def _old(thread: str, seq: int, at: float, size: int = 10) -> Message:
    return Message(id=f"message-{thread}-{seq}", agent_id=thread, seq=seq, role="user",
                   content="x" * size, created_at=at)  # fmt: skip


async def test_messages_stored_before_the_index_are_listed_once_in_time_order(
    nursery: trio.Nursery, monkeypatch: object
) -> None:
    store = MemoryStore()
    await nursery.start(store.run)
    service = AgentService(store, RealEnv())
    monkeypatch.setattr(message_index, "_BATCH", 3)  # type: ignore[attr-defined]
    # Two threads, interleaved in time; one message of several chunks sits on a batch edge.
    old = [_old("agent-a", i, 100.0 + 2 * i) for i in range(5)]
    old += [_old("agent-b", i, 101.0 + 2 * i, size=200_000 if i == 0 else 10) for i in range(4)]

    async def as_before_the_index(tr: Transaction) -> None:
        for m in old:
            set_blob(tr, history_key(m.thread, m.seq), convert.encode_record(m))

    await store.transact(as_before_the_index)
    listed = await service.list_all_messages(Page(limit=100, order="asc"))
    assert [m["id"] for m in listed] == [m.id for m in sorted(old, key=lambda m: m.created_at)]
    newest = await service.list_all_messages(Page(limit=2, order="desc"))
    assert [m["id"] for m in newest] == ["message-agent-a-4", "message-agent-b-3"]
    older = await service.list_all_messages(Page(limit=2, order="desc", after=newest[-1]["id"]))
    assert [m["id"] for m in older] == ["message-agent-a-3", "message-agent-b-2"]
    assert (await service.retrieve_message("message-agent-b-0"))[0]["content"] == "x" * 200_000
    # `before` and `after` bound the page in its order, as Letta's cursors do.
    ordered = [m.id for m in sorted(old, key=lambda m: m.created_at)]  # a0 b0 a1 b1 ...

    async def ids(**page: object) -> list[str]:
        return [m["id"] for m in await service.list_all_messages(Page(limit=100, **page))]

    assert await ids(order="asc", before=ordered[3]) == ordered[:3]
    assert await ids(order="desc", before=ordered[3]) == ordered[4:][::-1]
    assert await ids(order="asc", after=ordered[1], before=ordered[5]) == ordered[2:5]
    assert await ids(order="desc", after=ordered[5], before=ordered[1]) == ordered[2:5][::-1]
    assert await ids(order="asc", after="message-unknown") == []

    async def entries(tr: Transaction) -> int:
        r = keys.MESSAGE_TIMES.range()
        return len(await tr.get_range(r.start, r.stop))

    assert await store.transact(entries) == len(old)
