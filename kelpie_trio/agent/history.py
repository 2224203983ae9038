"""A thread's stored history: one key per message, `MESSAGES(thread, seq)`, each a
blob of one or more chunks (storage/chunks.py), in the order the agent saw them. The
thread is the agent id (its default conversation) or a conversation id
(agent/conversations.py)."""

from __future__ import annotations

from kelpie_trio.agent.messages import Message
from kelpie_trio.models import convert
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = ["decode_messages", "history_key", "read_history"]


def history_key(thread: str, seq: int) -> bytes:
    return keys.MESSAGES.pack((thread, seq))


def decode_messages(rows: list[tuple[bytes, bytes]]) -> list[Message]:
    """Stored messages from a range read in key order (each a blob of one or more chunks)."""
    chunks: dict[int, list[tuple[int, bytes]]] = {}
    for key, value in rows:
        _, seq, index = keys.MESSAGES.unpack(key)
        chunks.setdefault(seq, []).append((index, value))
    return [
        convert.decode_record(b"".join(v for _, v in sorted(chunks[seq])), Message)
        for seq in sorted(chunks)
    ]


async def read_history(
    tr: Transaction, thread: str, *, limit: int = 0, start_seq: int = 0
) -> list[Message]:
    """The thread's stored messages in order, from `start_seq` on: all of them, or about
    the last `limit`.

    One range read: each message is a blob of one or more chunk keys, read newest
    first and regrouped by message; when the read stops at its limit, the oldest
    message in it may be cut, so it is left out.
    """
    begin = keys.MESSAGES.pack((thread, start_seq))
    end = keys.prefix_range(keys.MESSAGES.pack((thread,)))[1]
    ask = limit * 2 if limit else 0  # most messages are one chunk
    rows = await tr.get_range(begin, end, limit=ask, reverse=True)
    chunks: dict[int, list[tuple[int, bytes]]] = {}
    for key, value in rows:
        _, seq, index = keys.MESSAGES.unpack(key)
        chunks.setdefault(seq, []).append((index, value))
    if ask and len(rows) == ask and chunks:
        del chunks[min(chunks)]
    seqs = sorted(chunks)[-limit:] if limit else sorted(chunks)
    return [
        convert.decode_record(b"".join(v for _, v in sorted(chunks[seq])), Message) for seq in seqs
    ]
