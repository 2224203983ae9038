"""What the index holds and what a query asks (sans-IO values and plain rules).

A `Document` is the searchable view of one stored record: an archival passage
(keyed by its id) or a message of the agent's history (keyed by its sequence
number). The index keeps only what ranking and filtering need; results are
keys, and the caller loads the records themselves from the store, the source
of truth, so a result is never staler than the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import attrs
import orjson

from kelpie_trio.search.outbox import message_ref

if TYPE_CHECKING:
    from kelpie_trio.agent.messages import Message
    from kelpie_trio.models.passages import Passage

__all__ = [
    "MESSAGE",
    "PASSAGE",
    "Document",
    "Hit",
    "Kind",
    "Query",
    "embedding_handle",
    "from_message",
    "from_passage",
    "message_text",
    "tags_match",
]

Kind = Literal["passage", "message"]
PASSAGE: Kind = "passage"
MESSAGE: Kind = "message"


@attrs.frozen
class Document:
    kind: Kind
    agent_id: str  # the owner: an agent, or an archive for an archive's passages
    key: str  # a passage id, or a message's sequence number as text
    text: str
    created_at: float
    role: str | None = None  # messages only
    tags: tuple[str, ...] = ()  # passages only
    vector: tuple[float, ...] | None = None  # L2-normalized, when an embedding model is on
    # The handle of the model that embeds it (a passage's embedding_config); None: the
    # server's default model.
    embedding: str | None = None
    vector_model: str | None = None  # the name of the model `vector` came from


@attrs.frozen
class Query:
    """One search: filters first, then ranking; `offset`/`limit` page the ranked list."""

    agent_id: str
    kind: Kind
    text: str
    limit: int = 5
    offset: int = 0
    roles: tuple[str, ...] = ()  # empty: every role
    tags: tuple[str, ...] = ()
    tag_match_mode: Literal["any", "all"] = "any"
    start: float | None = None  # epoch seconds, inclusive
    end: float | None = None

    def admits(self, doc: Document) -> bool:
        """Whether `doc` passes this query's filters (agent and kind included)."""
        if doc.agent_id != self.agent_id or doc.kind != self.kind:
            return False
        if self.roles and doc.role not in self.roles:
            return False
        if not tags_match(doc.tags, self.tags, self.tag_match_mode):
            return False
        if self.start is not None and doc.created_at < self.start:
            return False
        return self.end is None or doc.created_at <= self.end


@attrs.frozen
class Hit:
    """A ranked result: the document's key, its relevance, and what ordering needs."""

    key: str
    score: float
    created_at: float
    retrievals: int = 0


def tags_match(have: tuple[str, ...] | list[str], wanted: tuple[str, ...], mode: str) -> bool:
    if not wanted:
        return True
    if mode == "all":
        return set(wanted) <= set(have)
    return not set(wanted).isdisjoint(have)


def embedding_handle(config: Any) -> str | None:
    """The handle an `embedding_config` names (None: the server's default model)."""
    handle = config.get("handle") if isinstance(config, dict) else None
    return handle if isinstance(handle, str) and handle else None


def from_passage(passage: Passage) -> Document:
    return Document(
        kind=PASSAGE,
        agent_id=passage.owner,  # an archive's passages are its own documents, shared
        key=passage.id,
        text=passage.text,
        created_at=passage.created_at,
        tags=tuple(passage.tags),
        embedding=embedding_handle(passage.embedding_config),
    )


def message_text(message: Message) -> str:
    """What of a message is searched: its content, or what its send_message call said."""
    parts = [message.content or ""]
    for call in message.tool_calls:
        if call.name == "send_message":
            try:
                said = orjson.loads(call.arguments).get("message")
            except (orjson.JSONDecodeError, AttributeError):
                said = None
            if isinstance(said, str):
                parts.append(said)
    return "\n".join(p for p in parts if p)


def from_message(message: Message) -> Document:
    return Document(
        kind=MESSAGE,
        agent_id=message.agent_id,
        key=str(message_ref(message.thread, message.seq)),
        text=message_text(message),
        created_at=message.created_at,
        role=message.role,
    )
