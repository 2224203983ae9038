"""Agent files, the export side: an agent (with the agents of the sleeptime group it
manages) read in one snapshot and written as Letta's agent file (models/agentfile.py).

A mixin of AgentFileCases (service/agentfile.py says what travels and how it maps); here
are the reads: each agent's view, the history and window of each of its conversations,
its passages, the archives it holds (each once), the MCP servers its tools come from; its
folders and files are read by agentfile_files.py.
"""

from __future__ import annotations

from typing import Any

from kelpie_trio.agent.context import AgentContext
from kelpie_trio.agent.conversations import (
    agent_conversation_ids,
    is_conversation,
    load_conversation,
)
from kelpie_trio.agent.history import read_history
from kelpie_trio.agent.step import compile_system
from kelpie_trio.agent.tool_rules import rules_of, rules_prompt
from kelpie_trio.agent.window import HISTORY_WINDOW
from kelpie_trio.errors import NotFound
from kelpie_trio.models import convert
from kelpie_trio.models.agentfile import AgentFileSchema, AgentPart, export_agent_file
from kelpie_trio.models.agentfile_history import (
    ArchiveSchema,
    ConversationSchema,
    export_history,
    export_passage,
)
from kelpie_trio.models.agents import Agent
from kelpie_trio.models.archives import Archive
from kelpie_trio.models.convert import iso
from kelpie_trio.models.passages import Passage
from kelpie_trio.service.common import read_record
from kelpie_trio.service.passages import PASSAGE_INDEX, attached_archive_ids
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = ["AgentFileExport"]


