"""What the indexer reads from the store, each in the caller's snapshot: a stream's next
batch of changes (or, for a rebuild, every document it feeds), whether a stream's owner
still exists, and the vectors kept beside the records (so a rebuild never re-embeds)."""

from __future__ import annotations

import logging
from typing import Any

import attrs

from kelpie_trio.agent.conversations import load_conversation
from kelpie_trio.agent.messages import Message
from kelpie_trio.models import convert
from kelpie_trio.models.passages import Passage
from kelpie_trio.search import outbox
from kelpie_trio.search.documents import MESSAGE, PASSAGE, Document, from_message, from_passage
from kelpie_trio.search.index import DocRef
from kelpie_trio.search.vectors import Vector, digest, pack_vector, unpack_vector
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import get_blob, prefetch_blob

__all__ = [
    "VECTORS",
    "Batch",
    "agent_exists",
    "is_agent_stream",
    "is_archive",
    "read_agent_documents",
    "read_batch",
    "read_stream_documents",
    "set_vector",
    "stored_vectors",
    "stream_exists",
    "vector_range",
]

log = logging.getLogger("kelpie_trio.search")


def _decode(raw: bytes, cls: type, what: str) -> Any:
    try:
        return convert.decode_record(raw, cls)
    except Exception:  # a record this version cannot read must not stop the index
        log.warning("search: skipping an unreadable %s record", what, exc_info=True)
        return None


def is_archive(owner: str) -> bool:
    """Whether the owner holds passages only: an archive, or a folder (its files' chunks)."""
    return owner.startswith(("archive-", "source-"))


async def agent_exists(tr: Transaction, agent_id: str) -> bool:
    """Whether the stream's owner exists: an agent, an archive (whose passages are
    indexed once, under the archive, however many agents it is attached to) or a folder."""
    if agent_id.startswith("source-"):
        return bool(await tr.get_prefix(keys.FOLDERS.pack((agent_id,)), limit=1))
    subspace = keys.ARCHIVES if is_archive(agent_id) else keys.AGENTS
    return bool(await tr.get_prefix(subspace.pack((agent_id,)), limit=1))


async def stream_exists(tr: Transaction, stream: str) -> bool:
    """Whether the stream's owner exists: for a conversation's stream, the conversation
    (of that agent) and its agent."""
    owner, conversation = outbox.split_stream(stream)
    if conversation is not None:
        found = await load_conversation(tr, conversation)
        if found is None or found.agent_id != owner:
            return False
    return await agent_exists(tr, owner)


async def read_stream_documents(tr: Transaction, stream: str) -> list[Document]:
    """Every document the stream feeds (`outbox.in_scope`), in one snapshot: an agent
    stream's owner's passages (an archive's, a folder's) and its default conversation's
    messages; a conversation stream's messages. None for a stream whose owner is gone:
    what it left behind (a history written by an actor still running when its agent or
    conversation went) is not searchable by anyone."""
    if not await stream_exists(tr, stream):
        return []
    owner, conversation = outbox.split_stream(stream)
    sources: list[tuple[keys.Subspace, str, type, Any, str]] = []
    if conversation is None:
        sources.append((keys.PASSAGES, owner, Passage, from_passage, PASSAGE))
        if not is_archive(owner):  # an archive holds passages only
            sources.append((keys.MESSAGES, owner, Message, from_message, MESSAGE))
    else:
        sources.append((keys.MESSAGES, conversation, Message, from_message, MESSAGE))
    docs: list[Document] = []
    for subspace, prefix, cls, convert_doc, what in sources:
        parts: dict[Any, list[bytes]] = {}
        for key, value in await tr.get_prefix(subspace.pack((prefix,))):
            parts.setdefault(subspace.unpack(key)[1], []).append(value)
        for raw in parts.values():
            record = _decode(b"".join(raw), cls, what)
            if record is not None:
                docs.append(convert_doc(record))
    return docs


async def read_agent_documents(tr: Transaction, agent_id: str) -> list[Document]:
    """Every searchable record of the agent (or archive), as documents, in one snapshot:
    what all of its streams feed together."""
    streams = [agent_id] if is_archive(agent_id) else await outbox.agent_streams(tr, agent_id)
    return [doc for stream in streams for doc in await read_stream_documents(tr, stream)]


def is_agent_stream(stream: str) -> bool:
    owner, conversation = outbox.split_stream(stream)
    return conversation is None and not is_archive(owner)


