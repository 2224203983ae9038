"""Every thread's messages in one time order, for Letta's top-level `client.messages`.

A thread's history is keyed by (thread, seq), so "the newest messages of every agent"
would be a read of every history. Two small keys per message, written by
`write_messages` in the transaction that stores the message, make it a range read:

- `MESSAGE_TIMES(created_us, thread, seq) -> message id`: the order a page is read in;
- `MESSAGE_IDS(message id, thread) -> (created_us, seq)`: where a cursor or a retrieved id
  is. The thread is part of the key because a transferred session's messages keep their
  ids in the history they move to (agent/handoff.py), so one id may be in two threads.

Neither holds the message, so each costs about 60 bytes and one row per message on the
hot path. A history is only ever removed whole (reset, agent or conversation delete),
through `clear_history`, which reads the history to find its entries: a rare, already
heavy operation, where the alternative (a third key per message) would tax every send.

A store written before the index has messages without entries: `ensure_index` adds
them once, in batches, and marks the store as indexed.
"""

from __future__ import annotations

from collections.abc import Iterable

from kelpie_trio.agent.history import decode_messages, history_key
from kelpie_trio.agent.messages import Message
from kelpie_trio.models import convert
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Store, Transaction
from kelpie_trio.storage.chunks import set_blob

__all__ = [
    "IndexEntry",
    "clear_history",
    "ensure_index",
    "locate",
    "write_messages",
]

MESSAGE_TIMES = keys.MESSAGE_TIMES
MESSAGE_IDS = keys.MESSAGE_IDS
# Set once every stored message has its entries (written by ensure_index).
_INDEXED = keys.ROOT["system"]["message_index"]
_BATCH = 500  # messages per transaction while indexing an older store

# (created_us, thread, seq): a message's place in MESSAGE_TIMES.
IndexEntry = tuple[int, str, int]


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _index(tr: Transaction, message: Message) -> None:
    at = _micros(message.created_at)
    tr.set(MESSAGE_TIMES.pack((at, message.thread, message.seq)), message.id.encode())
    tr.set(MESSAGE_IDS.pack((message.id, message.thread)), keys.pack((at, message.seq)))


def _unindex(tr: Transaction, message: Message) -> None:
    tr.clear(MESSAGE_TIMES.pack((_micros(message.created_at), message.thread, message.seq)))
    tr.clear(MESSAGE_IDS.pack((message.id, message.thread)))


def write_messages(tr: Transaction, messages: Iterable[Message]) -> None:
    """Store messages in their threads' histories, with their index entries."""
    for m in messages:
        set_blob(tr, history_key(m.thread, m.seq), convert.encode_record(m))
        _index(tr, m)


def _whole(rows: list[tuple[bytes, bytes]], full: bool) -> list[tuple[bytes, bytes]]:
    """The rows of a batched history read without its last message when the read stopped
    at its limit (that message's chunks may go on; the next batch reads it whole). A
    message is far fewer chunks than a batch (the 10 MB transaction limit bounds it)."""
    if not full:
        return rows
    cut = keys.MESSAGES.unpack(rows[-1][0])[:2]
    return [row for row in rows if keys.MESSAGES.unpack(row[0])[:2] != cut]


async def clear_history(tr: Transaction, thread: str) -> None:
    """Remove a thread's whole history and its index entries."""
    begin, end = keys.prefix_range(keys.MESSAGES.pack((thread,)))
    while True:
        rows = await tr.get_range(begin, end, limit=_BATCH * 2)
        whole = _whole(rows, len(rows) == _BATCH * 2)
        for m in decode_messages(whole):
            _unindex(tr, m)
        if len(rows) < _BATCH * 2:
            break
        begin = whole[-1][0] + b"\x00"
    tr.clear_range(*keys.prefix_range(keys.MESSAGES.pack((thread,))))


async def locate(tr: Transaction, message_id: str) -> IndexEntry | None:
    """Where a message is in the time order (the first thread holding it), or None."""
    found = await tr.get_prefix(MESSAGE_IDS.pack((message_id,)), limit=1)
    if not found:
        return None
    _, thread = MESSAGE_IDS.unpack(found[0][0])
    at, seq = keys.unpack(found[0][1])
    return at, thread, seq


async def ensure_index(store: Store) -> None:
    """Index the messages of a store written before the index existed (once)."""

    async def done(tr: Transaction) -> bool:
        return await tr.get(_INDEXED.key()) is not None

    if await store.transact(done):
        return
    r = keys.MESSAGES.range()
    begin = r.start
    while begin is not None:

        async def batch(tr: Transaction, begin: bytes = begin) -> bytes | None:
            rows = await tr.get_range(begin, r.stop, limit=_BATCH * 2)
            whole = _whole(rows, len(rows) == _BATCH * 2)
            threads: dict[str, list[tuple[bytes, bytes]]] = {}
            for row in whole:
                threads.setdefault(keys.MESSAGES.unpack(row[0])[0], []).append(row)
            for thread_rows in threads.values():
                for m in decode_messages(thread_rows):
                    _index(tr, m)
            if len(rows) < _BATCH * 2:
                tr.set(_INDEXED.key(), b"1")
                return None
            return whole[-1][0] + b"\x00"

        begin = await store.transact(batch)