class _Numbering:
    """File-local ids numbered across the whole file, per kind (`message-0`, `message-1`...),
    as Letta numbers them: two agents or conversations never share one."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def take(self, kind: str, count: int) -> int:
        """The first of `count` numbers of `kind`, reserved."""
        first = self._next.get(kind, 0)
        self._next[kind] = first + count
        return first

    def next(self, kind: str) -> str:
        return f"{kind}-{self.take(kind, 1)}"


class AgentFileExport:
    # AgentCases' and McpServerCases': the store, the clock, records and views.
    store: Any
    env: Any
    _agent: Any
    _view: Any
    group_of: Any
    _servers_of_tools: Any
    _export_folders: Any  # AgentFileFolders'

    async def export_agent_file(
        self, agent_id: str, *, conversation_id: str | None = None, scrub_messages: bool = False
    ) -> AgentFileSchema:
        """GET /v1/agents/{id}/export: the agent and, as Letta adds them, the agents of the
        sleeptime group it manages; their blocks and tools, histories and windows, other
        conversations, passages and archives; read in one snapshot.

        As Letta's options: `conversation_id` exports that conversation of the agent as its
        messages and window (and no other conversation); `scrub_messages` exports no
        message (conversations come with their summaries only)."""
        now = self.env.now()

        async def read(tr: Transaction) -> AgentFileSchema:
            primary = await self._agent(tr, agent_id)
            if conversation_id is not None:
                # Not an id of this server's kind (nor a key worth reading): none such.
                if not is_conversation(conversation_id) or len(conversation_id) > 64:
                    raise NotFound("Conversation", conversation_id[:100])
                chosen = await load_conversation(tr, conversation_id)
                if chosen is None or chosen.agent_id != agent_id:
                    raise NotFound("Conversation", conversation_id)
            group = await self.group_of(tr, primary)
            agents = [primary]
            for companion_id in group.agent_ids if group is not None else []:
                companion = await read_record(tr, keys.AGENTS.pack((companion_id,)), Agent)
                if companion is not None:
                    agents.append(companion)
            counter = _Numbering()
            folders = await self._export_folders(tr, agents)
            # Where the companion stopped reading, in each of the primary's conversations.
            processed: list[str | None] = []
            archives: dict[str, ArchiveSchema] = {}
            parts = []
            for i, agent in enumerate(agents):
                view = await self._view(tr, agent)
                file_id = f"agent-{i}"
                thread = conversation_id if conversation_id and agent is primary else agent.id
                messages, in_context, ids = await self._export_thread(
                    tr, view, thread, file_id, counter, now
                )
                if group is not None and agent is primary and thread == agent.id:
                    processed.append(ids.get(group.last_processed_seq))
                own = [export_passage(p, counter.next("passage"))
                       for p in await _owner_passages(tr, agent.id)]  # fmt: skip
                held = []
                for archive_id in await attached_archive_ids(tr, agent.id):
                    if archive_id not in archives:
                        entry = await self._export_archive(tr, archive_id, counter, len(archives))
                        if entry is None:
                            continue
                        archives[archive_id] = entry
                    held.append(archives[archive_id].id)
                conversations = []
                others = [] if conversation_id else await agent_conversation_ids(tr, agent.id)
                for other in others:
                    conversation = await load_conversation(tr, other)
                    if conversation is None:
                        continue
                    messages_there, window, ids = await self._export_thread(
                        tr, view, other, file_id, counter, now
                    )
                    if group is not None and agent is primary:
                        processed.append(ids.get(group.processed_in.get(other, -1)))
                    if scrub_messages:
                        messages_there, window = [], []
                    conversations.append(
                        ConversationSchema(
                            id=counter.next("conversation"), summary=conversation.summary,
                            created_at=iso(conversation.created_at), messages=messages_there,
                            in_context_message_ids=window,
                        )
                    )  # fmt: skip
                if scrub_messages:
                    messages, in_context = [], []
                parts.append(AgentPart(view=view, messages=messages, in_context=in_context,
                                       passages=own, archive_ids=held,
                                       conversations=conversations,
                                       source_ids=folders.source_ids[agent.id],
                                       files_agents=folders.files_agents[agent.id]))  # fmt: skip
            tools = list({t.id: t for part in parts for t in part.view.tools}.values())
            servers = await self._servers_of_tools(tr, tools)
            if scrub_messages:
                processed = []
            return export_agent_file(parts, now=now, archives=list(archives.values()),
                                     mcp_servers=servers, group=group,
                                     processed=[p for p in processed if p],
                                     sources=folders.sources, files=folders.files)  # fmt: skip

        return await self.store.transact(read)

    @staticmethod
    async def _export_thread(
        tr: Transaction, view: Any, thread: str, file_id: str, counter: _Numbering, now: float
    ) -> tuple[list[Any], list[str], dict[int, str]]:
        """One conversation's history and window (the default one's: `thread` is the agent),
        and the file id each stored message got, by its place."""
        raw = await tr.get(keys.CONTEXT.pack((thread,)))
        context = AgentContext() if raw is None else convert.decode_record(raw, AgentContext)
        rules = rules_prompt(rules_of(view.agent.tool_rules))
        system = compile_system(view.agent.system or "", view.blocks, rules)
        history = await read_history(tr, thread)
        first = counter.take("message", len(history) + 1)  # the system prompt, then each
        messages, window = export_history(history, context, HISTORY_WINDOW, system, now=now,
                                          agent_file_id=file_id, first=first)  # fmt: skip
        return messages, window, {m.seq: f"message-{first + 1 + i}" for i, m in enumerate(history)}

    @staticmethod
    async def _export_archive(
        tr: Transaction, archive_id: str, counter: _Numbering, index: int
    ) -> ArchiveSchema | None:
        archive = await read_record(tr, keys.ARCHIVES.pack((archive_id,)), Archive)
        if archive is None:
            return None
        held = [export_passage(p, counter.next("passage"))
                for p in await _owner_passages(tr, archive_id)]  # fmt: skip
        return ArchiveSchema(id=f"archive-{index}", name=archive.name,
                             description=archive.description,
                             embedding_config=archive.embedding_config,
                             metadata=archive.metadata, passages=held)  # fmt: skip


async def _owner_passages(tr: Transaction, owner: str) -> list[Passage]:
    """Every passage of an agent (its own) or an archive, in creation order."""
    found = []
    for key, _ in await tr.get_prefix(PASSAGE_INDEX.pack((owner,))):
        passage_id = PASSAGE_INDEX.unpack(key)[2]
        passage = await read_record(tr, keys.PASSAGES.pack((owner, passage_id)), Passage)
        if passage is not None:
            found.append(passage)
    return found