@attrs.frozen
class Batch:
    upserts: list[Document]
    deletes: list[DocRef]
    position: int  # the stream's position this batch brings the index to
    rebuild: bool
    more: bool
    gone: bool = False  # a rebuild that found the stream's owner deleted
    # Conversation streams to rebuild before this batch is applied: named by an older
    # version's entries on the agent stream, or all of them when the agent's is rebuilt.
    threads: tuple[str, ...] = ()


async def read_batch(
    tr: Transaction, stream: str, after: int | None, limit: int, force: bool = False
) -> Batch:
    owner, _ = outbox.split_stream(stream)
    outbox.prefetch_head(tr, stream)
    pending = await outbox.read_pending(tr, stream, after or 0, limit)
    head = await outbox.read_head(tr, stream)
    rebuild = (
        force
        or after is None
        or pending.trimmed > after
        or head < after  # the stream was cleared (its owner deleted) since
        or any(change.what == outbox.RESYNC for _, change in pending.entries)
    )
    if not rebuild and pending.entries:
        # The records the entries name, read in the snapshot of the owner's check rather
        # than one snapshot each.
        for _, change in pending.entries:
            if outbox.stream_of_change(stream, change) == stream:
                prefetch_blob(tr, _record_key(owner, change))
        rebuild = not await stream_exists(tr, stream)
    if rebuild:
        gone = not await stream_exists(tr, stream)
        threads: tuple[str, ...] = ()
        if is_agent_stream(stream):
            # The whole agent: an older version's resync (or entries trimmed away) meant
            # its conversations' messages too.
            threads = tuple((await outbox.agent_streams(tr, owner))[1:])
        docs = await read_stream_documents(tr, stream)
        return Batch(docs, [], head, True, False, gone, threads)
    upserts: list[Document] = []
    deletes: list[DocRef] = []
    threads_named: dict[str, None] = {}
    seen: set[tuple[str, Any]] = set()
    for _, change in pending.entries:
        if (change.what, change.ref) in seen:
            continue
        seen.add((change.what, change.ref))
        feeds = outbox.stream_of_change(stream, change)
        if feeds != stream:
            threads_named[feeds] = None  # rebuilt in its own stream's compare-and-set
        elif change.what == outbox.PASSAGE:
            raw = await get_blob(tr, _record_key(owner, change))
            passage = None if raw is None else _decode(raw, Passage, PASSAGE)
            if passage is None:
                deletes.append((PASSAGE, str(change.ref)))
            else:
                upserts.append(from_passage(passage))
        elif change.what == outbox.MESSAGE:
            raw = await get_blob(tr, _record_key(owner, change))
            message = None if raw is None else _decode(raw, Message, MESSAGE)
            if message is None:
                deletes.append((MESSAGE, str(change.ref)))
            else:
                upserts.append(from_message(message))
    position = pending.entries[-1][0] if pending.entries else (after or 0)
    return Batch(upserts, deletes, position, False, pending.more, threads=tuple(threads_named))


def _record_key(owner: str, change: outbox.Change) -> bytes:
    """Where the passage or message an entry names is kept."""
    if change.what == outbox.PASSAGE:
        return keys.PASSAGES.pack((owner, change.ref))
    return outbox.message_key(owner, change.ref)


VECTORS = keys.SEARCH["vector"]  # (agent_id, kind, key) -> (model, text digest, float32s)


def vector_range(agent_id: str, conversation: str | None) -> tuple[bytes, bytes]:
    """The stored vectors of an owner (all of them, a deleted agent's), or of one of its
    conversations' messages (keys `"{conversation}/{seq}"`, between "conv/" and "conv0")."""
    if conversation is None:
        return keys.prefix_range(VECTORS.pack((agent_id,)))
    return (VECTORS.pack((agent_id, MESSAGE, conversation + "/")),
            VECTORS.pack((agent_id, MESSAGE, conversation + "0")))  # fmt: skip


def set_vector(tr: Transaction, doc: Document, model: str, vector: Vector) -> None:
    """Keep `doc`'s vector from `model` in the store: a rebuild reads it, never re-embeds."""
    value = keys.pack((model, digest(doc.text), pack_vector(vector)))
    tr.set(VECTORS.pack((doc.agent_id, doc.kind, doc.key)), value)


async def stored_vectors(
    tr: Transaction, model: str, docs: list[Document]
) -> dict[tuple[str, str], Vector]:
    found: dict[tuple[str, str], Vector] = {}
    for doc in docs:
        raw = await tr.get(VECTORS.pack((doc.agent_id, doc.kind, doc.key)))
        if raw is None:
            continue
        name, text_digest, packed = keys.unpack(raw)
        if name == model and text_digest == digest(doc.text):
            found[(doc.kind, doc.key)] = unpack_vector(packed)
    return found
