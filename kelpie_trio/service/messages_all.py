"""Messages across agents (Letta's client.messages): list every agent's, retrieve one by id.

There is no index of messages by time or by id across agents: each agent's history lives
under its own prefix (agent, seq), written by the agent loop's commits. So these read every
stored message, in batches, and order them here. That is fine for one user's server; a
deployment with a large history wants an index written with the messages (left for later).
"""

from __future__ import annotations

from typing import Any

from kelpie_trio.agent.messages import Message, to_letta_messages
from kelpie_trio.errors import NotFound
from kelpie_trio.models import convert
from kelpie_trio.service.common import MAX_PAGE, Page, ServiceBase
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = ["AllMessageCases"]

_BATCH = 2000  # rows per range read: one read stays far below FDB's limits


async def _every_message(tr: Transaction) -> list[Message]:
    """Every stored message of every agent (each a blob of one or more chunk keys)."""
    chunks: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
    r = keys.MESSAGES.range()
    begin = r.start
    while True:
        rows = await tr.get_range(begin, r.stop, limit=_BATCH)
        for key, value in rows:
            agent_id, seq, index = keys.MESSAGES.unpack(key)
            chunks.setdefault((agent_id, seq), []).append((index, value))
        if len(rows) < _BATCH:
            break
        begin = rows[-1][0] + b"\x00"
    return [
        convert.decode_record(b"".join(v for _, v in sorted(parts)), Message)
        for parts in chunks.values()
    ]


def _window(messages: list[Message], page: Page) -> list[Message]:
    """Cursor paging over messages ordered by time; `limit` counts stored messages, as
    Letta's does (each may show as several items sharing its id)."""
    ordered = sorted(messages, key=lambda m: (m.created_at, m.agent_id, m.seq))
    if page.order == "desc":
        ordered.reverse()
    ids = [m.id for m in ordered]
    if page.after is not None:
        ordered = ordered[ids.index(page.after) + 1 :] if page.after in ids else []
    if page.before is not None:
        ids = [m.id for m in ordered]
        ordered = ordered[: ids.index(page.before)] if page.before in ids else []
    return ordered[: min(page.limit or MAX_PAGE, MAX_PAGE)]


class AllMessageCases(ServiceBase):
    async def list_all_messages(
        self, page: Page, *, message_types: list[str] | None = None
    ) -> list[dict[str, Any]]:
        stored = await self.store.transact(_every_message)
        shown = [item for m in _window(stored, page) for item in to_letta_messages(m)]
        if message_types:
            shown = [item for item in shown if item["message_type"] in message_types]
        return shown

    async def retrieve_message(self, message_id: str) -> list[dict[str, Any]]:
        """A stored message as the items it shows as (Letta answers a list too)."""
        stored = await self.store.transact(_every_message)
        found = next((m for m in stored if m.id == message_id), None)
        if found is None:
            raise NotFound("Message", message_id)
        return to_letta_messages(found)
