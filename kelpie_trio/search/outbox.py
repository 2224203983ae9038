"""The search outbox: every change to searchable data, recorded in the data's transaction.

The store is the source of truth and the search index is derived from it, so
the index may lag but must never miss a write. Each transaction that writes a
passage or a message (or deletes them) also calls `record`, which appends an
entry to a *stream* of the outbox in that same transaction: the entry exists
exactly when the change does.

**Streams: one per thread.** An agent talks in several threads at once (its
default conversation and its other conversations, each its own actor:
agent/conversations.py), and the threads write their messages concurrently. A
thread's messages go to the thread's own stream: the agent's default
conversation to the stream named by the agent id, a conversation `conv-x` to
the stream `"{agent_id}/conv-x"` (`stream_of`). An archive's or a folder's
passages go to the stream named by its id; passages an agent holds itself (older
stores, agent-file imports) to the agent's stream. The stream's name says whose
documents it feeds (`split_stream`), and which of them (`in_scope`): the agent
stream, the owner's passages and its default conversation's messages; a
conversation's stream, that conversation's messages and nothing else. Each
document is fed by exactly one stream, so the order of its changes is that
stream's order, and a stream can be rebuilt alone.

Passages stay on their owner's stream (the agent's, or mostly an archive's,
shared by many agents) rather than the writing thread's: a passage is the
owner's, not the thread's, and a rebuild of a stream must cover every document
its entries touch; were a thread's stream to carry an archive's passages, the
archive's documents would be fed by many streams with no order between them.
Passage writes are rare (a tool call, an insert through the API) next to
messages (every step of every thread), so two threads meeting on the owner's
head is rare, and costs a retry.

**Positions.** Each stream has entries at `OUTBOX(stream, position)`,
positions 1, 2, 3... given out by the stream's head key that `record` reads
and rewrites. The read makes two writers of one stream conflict, so
serializability gives each position to exactly one committed transaction, and
positions commit in increasing order: once a reader has seen position n of a
stream, no entry at or below n can still appear. That is what lets a cursor
stand for "everything up to here". A global counter would do the same but
make every write in the system conflict with every other; per stream, only
writes to the same thread do, and a thread's messages are already written one
at a time by its actor, so ten conversations of one agent never meet on the
outbox. (FDB's versionstamps would avoid even that; the store interface does
not have them, and per-stream heads work the same on every backend.)

**Entries are pointers.** An entry names what changed (a passage id, a
message's `message_ref`, or "re-read the whole stream"), not the new content:
the indexer reads the record's current state from the store and upserts or
deletes it. Applying an entry twice, or late, is harmless, and the index
converges to the store whatever the interleaving. "Re-read" (`resync`) on an
agent's stream re-reads the whole agent, its conversations' streams too: that
is what it meant when every thread wrote to the agent's stream, and what
deleting an agent needs.

**Cursors and trimming.** Each index (one per node, or an FTS5 file) has an
id, registered under `CONSUMERS` with a heartbeat, and a cursor per stream
under `CURSORS`: the position it has applied. Entries at or below the lowest
cursor of the live consumers are cleared, and `TRIMMED(stream)` says how far:
a consumer that finds its own position below that (it was away longer than
the consumer TTL, or it is new) rebuilds the stream from the store instead of
replaying it: the agent stream's documents (and, as a resync, its
conversations'), or the one conversation's messages.

**Deleted threads.** Deleting a conversation (or an agent, with each of its
conversations) records a resync on its stream; a consumer rebuilds the stream,
finds its owner gone and drops its documents. Once every live consumer has
done so, the stream is cleared whole (`advance(..., gone=True)`): entries,
head, trimmed marker and every cursor, so a deleted thread leaves nothing in
the outbox. A consumer that still holds a position for a stream cleared that
way finds the head below it, and rebuilds (to nothing).

**Upgrades.** Stores written before streams per thread have every thread's
messages on the agent's stream. Those entries stay valid: an entry on the
agent stream naming a conversation's message makes the indexer rebuild that
conversation's stream (in its own compare-and-set) before it moves past the
entry, so no change is lost and each document still has one feeding stream.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from kelpie_trio.agent.conversations import agent_conversation_ids, is_conversation
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction, key_after

__all__ = [
    "CONSUMERS",
    "CURSORS",
    "ENTRIES",
    "HEADS",
    "NEW_ENTRIES",
    "TRIMMED",
    "Change",
    "Pending",
    "advance",
    "agent_streams",
    "drop_stream",
    "heartbeat",
    "in_scope",
    "read_head",
    "read_pending",
    "record",
    "record_messages",
    "split_stream",
    "stream_of",
    "stream_of_change",
]

SEARCH = keys.SEARCH
ENTRIES = keys.OUTBOX  # (stream, position) -> Change, tuple-packed
HEADS = SEARCH["head"]  # (stream,) -> the last position given out
TRIMMED = SEARCH["trimmed"]  # (stream,) -> entries at or below this are cleared
CURSORS = SEARCH["cursor"]  # (index_id, stream) -> the last position that index applied
CONSUMERS = SEARCH["consumer"]  # (index_id,) -> last heartbeat, epoch seconds

# The commit topic of a transaction that appended entries (Transaction.notify_on_commit):
# this node's indexer wakes on it instead of polling.
NEW_ENTRIES = "search-outbox"

PASSAGE = "passage"
MESSAGE = "message"
RESYNC = "resync"


@attrs.frozen
class Change:
    """What one outbox entry says: re-read this passage, this message, or the whole stream
    (on an agent's stream: the whole agent)."""

    what: str  # PASSAGE | MESSAGE | RESYNC
    ref: str | int | None = None

    def pack(self) -> bytes:
        return keys.pack((self.what,) if self.ref is None else (self.what, self.ref))

    @classmethod
    def unpack(cls, raw: bytes) -> Change:
        items = keys.unpack(raw)
        return cls(items[0], items[1] if len(items) > 1 else None)


def _int(raw: bytes | None) -> int:
    return 0 if raw is None else keys.unpack(raw)[0]


def prefetch_head(tr: Transaction, stream: str) -> None:
    tr.prefetch(HEADS.pack((stream,)))


async def read_head(tr: Transaction, stream: str) -> int:
    return _int(await tr.get(HEADS.pack((stream,))))


_SEP = "/"  # between an agent and a conversation in a stream's name (ids have none)


def stream_of(agent_id: str, thread: str) -> str:
    """The stream a thread's messages go to: the agent's own for its default conversation
    (`thread` is the agent id), `"{agent_id}/{conversation}"` for another."""
    return f"{agent_id}{_SEP}{thread}" if is_conversation(thread) else agent_id


def split_stream(stream: str) -> tuple[str, str | None]:
    """(the owner whose documents the stream feeds, its conversation or None)."""
    owner, _, conversation = stream.partition(_SEP)
    return owner, conversation or None


def in_scope(stream: str, kind: str, key: str) -> bool:
    """Whether the owner's document (kind, key) is fed by `stream`: what a rebuild of the
    stream replaces. A conversation's messages are keyed `"{conversation}/{seq}"`."""
    _, conversation = split_stream(stream)
    if conversation is None:
        return kind == PASSAGE or _SEP not in key
    return kind == MESSAGE and key.startswith(conversation + _SEP)


def stream_of_change(stream: str, change: Change) -> str:
    """The stream that feeds the document `change` (read from `stream`) names: `stream`
    itself, but for an entry an older version put on the agent's stream for a message
    of one of its conversations."""
    owner, _ = split_stream(stream)
    if change.what == MESSAGE and isinstance(change.ref, str) and _SEP in change.ref:
        return stream_of(owner, change.ref.rpartition(_SEP)[0])
    return stream


async def agent_streams(tr: Transaction, agent_id: str) -> list[str]:
    """Every stream of the agent's threads: its own, then each conversation's."""
    return [agent_id, *(stream_of(agent_id, c) for c in await agent_conversation_ids(tr, agent_id))]


def message_ref(thread: str, seq: int) -> int | str:
    """How a message is named in its thread's stream (and as its search document's key):
    its sequence number in the agent's default conversation, `"{conversation}/{seq}"` in
    another (agent/conversations.py)."""
    return f"{thread}/{seq}" if is_conversation(thread) else seq


def message_key(agent_id: str, ref: int | str) -> bytes:
    """The history key of the message a `message_ref` names."""
    if isinstance(ref, int):
        return keys.MESSAGES.pack((agent_id, ref))
    thread, _, seq = str(ref).rpartition("/")
    return keys.MESSAGES.pack((thread or agent_id, int(seq)))


async def record(
    tr: Transaction,
    stream: str,
    *,
    passages: Iterable[str] = (),
    messages: Iterable[int | str] = (),
    resync: bool = False,
) -> int:
    """Append changes to an outbox stream, in the caller's transaction.

    `stream`: an owner's (an agent, archive or folder id), or a conversation's
    (`stream_of`); `passages`: ids of the owner's passages written or deleted;
    `messages`: the stream's thread's messages written (`message_ref`s); `resync`:
    many records changed at once (a reset history, a deleted thread), so the index
    re-reads the whole stream. Returns the last position used (the current one when
    nothing is recorded).
    """
    changes = [Change(PASSAGE, p) for p in passages] + [Change(MESSAGE, m) for m in messages]
    if resync:
        changes.append(Change(RESYNC))
    head = await read_head(tr, stream)
    for change in changes:
        head += 1
        tr.set(ENTRIES.pack((stream, head)), change.pack())
    if changes:
        tr.set(HEADS.pack((stream,)), keys.pack((head,)))
        tr.notify_on_commit(NEW_ENTRIES)
    return head


async def record_messages(
    tr: Transaction, agent_id: str, messages: Iterable[tuple[str, int]]
) -> None:
    """Record the agent's messages written, given as (thread, seq), each on its thread's
    stream: the writers of two threads never touch one head."""
    by_stream: dict[str, list[int | str]] = {}
    for thread, seq in messages:
        by_stream.setdefault(stream_of(agent_id, thread), []).append(message_ref(thread, seq))
    for stream, refs in by_stream.items():
        await record(tr, stream, messages=refs)


@attrs.frozen
class Pending:
    """A stream's entries after a position, as one snapshot saw them."""

    trimmed: int  # entries at or below this are gone: a consumer below it must rebuild
    entries: list[tuple[int, Change]]
    more: bool  # the read stopped at its limit


async def read_pending(tr: Transaction, stream: str, after: int, limit: int) -> Pending:
    trimmed_key = TRIMMED.pack((stream,))
    tr.prefetch(trimmed_key)  # read in the entries' snapshot (with the caller's hints)
    begin = key_after(ENTRIES.pack((stream, after)))
    end = ENTRIES.range((stream,)).stop
    rows = await tr.get_range(begin, end, limit=limit)
    trimmed = _int(await tr.get(trimmed_key))
    entries = [(ENTRIES.unpack(k)[1], Change.unpack(v)) for k, v in rows]
    return Pending(trimmed, entries, more=len(rows) == limit)


async def heartbeat(tr: Transaction, index_id: str, now: float, ttl: float) -> list[str]:
    """Say this index is alive; forget consumers silent for longer than `ttl` (their
    cursors too). Returns the ids forgotten."""
    tr.set(CONSUMERS.pack((index_id,)), keys.pack((now,)))
    gone = []
    for key, value in await tr.get_range(CONSUMERS.range().start, CONSUMERS.range().stop):
        (other,) = CONSUMERS.unpack(key)
        if other != index_id and keys.unpack(value)[0] < now - ttl:
            gone.append(other)
            tr.clear(key)
            tr.clear_range(*keys.prefix_range(CURSORS.pack((other,))))
    return gone


async def advance(
    tr: Transaction,
    index_id: str,
    stream: str,
    position: int,
    now: float,
    ttl: float,
    *,
    gone: bool = False,
) -> bool:
    """Move this index's cursor for the stream to `position` (never back), if it is a
    registered consumer, and clear the entries every live consumer has applied.

    `gone`: the stream's owner (its conversation, its agent) was found deleted. Once no
    live consumer is behind `position` and nothing was written since, the stream is
    cleared whole (`drop_stream`); returns whether it was.

    An index that is not registered (a search layer without a background
    indexer) holds nothing back: when it finds its entries trimmed, it rebuilds.
    """
    registered = await tr.get(CONSUMERS.pack((index_id,))) is not None
    cursor_key = CURSORS.pack((index_id, stream))
    if registered and position > _int(await tr.get(cursor_key)):
        tr.set(cursor_key, keys.pack((position,)))
    lowest = position
    consumers = []
    for key, value in await tr.get_range(CONSUMERS.range().start, CONSUMERS.range().stop):
        (other,) = CONSUMERS.unpack(key)
        consumers.append(other)
        if other == index_id or keys.unpack(value)[0] < now - ttl:
            continue
        # A live consumer that has not applied this stream yet holds all of it back: it
        # finds the stream through these entries (a new thread, or one not yet warmed).
        lowest = min(lowest, _int(await tr.get(CURSORS.pack((other, stream)))))
    if gone and lowest >= await read_head(tr, stream):
        drop_stream(tr, stream, consumers)
        return True
    trimmed_key = TRIMMED.pack((stream,))
    trimmed = _int(await tr.get(trimmed_key))
    if lowest > trimmed:
        # From past the last trim, not the stream's start: those entries are cleared, and
        # a clear over them walks their tombstones (SQLite keeps them until its collector's
        # horizon: all a hot thread wrote in the last 10-15 s).
        begin = (
            key_after(ENTRIES.pack((stream, trimmed)))
            if trimmed
            else ENTRIES.range((stream,)).start
        )
        tr.clear_range(begin, key_after(ENTRIES.pack((stream, lowest))))
        tr.set(trimmed_key, keys.pack((lowest,)))
    return False


def drop_stream(tr: Transaction, stream: str, consumers: Iterable[str]) -> None:
    """Clear a stream whole: its entries, head, trimmed marker and the cursors of
    `consumers` (every registered index: the forgotten ones' cursors are gone already)."""
    where = ENTRIES.range((stream,))
    tr.clear_range(where.start, where.stop)
    tr.clear(HEADS.pack((stream,)))
    tr.clear(TRIMMED.pack((stream,)))
    for index_id in consumers:
        tr.clear(CURSORS.pack((index_id, stream)))
