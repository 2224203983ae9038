"""The search outbox: every change to searchable data, recorded in the data's transaction.

The store is the source of truth and the search index is derived from it, so
the index may lag but must never miss a write. Each transaction that writes a
passage or a message (or deletes them) also calls `record`, which appends an
entry to the agent's outbox stream in that same transaction: the entry exists
exactly when the change does.

**Positions.** Each agent has its own stream: entries at `OUTBOX(agent_id,
position)`, positions 1, 2, 3... given out by a per-agent head key that
`record` reads and rewrites. The read makes two writers of one agent conflict,
so serializability gives each position to exactly one committed transaction,
and positions commit in increasing order: once a reader has seen position n of
an agent, no entry at or below n can still appear. That is what lets a
cursor stand for "everything up to here". A global counter would do the same
but make every write in the system conflict with every other; per agent, only
writes to the same agent do, and an agent's messages are already written one
at a time by its actor. (FDB's versionstamps would avoid even that; the store
interface does not have them, and per-agent streams work the same on every
backend.)

**Entries are pointers.** An entry names what changed (a passage id, a
message's sequence number, or "re-read the whole agent"), not the new
content: the indexer reads the record's current state from the store and
upserts or deletes it. Applying an entry twice, or late, is harmless, and the
index converges to the store whatever the interleaving.

**Cursors and trimming.** Each index (one per node, or an FTS5 file) has an
id, registered under `CONSUMERS` with a heartbeat, and a cursor per agent
under `CURSORS`: the position it has applied. Entries at or below the lowest
cursor of the live consumers are cleared, and `TRIMMED(agent_id)` says how
far: a consumer that finds its own position below that (it was away longer
than the consumer TTL, or it is new) rebuilds the agent from the store
instead of replaying the stream.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from kelpie_trio.agent.conversations import is_conversation
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
    "heartbeat",
    "read_head",
    "read_pending",
    "record",
]

SEARCH = keys.SEARCH
ENTRIES = keys.OUTBOX  # (agent_id, position) -> Change, tuple-packed
HEADS = SEARCH["head"]  # (agent_id,) -> the last position given out
TRIMMED = SEARCH["trimmed"]  # (agent_id,) -> entries at or below this are cleared
CURSORS = SEARCH["cursor"]  # (index_id, agent_id) -> the last position that index applied
CONSUMERS = SEARCH["consumer"]  # (index_id,) -> last heartbeat, epoch seconds

# The commit topic of a transaction that appended entries (Transaction.notify_on_commit):
# this node's indexer wakes on it instead of polling.
NEW_ENTRIES = "search-outbox"

PASSAGE = "passage"
MESSAGE = "message"
RESYNC = "resync"


@attrs.frozen
class Change:
    """What one outbox entry says: re-read this passage, this message, or the whole agent."""

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


async def read_head(tr: Transaction, agent_id: str) -> int:
    return _int(await tr.get(HEADS.pack((agent_id,))))


def message_ref(thread: str, seq: int) -> int | str:
    """How a message is named in its agent's stream (and as its search document's key):
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
    agent_id: str,
    *,
    passages: Iterable[str] = (),
    messages: Iterable[int | str] = (),
    resync: bool = False,
) -> int:
    """Append the agent's changes to its outbox stream, in the caller's transaction.

    `passages`: ids of passages written or deleted; `messages`: the messages written
    (`message_ref`s); `resync`: many records changed at once (a
    reset history, a deleted agent), so the index re-reads the whole agent.
    Returns the last position used (the current one when nothing is recorded).
    """
    changes = [Change(PASSAGE, p) for p in passages] + [Change(MESSAGE, m) for m in messages]
    if resync:
        changes.append(Change(RESYNC))
    head = await read_head(tr, agent_id)
    for change in changes:
        head += 1
        tr.set(ENTRIES.pack((agent_id, head)), change.pack())
    if changes:
        tr.set(HEADS.pack((agent_id,)), keys.pack((head,)))
        tr.notify_on_commit(NEW_ENTRIES)
    return head


@attrs.frozen
class Pending:
    """The agent's entries after a position, as one snapshot saw them."""

    trimmed: int  # entries at or below this are gone: a consumer below it must rebuild
    entries: list[tuple[int, Change]]
    more: bool  # the read stopped at its limit


async def read_pending(tr: Transaction, agent_id: str, after: int, limit: int) -> Pending:
    trimmed = _int(await tr.get(TRIMMED.pack((agent_id,))))
    begin = key_after(ENTRIES.pack((agent_id, after)))
    end = ENTRIES.range((agent_id,)).stop
    rows = await tr.get_range(begin, end, limit=limit)
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
    tr: Transaction, index_id: str, agent_id: str, position: int, now: float, ttl: float
) -> int:
    """Move this index's cursor for the agent to `position` (never back), if it is a
    registered consumer, and clear the entries every live consumer has applied.
    Returns the agent's trimmed position.

    An index that is not registered (a search layer without a background
    indexer) holds nothing back: when it finds its entries trimmed, it rebuilds.
    """
    registered = await tr.get(CONSUMERS.pack((index_id,))) is not None
    cursor_key = CURSORS.pack((index_id, agent_id))
    if registered and position > _int(await tr.get(cursor_key)):
        tr.set(cursor_key, keys.pack((position,)))
    lowest = position
    for key, value in await tr.get_range(CONSUMERS.range().start, CONSUMERS.range().stop):
        (other,) = CONSUMERS.unpack(key)
        if other == index_id or keys.unpack(value)[0] < now - ttl:
            continue
        # A live consumer that has not applied this agent yet holds all of it back: it
        # finds the agent through these entries (a new agent, or one not yet warmed).
        lowest = min(lowest, _int(await tr.get(CURSORS.pack((other, agent_id)))))
    trimmed_key = TRIMMED.pack((agent_id,))
    trimmed = _int(await tr.get(trimmed_key))
    if lowest > trimmed:
        tr.clear_range(
            ENTRIES.range((agent_id,)).start, key_after(ENTRIES.pack((agent_id, lowest)))
        )
        tr.set(trimmed_key, keys.pack((lowest,)))
        trimmed = lowest
    return trimmed
