"""Conversations: the threads of one agent, each with its own history, run concurrently.

Letta's conversations let one agent talk in several threads at once; its memory blocks
are shared by all of them (edited transactionally, in each step's transaction), each
thread has its own in-context history, summary and runs.

The actor identity follows: one activation per *thread*, where a thread is the agent
id for the agent's default conversation (the history every agent always had, and what
the agent-level routes mean) and the conversation id for any other. The thread is the
actor key, so leases, fencing and single activation hold per conversation, and it owns
the per-thread keys: the history `MESSAGES(thread, seq)`, the context `CONTEXT(thread)`,
a run's open entry and idempotency keys (agent/runs.py), and its search outbox stream
(search/outbox.py: `"{agent}/{conversation}"`, so threads never meet on one head).
Agent-wide records (the agent, its blocks, tools, passages and the run list) stay keyed
by the agent. A conversation may isolate some blocks: it gets its own copies of them, which its
steps read and edit in place of the agent's.

Keys (under `keys.CONVERSATIONS`):
  conv  (conversation_id,)                      -> Conversation
  agent (agent_id, created_us, conversation_id) -> b""   an agent's conversations
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.errors import NotFound
from kelpie_trio.models import convert
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = [
    "CONVERSATION_PREFIX",
    "Conversation",
    "agent_conversation_ids",
    "agent_threads",
    "delete_conversation_record",
    "is_conversation",
    "load_conversation",
    "require_conversation",
    "save_conversation",
]

CONVERSATION_PREFIX = "conv-"

RECORDS = keys.CONVERSATIONS["conv"]
BY_AGENT = keys.CONVERSATIONS["agent"]


@attrs.define(kw_only=True)
class Conversation:
    id: str
    agent_id: str
    created_at: float
    updated_at: float
    summary: str | None = None
    # The model handle this conversation's runs use instead of the agent's (a send's own
    # override_model wins), with its llm_config as the catalog gave it when set.
    model: str | None = None
    model_llm_config: dict[str, Any] | None = None
    last_message_at: float | None = None
    # Its own copies of some of the agent's blocks (label -> block id, made when it was
    # created): its steps see and edit these in their place; the others are shared.
    isolated_blocks: dict[str, str] = attrs.Factory(dict)


def is_conversation(thread: str) -> bool:
    """Whether a thread (an actor key) is a conversation, not an agent's default one."""
    return thread.startswith(CONVERSATION_PREFIX)


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


async def load_conversation(tr: Transaction, conversation_id: str) -> Conversation | None:
    raw = await tr.get(RECORDS.pack((conversation_id,)))
    return None if raw is None else convert.decode_record(raw, Conversation)


async def require_conversation(tr: Transaction, conversation_id: str) -> Conversation:
    found = await load_conversation(tr, conversation_id)
    if found is None:
        raise NotFound("Conversation", conversation_id)
    return found


def save_conversation(tr: Transaction, conversation: Conversation, *, new: bool = False) -> None:
    tr.set(RECORDS.pack((conversation.id,)), convert.encode_record(conversation))
    if new:
        key = (conversation.agent_id, _micros(conversation.created_at), conversation.id)
        tr.set(BY_AGENT.pack(key), b"")


async def mark_last_message(tr: Transaction, thread: str, when: float) -> None:
    """A request's messages entered `thread`: a conversation's last_message_at (Letta sets
    it per request), in the transaction that stores them, so a refused send changes
    nothing. The default conversation has no record."""
    if not is_conversation(thread):
        return
    conversation = await load_conversation(tr, thread)
    if conversation is not None:
        conversation.last_message_at = when
        save_conversation(tr, conversation)


def delete_conversation_record(tr: Transaction, conversation: Conversation) -> None:
    tr.clear(RECORDS.pack((conversation.id,)))
    key = (conversation.agent_id, _micros(conversation.created_at), conversation.id)
    tr.clear(BY_AGENT.pack(key))


async def agent_conversation_ids(tr: Transaction, agent_id: str) -> list[str]:
    """The agent's conversations (not its default one), oldest first."""
    rows = await tr.get_prefix(BY_AGENT.pack((agent_id,)))
    return [BY_AGENT.unpack(k)[2] for k, _ in rows]


async def agent_threads(tr: Transaction, agent_id: str) -> list[str]:
    """Every thread of the agent: its default conversation first, then the others."""
    return [agent_id, *await agent_conversation_ids(tr, agent_id)]
