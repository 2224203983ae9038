"""Messages across agents (Letta's client.messages): list every agent's, retrieve one by id.

Both read the message index (agent/message_index.py) written with every message: a page
is one range read of the time order plus one range read per run of consecutive messages
of a thread in it; a retrieve is a look-up of the id. The order is the messages' creation
time, then thread and position, as the index keys them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kelpie_trio.agent import message_index
from kelpie_trio.agent.conversations import is_conversation
from kelpie_trio.agent.history import decode_messages
from kelpie_trio.agent.message_index import IndexEntry
from kelpie_trio.agent.messages import Message, to_letta_messages
from kelpie_trio.errors import NotFound
from kelpie_trio.models import convert
from kelpie_trio.service.common import MAX_PAGE, Page, ServiceBase
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction, key_after
from kelpie_trio.storage.chunks import get_blob

__all__ = ["AllMessageCases", "page_entries", "runs_of", "thread_filter"]


async def page_entries(
    tr: Transaction, page: Page, keep: Callable[[str], bool] | None = None
) -> list[tuple[IndexEntry, str]]:
    """One page of the time order strictly between the cursors, in `page.order`, with
    each message's id; only threads `keep` accepts, when given (then read in batches
    until the page is full). An unknown cursor gives an empty page (the SDK then stops)."""
    times = keys.MESSAGE_TIMES
    begin, end = times.range().start, times.range().stop
    ascending = page.order != "desc"
    # In ascending order `after` bounds from below; in descending order from above.
    for cursor, lower in ((page.after, ascending), (page.before, not ascending)):
        if cursor is None:
            continue
        where = await message_index.locate(tr, cursor)
        if where is None:
            return []
        key = times.pack(where)
        if lower:
            begin = max(begin, key_after(key))
        else:
            end = min(end, key)
    if begin >= end:
        return []
    limit = min(page.limit or MAX_PAGE, MAX_PAGE)
    found: list[tuple[IndexEntry, str]] = []
    while begin < end and len(found) < limit:
        rows = await tr.get_range(begin, end, limit=limit, reverse=not ascending)
        for key, value in rows:
            entry: IndexEntry = times.unpack(key)
            if keep is None or keep(entry[1]):
                found.append((entry, value.decode()))
        if len(rows) < limit or keep is None:
            break
        if ascending:
            begin = key_after(rows[-1][0])
        else:
            end = rows[-1][0]
    return found[:limit]


def runs_of(entries: list[IndexEntry]) -> list[tuple[str, int, int]]:
    """The page's messages as (thread, first seq, last seq) runs, so each run is one range
    read: a turn's messages are consecutive in both the time order and their thread."""
    spans: list[tuple[str, int, int]] = []
    for thread, seq in sorted({(thread, seq) for _, thread, seq in entries}):
        if spans and spans[-1][0] == thread and spans[-1][2] == seq - 1:
            spans[-1] = (thread, spans[-1][1], seq)
        else:
            spans.append((thread, seq, seq))
    return spans


def thread_filter(conversation_id: str | None) -> Callable[[str], bool] | None:
    """Letta's `conversation_id` filter as a test of threads: every message (None), the
    agents' default conversations ("default"), or one thread (a conversation's id, or an
    agent's id for its default conversation)."""
    if conversation_id is None:
        return None
    if conversation_id == "default":
        return lambda thread: not is_conversation(thread)
    return lambda thread: thread == conversation_id


async def _page(
    tr: Transaction, page: Page, keep: Callable[[str], bool] | None = None
) -> list[Message]:
    listed = await page_entries(tr, page, keep)
    found: dict[tuple[str, int], Message] = {}
    for thread, first, last in runs_of([entry for entry, _ in listed]):
        rows = await tr.get_range(
            keys.MESSAGES.pack((thread, first)), keys.MESSAGES.pack((thread, last + 1))
        )
        found.update({(m.thread, m.seq): m for m in decode_messages(rows)})
    # An entry is shown only when its place holds the message it names.
    return [
        m
        for (_, thread, seq), message_id in listed
        if (m := found.get((thread, seq))) is not None and m.id == message_id
    ]


class AllMessageCases(ServiceBase):
    _messages_indexed = False  # this process has made sure older stores are indexed

    async def _indexed(self) -> None:
        if not self._messages_indexed:
            await message_index.ensure_index(self.store)
            self._messages_indexed = True

    async def list_all_messages(
        self,
        page: Page,
        *,
        message_types: list[str] | None = None,
        conversation_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """`limit` counts stored messages, as Letta's does (each may show as several items
        sharing its id). `conversation_id`: see `thread_filter`."""
        await self._indexed()
        keep = thread_filter(conversation_id)
        stored = await self.store.transact(lambda tr: _page(tr, page, keep))
        shown = [item for m in stored for item in to_letta_messages(m)]
        if message_types:
            shown = [item for item in shown if item["message_type"] in message_types]
        return shown

    async def retrieve_message(self, message_id: str) -> list[dict[str, Any]]:
        """A stored message as the items it shows as (Letta answers a list too)."""
        await self._indexed()

        async def read(tr: Transaction) -> Message | None:
            where = await message_index.locate(tr, message_id)
            if where is None:
                return None
            _, thread, seq = where
            raw = await get_blob(tr, keys.MESSAGES.pack((thread, seq)))
            return None if raw is None else convert.decode_record(raw, Message)

        found = await self.store.transact(read)
        if found is None:
            raise NotFound("Message", message_id)
        return to_letta_messages(found)
