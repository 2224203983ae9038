"""Conversations (Letta's client.conversations): create, read, list, update, delete, fork,
cancel, recompile; their messages are sent and listed through the thread's actor as an
agent's default history is (service/messages.py). The records: agent/conversations.py.

A route names a conversation by its id, or the agent's default one by `default` with the
agent's id beside it (or, as Letta still accepts, by the agent's id in its place):
`resolve` turns either into the thread its actor is keyed by.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import attrs

from kelpie_trio.agent import runs, wait_graph
from kelpie_trio.agent.context import AgentContext
from kelpie_trio.agent.conversations import (
    Conversation,
    agent_conversation_ids,
    delete_conversation_record,
    is_conversation,
    load_conversation,
    require_conversation,
    save_conversation,
)
from kelpie_trio.agent.message_index import clear_history, write_messages
from kelpie_trio.agent.messages import Message
from kelpie_trio.agent.runs import Run
from kelpie_trio.agent.step import compile_system
from kelpie_trio.agent.tool_rules import rules_of, rules_prompt
from kelpie_trio.agent.window import read_context
from kelpie_trio.errors import Conflict, Invalid, NotFound, ServiceError
from kelpie_trio.llm.catalog import UnknownModel
from kelpie_trio.models import convert
from kelpie_trio.models.blocks import Block, CreateBlock
from kelpie_trio.models.passages import parse_timestamp
from kelpie_trio.search import outbox
from kelpie_trio.service.common import MAX_PAGE, ServiceBase, read_record
from kelpie_trio.service.run_stream import RetrieveStreamRequest
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = ["ConversationCases", "Thread"]

DEFAULT = "default"


# What is taken is what the API document says: model settings only when they ask for
# nothing (see `_unsupported`).
_NOTHING = {"schema": {"type": "null"}}
_WHEN = {"schema": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}}


@attrs.define
class CreateConversation:
    summary: str | None = None
    isolated_block_labels: list[str] | None = None
    model: str | None = None
    model_settings: Any = attrs.field(default=None, metadata=_NOTHING)


@attrs.define
class UpdateConversation:
    summary: str | None = None
    model: str | None = None
    model_settings: Any = attrs.field(default=None, metadata=_NOTHING)
    last_message_at: str | None = attrs.field(default=None, metadata=_WHEN)


@attrs.frozen
class Thread:
    """Where a conversation route points: the agent, and the conversation (None for the
    agent's default one)."""

    agent_id: str
    conversation: Conversation | None = None

    @property
    def key(self) -> str:
        return self.conversation.id if self.conversation is not None else self.agent_id


def _unsupported(body: CreateConversation | UpdateConversation) -> None:
    # Said plainly rather than stored and ignored.
    if body.model_settings is not None:
        raise Invalid.field(
            ["body", "model_settings"],
            "per-conversation model settings are not supported yet; `model` is",
        )


class _IsolatedBlocks:
    """A conversation's own copies of the agent's blocks (Letta's isolated blocks)."""

    async def _copy_block(
        self, tr: Transaction, agent_id: str, label: str, source_id: str | None = None
    ) -> str:
        """A new block copying the agent's block of `label` (or the block `source_id`,
        a fork's source's copy), attached to no agent; its id."""
        if source_id is not None:
            source = await self._block(tr, source_id)  # type: ignore[attr-defined]
        else:
            blocks = await self.agent_blocks(tr, agent_id)  # type: ignore[attr-defined]
            found = [b for b in blocks if b.label == label]
            if not found:
                raise ServiceError(f"Block with label '{label}' not found on agent '{agent_id}'")
            source = found[0]
        fields = {f: getattr(source, f) for f in ("value", "label", "limit", "description",
                                                  "read_only", "metadata")}  # fmt: skip
        copy = self._new_block(CreateBlock(**fields))  # type: ignore[attr-defined]
        self._write_block(tr, copy, new=True)  # type: ignore[attr-defined]
        return copy.id

    async def _drop_block(self, tr: Transaction, block_id: str) -> None:
        """A copy goes as any deleted block goes (deleted already: nothing to do)."""
        block = await read_record(tr, keys.BLOCKS.pack((block_id,)), Block)
        if block is not None:
            await self.erase_block(tr, block)  # type: ignore[attr-defined]


class ConversationCases(_IsolatedBlocks, ServiceBase):
    # -- naming a thread ------------------------------------------------------------

    async def resolve(self, conversation_id: str, agent_id: str | None = None) -> Thread:
        """The thread a route names (see the module's docstring), checked to exist."""

        async def read(tr: Transaction) -> Thread:
            return await self.resolve_in(tr, conversation_id, agent_id)

        return await self.store.transact(read)

    async def resolve_in(
        self, tr: Transaction, conversation_id: str, agent_id: str | None = None
    ) -> Thread:
        if conversation_id == DEFAULT:
            if not agent_id:  # no such conversation, as Letta answers
                raise NotFound("Conversation", "default' (name the agent with agent_id)")
            await runs.require_agent(tr, agent_id)
            return Thread(agent_id)
        if conversation_id.startswith("agent-"):  # Letta's older form of the default
            await runs.require_agent(tr, conversation_id)
            return Thread(conversation_id)
        if not is_conversation(conversation_id):
            raise NotFound("Conversation", conversation_id)
        conversation = await require_conversation(tr, conversation_id)
        return Thread(conversation.agent_id, conversation)

    # -- records ----------------------------------------------------------------------

    def _model_config(self, handle: str | None) -> dict[str, Any] | None:
        if handle is None:
            return None
        try:
            return self.catalog.llm_config_for(handle)
        except UnknownModel as error:
            raise Invalid.field(["body", "model"], str(error)) from None

    async def create_conversation(self, agent_id: str | None, body: Any) -> dict[str, Any]:
        if not agent_id:
            raise Invalid.field(["query", "agent_id"], "agent_id is required")
        request = convert.structure_api(body if body is not None else {}, CreateConversation)
        _unsupported(request)
        now = self.env.now()
        conversation = Conversation(
            id=self.env.new_id("conv"),
            agent_id=agent_id,
            created_at=now,
            updated_at=now,
            summary=request.summary,
            model=request.model,
            model_llm_config=self._model_config(request.model),
        )

        async def create(tr: Transaction) -> dict[str, Any]:
            await runs.require_agent(tr, agent_id)
            made = attrs.evolve(conversation, isolated_blocks={})
            for label in dict.fromkeys(request.isolated_block_labels or []):
                made.isolated_blocks[label] = await self._copy_block(tr, agent_id, label)
            save_conversation(tr, made, new=True)
            return _render(made, [])

        return await self.store.transact(create)

    async def get_conversation(self, conversation_id: str) -> dict[str, Any]:
        async def read(tr: Transaction) -> dict[str, Any]:
            conversation = await _named(tr, conversation_id)
            return _render(conversation, await _in_context_ids(tr, conversation.id))

        return await self.store.transact(read)

    async def list_conversations(
        self,
        *,
        agent_id: str | None,
        limit: int = 50,
        after: str | None = None,
        summary_search: str | None = None,
        order: Literal["asc", "desc"] = "desc",
        order_by: str = "created_at",
    ) -> list[dict[str, Any]]:
        async def read(tr: Transaction) -> list[tuple[Conversation, list[str]]]:
            if agent_id is not None:
                await runs.require_agent(tr, agent_id)
                ids = await agent_conversation_ids(tr, agent_id)
            else:
                rows = await tr.get_prefix(keys.CONVERSATIONS["conv"].key())
                ids = [keys.CONVERSATIONS["conv"].unpack(k)[0] for k, _ in rows]
            found = [await load_conversation(tr, i) for i in ids]
            listed = [c for c in found if c is not None]
            if summary_search:
                needle = summary_search.lower()
                listed = [c for c in listed if needle in (c.summary or "").lower()]
            return [(c, await _in_context_ids(tr, c.id)) for c in listed]

        listed = await self.store.transact(read)

        def sort_key(item: tuple[Conversation, list[str]]) -> tuple[float, str]:
            c = item[0]
            when = c.last_message_at if order_by == "last_message_at" else c.created_at
            return (when or 0.0, c.id)

        listed.sort(key=sort_key, reverse=order == "desc")
        ids = [c.id for c, _ in listed]
        if after is not None:
            listed = listed[ids.index(after) + 1 :] if after in ids else []
        return [_render(c, shown) for c, shown in listed[: min(limit, MAX_PAGE)]]

    async def update_conversation(self, conversation_id: str, body: Any) -> dict[str, Any]:
        request = convert.structure_api(body, UpdateConversation)
        _unsupported(request)
        fields = set(body) if isinstance(body, dict) else set()
        config = self._model_config(request.model)
        last_message_at = None
        if request.last_message_at is not None:
            try:
                last_message_at = parse_timestamp(request.last_message_at)
            except ValueError:
                raise Invalid.field(
                    ["body", "last_message_at"], "not an ISO 8601 date-time"
                ) from None

        async def update(tr: Transaction) -> dict[str, Any]:
            conversation = await _named(tr, conversation_id)
            if "summary" in fields:
                conversation.summary = request.summary
            if "model" in fields:
                conversation.model, conversation.model_llm_config = request.model, config
            if last_message_at is not None:
                conversation.last_message_at = last_message_at
            conversation.updated_at = self.env.now()
            save_conversation(tr, conversation)
            return _render(conversation, await _in_context_ids(tr, conversation.id))

        return await self.store.transact(update)

    async def delete_conversation(self, conversation_id: str) -> None:
        """The conversation, its history, context and runs go; a turn running in it stops
        at its next checkpoint (its run is gone), as when an agent is deleted."""

        async def delete(tr: Transaction) -> None:
            conversation = await _named(tr, conversation_id)
            delete_conversation_record(tr, conversation)
            for copy_id in conversation.isolated_blocks.values():  # its own, as in Letta
                await self._drop_block(tr, copy_id)
            await clear_history(tr, conversation.id)
            tr.clear(keys.CONTEXT.pack((conversation.id,)))
            wait_graph.forget_thread(tr, conversation.id)
            for run_id in await runs.agent_run_ids(tr, conversation.agent_id):
                run = await runs.load_run(tr, run_id)
                if run is not None and run.conversation_id == conversation.id:
                    runs.delete_run(tr, run)
            stream = outbox.stream_of(conversation.agent_id, conversation.id)
            await outbox.record(tr, stream, resync=True)  # the index forgets its messages

        await self.store.transact(delete)

    async def fork_conversation(
        self, conversation_id: str, agent_id: str | None = None
    ) -> dict[str, Any]:
        """A new conversation of the same agent that starts from the source's in-context
        messages (copied, with new ids, into its own history) and its summary."""
        now = self.env.now()
        new_id = self.env.new_id("conv")

        async def fork(tr: Transaction) -> dict[str, Any]:
            thread = await self.resolve_in(tr, conversation_id, agent_id)
            source = thread.conversation
            context, history = await read_context(tr, thread.key)  # as a step reads it
            forked = Conversation(
                id=new_id,
                agent_id=thread.agent_id,
                created_at=now,
                updated_at=now,
                summary=source.summary if source is not None else None,
                model=source.model if source is not None else None,
                model_llm_config=source.model_llm_config if source is not None else None,
            )
            if source is not None:  # its own copies of the source's own blocks, as they are
                for label, copy_id in source.isolated_blocks.items():
                    forked.isolated_blocks[label] = await self._copy_block(
                        tr, thread.agent_id, label, copy_id
                    )
            save_conversation(tr, forked, new=True)
            # Its history is written here, not by its actor: reading the new thread's lease
            # (nobody holds it yet) fences the write as every history write is fenced.
            await tr.get(keys.LEASES.pack((new_id,)))
            copies = [
                attrs.evolve(m, id=self.env.new_id("message"), seq=i, conversation_id=new_id)
                for i, m in enumerate(_whole_turns(history))
            ]
            write_messages(tr, copies)
            if context.summary:  # what the source had summarized comes along
                kept = AgentContext(summary=context.summary, evicted=context.evicted)
                tr.set(keys.CONTEXT.pack((new_id,)), convert.encode_record(kept))
            await outbox.record_messages(tr, thread.agent_id, [(new_id, m.seq) for m in copies])
            return _render(forked, [m.id for m in copies])

        return await self.store.transact(fork)

    async def recompile_conversation(self, conversation_id: str, agent_id: str | None) -> str:
        """The system prompt as the thread's next step compiles it. Every step compiles it
        afresh from the blocks as they are, so there is nothing stored to rebuild."""

        async def read(tr: Transaction) -> str:
            thread = await self.resolve_in(tr, conversation_id, agent_id)
            isolated = thread.conversation.isolated_blocks if thread.conversation else None
            view = await self.view_in(tr, thread.agent_id, isolated)  # type: ignore[attr-defined]
            rules = rules_prompt(rules_of(view.agent.tool_rules))
            return compile_system(view.agent.system or "", view.blocks, rules)

        return await self.store.transact(read)

    async def cancel_conversation(
        self, conversation_id: str, agent_id: str | None = None
    ) -> dict[str, Any]:
        """Cancel the thread's unfinished runs; Letta's 409 when there are none."""
        thread = await self.resolve(conversation_id, agent_id)
        outcome = await self.cancel_runs(  # type: ignore[attr-defined]
            thread.agent_id, None, thread=thread.key
        )
        if not outcome:
            what = (
                f"conversation {thread.key}"
                if thread.conversation is not None
                else f"agent {thread.agent_id}"
            )
            raise Conflict(f"No active runs to cancel for {what}")
        return outcome

    async def conversation_stream(
        self, conversation_id: str, body: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """`POST /v1/conversations/{id}/stream`: resume the stream of a background run of
        the thread, named by `run_id`, by the `otid` of the message that started it, or
        else its most recent unfinished run (Letta's order)."""
        given = body if isinstance(body, dict) else {}
        request = convert.structure_api(given, RetrieveStreamRequest)

        async def find(tr: Transaction) -> Run:
            thread = await self.resolve_in(tr, conversation_id, request.agent_id)
            if request.run_id is not None:
                run = await runs.load_run(tr, request.run_id)
                if run is None:
                    raise NotFound("Run", request.run_id)
                return run
            if request.otid is not None:
                run = await runs.find_by_key(tr, thread.key, f"otid:{request.otid}")
                if run is None:
                    raise NotFound("Run", f"(otid={request.otid})")
                return run
            open_runs = [await runs.load_run(tr, i) for i in await runs.open_runs(tr, thread.key)]
            found = [r for r in open_runs if r is not None]
            if not found:
                raise ServiceError("No active runs found for this conversation.")
            return max(found, key=lambda r: (r.created_at, r.id))

        run = await self.store.transact(find)
        return await self.retrieve_run_stream(run.id, body)  # type: ignore[attr-defined]


async def _named(tr: Transaction, conversation_id: str) -> Conversation:
    if not is_conversation(conversation_id):
        raise NotFound("Conversation", conversation_id)
    return await require_conversation(tr, conversation_id)


async def _in_context_ids(tr: Transaction, thread: str) -> list[str]:
    return [m.id for m in (await read_context(tr, thread))[1]]


def _whole_turns(history: list[Message]) -> list[Message]:
    """The history without a tail that waits for something (a reply whose calls have no
    results yet, an approval request): a fork starts from a settled conversation."""
    answered = {m.tool_call_id for m in history if m.role == "tool"}
    end = len(history)
    for i, m in enumerate(history):
        if m.role == "assistant" and any(c.id not in answered for c in m.tool_calls):
            end = i
            break
    return history[:end]


def _render(conversation: Conversation, in_context: list[str]) -> dict[str, Any]:
    """Letta's Conversation."""
    last = conversation.last_message_at
    return {
        "id": conversation.id,
        "agent_id": conversation.agent_id,
        "created_at": convert.iso(conversation.created_at),
        "updated_at": convert.iso(conversation.updated_at),
        "created_by_id": None,
        "last_updated_by_id": None,
        "summary": conversation.summary,
        "in_context_message_ids": in_context,
        "isolated_block_ids": list(conversation.isolated_blocks.values()),
        "model": conversation.model,
        "model_settings": None,
        "last_message_at": convert.iso(last) if last is not None else None,
    }
