"""Agent files: export an agent with its blocks and tools; import a file as new records.

An import is one store transaction: every block, custom tool and agent of the
file is written, or nothing is, and a refused file changes nothing. Every record
gets a new server id; the file's own ids only say which agent holds which block
or tool, so one file imports any number of times, as that many new agents.

Tools are matched by name, as Letta matches them:

- a tool named like a base tool is this server's base tool, which is never replaced;
- a custom tool whose name another custom tool here already has replaces that
  tool's definition (its id stays) when `override_existing_tools`, and is
  otherwise taken as it is;
- any other custom tool is created;
- an MCP tool is linked to its server, which the file carries without secrets:
  the server here of the same name and configuration, else one made from the file
  (service/mcp_servers.py); the server's tool of that name, else one made from the
  file's schema (a refresh re-syncs it with what the server lists);
- tools of a kind this server cannot run (Composio, LangChain, Letta built-ins it
  lacks, MCP tools of a server the file does not carry) are left out of the agents
  that held them.

The history travels too: each conversation's messages and window (the default
one's as Letta's, the others in the agent's `conversations`), the agent's own
archival passages and the archives attached to it, each archive once however many
of the file's agents hold it (models/agentfile_history.py says how they map to
Letta's format). An imported agent's history is written in the import's
transaction, fenced like any history write (each new thread's lease is read), and
its messages and passages reach the search index through the outbox like any
others. A sleeptime group pairs its agents again (`_import_group`). Folders and files
come as new folders and files whose text the node's file worker chunks and indexes, the
agents attached to them and holding their files as the file says (agentfile_files.py).
Not imported: groups of other manager types, skills. The export side is in
agentfile_export.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import attrs

from kelpie_trio.agent.conversations import (
    Conversation,
    save_conversation,
)
from kelpie_trio.agent.message_index import write_messages
from kelpie_trio.agent.sleeptime import SleeptimeGroup, set_processed_place
from kelpie_trio.errors import Invalid, InvalidField, TooLarge
from kelpie_trio.models import convert
from kelpie_trio.models.agentfile import (
    AgentFileSchema,
    AgentSchema,
    ImportOptions,
    Loc,
    check_agent_file,
    sleeptime_groups,
)
from kelpie_trio.models.agentfile_history import (
    ArchiveSchema,
    import_history,
    import_passage,
    parse_file_time,
)
from kelpie_trio.models.agents import (
    AGENT_TYPES,
    Agent,
    CreateAgent,
)
from kelpie_trio.models.archives import Archive
from kelpie_trio.models.blocks import Block
from kelpie_trio.models.passages import default_archive_id
from kelpie_trio.models.tools import CreateTool, Tool
from kelpie_trio.search import outbox
from kelpie_trio.service.agentfile_export import AgentFileExport
from kelpie_trio.service.agentfile_files import AgentFileFolders, with_file_tools
from kelpie_trio.service.agents import AGENT_INDEX, AgentCases
from kelpie_trio.service.archives import ARCHIVE_INDEX
from kelpie_trio.service.common import micros
from kelpie_trio.service.mcp_servers import McpServerCases
from kelpie_trio.service.passages import (
    AGENT_ARCHIVES,
    ARCHIVE_AGENTS,
    write_passage,
)
from kelpie_trio.service.tools import ToolsNotFound
from kelpie_trio.storage import TransactionTooLarge, keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import set_blob
from kelpie_trio.tools.base import BASE_TOOLS_BY_ID, BASE_TOOLS_BY_NAME

__all__ = ["AgentFileCases"]

# Keys of Letta's legacy single-agent (v1) file, which has no `agents` list.
_LEGACY_KEYS = frozenset({"core_memory", "in_context_message_indices", "llm_config", "version"})


@contextlib.contextmanager
def _located(at: Loc) -> Iterator[None]:
    """Invalid from a helper that speaks of `body`, re-rooted at `at` in the file."""
    try:
        yield
    except Invalid as error:
        raise Invalid(
            [InvalidField([*at, *f.loc[1:]], f.msg, f.type) for f in error.fields]
        ) from None


def _context_window(entry: AgentSchema) -> int | None:
    """The agent's context window as the file gives it, kept when its model changes."""
    given = entry.context_window_limit or (entry.llm_config or {}).get("context_window")
    return given if isinstance(given, int) and not isinstance(given, bool) and given > 0 else None


def _file_handle(entry: AgentSchema) -> str | None:
    """The model handle the file names: `model`, else its llm_config's handle.

    A config without a handle (files of older Letta servers) names its model by
    endpoint type and model name, which make the handle for the providers both know.
    """
    llm = entry.llm_config or {}
    handle = entry.model or llm.get("handle")
    if handle is None and llm.get("model_endpoint_type") and llm.get("model"):
        handle = f"{llm['model_endpoint_type']}/{llm['model']}"
    return handle if isinstance(handle, str) else None


@attrs.frozen
class _AgentPlan:
    """A file agent made ready before the transaction: its record and new blocks."""

    at: Loc
    entry: AgentSchema
    agent: Agent
    memory: list[Block]  # created from the agent's own memory_blocks
    base: list[str]  # base tool names it gets by include_base_tools


class AgentFileCases(AgentFileExport, AgentFileFolders, AgentCases, McpServerCases):
    async def import_agent_file(
        self, data: Any, options: ImportOptions, at: Loc | None = None, options_at: str = "body"
    ) -> list[str]:
        """POST /v1/agents/import: new agents from a parsed agent file; their ids.

        Everything that can be checked without the store is checked first (the
        file's shape and references, block limits, tool sources, models), so a
        bad file is refused before the transaction starts; names are resolved
        inside it. Errors name the file's parts under `at` (where the request
        held the file) and the options under `options_at` ("body" or "query").
        """
        at = at or ["body"]
        file = self._read_file(data, at)
        blocks: dict[str, Block] = {}
        for j, entry in enumerate(file.blocks):
            with _located([*at, "blocks", j]):
                blocks[entry.id] = self._new_block(entry.as_create())
        base_tools, custom_tools = self._plan_tools(file, at)
        mcp = self._plan_mcp_import(file.mcp_servers, file.tools, at)
        plans = [
            self._plan_agent(entry, options, [*at, "agents", i], options_at)
            for i, entry in enumerate(file.agents)
        ]

        folder_embedding = self._folder_embedding(file, options, at, options_at)
        now = self.env.now()
        archive_ids = {a.id: self.env.new_id("archive") for a in file.archives}

        async def write(tr: Transaction) -> list[str]:
            folders = await self._import_folders(tr, file, folder_embedding, now)
            for entry in file.archives:  # each once, however many agents hold it
                await self._write_archive_copy(tr, entry, archive_ids[entry.id], now)
            tool_ids = dict(base_tools)  # file-local id -> id here
            tool_ids.update(await self._import_mcp(tr, mcp))
            for file_id, tool in custom_tools.items():
                tool_ids[file_id] = await self._put_tool(tr, tool, options.override_existing_tools)
            for block in blocks.values():
                self._write_block(tr, block, new=True)
            made: list[str] = []
            by_file_id: dict[str, Agent] = {}
            places: dict[str, dict[str, int]] = {}  # agent -> thread -> its last message
            placed: dict[str, dict[str, tuple[str, int]]] = {}  # agent -> file id -> place
            for plan in plans:
                for block in plan.memory:
                    self._write_block(tr, block, new=True)
                entry = plan.entry
                with _located(plan.at):
                    try:
                        tools = await self._agent_tools(
                            tr,
                            names=entry.tools or [],
                            # (tools of a kind not run here were left out of the import)
                            tool_ids=[tool_ids[t] for t in entry.tool_ids or [] if t in tool_ids],
                            base=plan.base,
                        )
                    except ToolsNotFound as missing:
                        raise missing.at(entry.tools or []) from None
                held = [blocks[b].id for b in dict.fromkeys(entry.block_ids or [])]
                agent = attrs.evolve(
                    plan.agent,
                    block_ids=held + [b.id for b in plan.memory],
                    tool_ids=with_file_tools(entry, [t.id for t in tools]),
                )
                self._write_agent(tr, agent)
                tr.set(AGENT_INDEX.pack((micros(agent.created_at), agent.id)), b"")
                self._link(tr, agent)
                self._attach_imported(tr, agent, entry, folders, now)
                places[agent.id], placed[agent.id] = await self._write_history(
                    tr, agent, entry, options.strip_messages
                )
                by_file_id[entry.id] = agent
                for archive_file_id in dict.fromkeys(entry.archive_ids):
                    archive_id = archive_ids[archive_file_id]
                    attached = keys.pack((micros(now),))
                    tr.set(AGENT_ARCHIVES.pack((agent.id, archive_id)), attached)
                    tr.set(ARCHIVE_AGENTS.pack((archive_id, agent.id)), b"")
                made.append(agent.id)
            for group in sleeptime_groups(file):
                self._import_group(tr, group, by_file_id, places, placed, now)
            return made

        try:
            made = await self.store.transact(write)
        except TransactionTooLarge as error:
            # All or nothing has a ceiling: what one transaction may write.
            raise TooLarge(
                f"the agent file is too large to import in one piece ({error}); "
                "split its agents into several files"
            ) from None
        if file.files:
            self.wake_file_worker()  # type: ignore[attr-defined]
        return made

    async def _write_archive_copy(
        self, tr: Transaction, entry: ArchiveSchema, archive_id: str, now: float
    ) -> None:
        archive = Archive(
            id=archive_id,
            name=entry.name,
            description=entry.description,
            embedding_config=entry.embedding_config,
            metadata=dict(entry.metadata or {}),
            created_at=now,
            updated_at=now,
        )
        set_blob(tr, keys.ARCHIVES.pack((archive_id,)), convert.encode_record(archive))
        tr.set(ARCHIVE_INDEX.pack((micros(now), archive_id)), b"")
        made = [
            import_passage(
                p, passage_id=self.env.new_id("passage"), agent_id=None, archive_id=archive_id,
                embedding_config=archive.embedding_config, now=now,
            )
            for p in entry.passages
        ]  # fmt: skip
        for passage in made:
            write_passage(tr, passage)
        if made:
            await outbox.record(tr, archive_id, passages=[p.id for p in made])

    def _import_group(
        self,
        tr: Transaction,
        entry: dict[str, Any],
        by_file_id: dict[str, Agent],
        places: dict[str, dict[str, int]],
        placed: dict[str, dict[str, tuple[str, int]]],
        now: float,
    ) -> None:
        """A sleeptime group of the file (checked by check_agent_file): the manager and its
        companions, paired again. As a group made by an update, it counts the turns taken
        after the import, not the history the file brought, in any of the manager's
        conversations."""
        config = entry["manager_config"]
        manager = by_file_id[config["manager_agent_id"]]
        companions = [by_file_id[ref] for ref in dict.fromkeys(entry["agent_ids"])]
        group = SleeptimeGroup(
            id=self.env.new_id("group"),
            manager_agent_id=manager.id,
            agent_ids=[c.id for c in companions],
            sleeptime_agent_frequency=config.get("sleeptime_agent_frequency"),
            description=str(entry.get("description") or ""),
            project_id=manager.project_id,
            hidden=entry.get("hidden") if isinstance(entry.get("hidden"), bool) else None,
            created_at=now,
            counted_seq=places[manager.id][manager.id],
            last_processed_seq=places[manager.id][manager.id],
        )
        for thread, seq in places[manager.id].items():
            if thread != manager.id:
                group.counted_in[thread] = group.processed_in[thread] = seq
        # Where the original's companion stopped reading, when the file says (a file from
        # Letta does not: its companion goes on from the end of what the file brought).
        stopped = entry.get("last_processed_message_ids")
        for file_id in stopped if isinstance(stopped, list) else []:
            if isinstance(file_id, str) and file_id in placed[manager.id]:
                thread, seq = placed[manager.id][file_id]
                set_processed_place(group, thread, seq)
        self._save_group(tr, group)
        # Letta writes enable_sleeptime false beside the group; the group is what pairs them,
        # and here the flag is what lets the companion run.
        self._write_agent(tr, attrs.evolve(manager, group_id=group.id, enable_sleeptime=True))
        for companion in companions:
            self._write_agent(tr, attrs.evolve(companion, group_id=group.id))

    async def _write_thread(
        self, tr: Transaction, agent: Agent, thread: str, messages: list[Any], context: Any
    ) -> None:
        # A history is written by its thread's actor, fenced by its lease; reading the new
        # thread's lease (nobody holds it yet) fences this write the same way.
        await tr.get(keys.LEASES.pack((thread,)))
        write_messages(tr, messages)  # with their entries in the time index
        if context.start_seq:
            tr.set(keys.CONTEXT.pack((thread,)), convert.encode_record(context))

    async def _write_history(
        self, tr: Transaction, agent: Agent, entry: AgentSchema, strip: bool = False
    ) -> tuple[dict[str, int], dict[str, tuple[str, int]]]:
        """The file's messages, window, other conversations and own passages of one new
        agent (`strip`: no message in any conversation); the place of the last message of
        each of its threads (-1: none), and the place each file message took, by its id."""
        now = self.env.now()
        if strip:
            entry = attrs.evolve(
                entry, messages=[], in_context_message_ids=[],
                conversations=[attrs.evolve(c, messages=[], in_context_message_ids=[])
                               for c in entry.conversations],
            )  # fmt: skip
        seqs: dict[str, int] = {}
        messages, context = import_history(
            entry.messages, entry.in_context_message_ids, agent_id=agent.id,
            new_id=lambda: self.env.new_id("message"), now=now, placed=seqs,
        )  # fmt: skip
        placed = {file_id: (agent.id, seq) for file_id, seq in seqs.items()}
        await self._write_thread(tr, agent, agent.id, messages, context)
        written = [(agent.id, m.seq) for m in messages]  # (thread, seq), for the outbox
        places = {agent.id: messages[-1].seq if messages else -1}
        for conversation_entry in entry.conversations:
            conversation = Conversation(
                id=self.env.new_id("conv"),
                agent_id=agent.id,
                created_at=parse_file_time(conversation_entry.created_at, now),
                updated_at=now,
                summary=conversation_entry.summary,
            )
            save_conversation(tr, conversation, new=True)
            seqs = {}
            held, window = import_history(
                conversation_entry.messages, conversation_entry.in_context_message_ids,
                agent_id=agent.id, new_id=lambda: self.env.new_id("message"), now=now,
                conversation_id=conversation.id, placed=seqs,
            )  # fmt: skip
            placed |= {file_id: (conversation.id, seq) for file_id, seq in seqs.items()}
            await self._write_thread(tr, agent, conversation.id, held, window)
            written += [(conversation.id, m.seq) for m in held]
            places[conversation.id] = held[-1].seq if held else -1
        passages = [
            import_passage(
                p, passage_id=self.env.new_id("passage"), agent_id=agent.id,
                archive_id=default_archive_id(agent.id), embedding_config=agent.embedding_config,
                now=now,
            )
            for p in entry.passages
        ]  # fmt: skip
        for passage in passages:
            write_passage(tr, passage)
        if passages:
            await outbox.record(tr, agent.id, passages=[p.id for p in passages])
        await outbox.record_messages(tr, agent.id, written)  # each thread's on its stream
        return places, placed

    @staticmethod
    def _read_file(data: Any, at: Loc) -> AgentFileSchema:
        if not isinstance(data, dict):
            raise Invalid.field(at, "expected an agent file: a JSON object", "model_type")
        if not isinstance(data.get("agents"), list) and _LEGACY_KEYS & data.keys():
            raise Invalid.field(
                at,
                "this is a legacy single-agent (v1) agent file, which is not supported; export "
                "the agent again from a current Letta server for the v2 format ('agents', "
                "'blocks', 'tools', ...)",
            )
        file = convert.structure_api(data, AgentFileSchema, where=".".join(map(str, at)))
        check_agent_file(file, at)
        return file

    def _plan_tools(self, file: AgentFileSchema, at: Loc) -> tuple[dict[str, str], dict[str, Tool]]:
        """The file's tools: those that are base tools here, and the custom ones to put."""
        base: dict[str, str] = {}  # file-local id -> base tool id
        custom: dict[str, Tool] = {}  # file-local id -> the tool as the file defines it
        defined: dict[str, int] = {}  # custom tool name -> its index in the file
        for i, entry in enumerate(file.tools):
            here = [*at, "tools", i]
            if entry.name in BASE_TOOLS_BY_NAME:
                base[entry.id] = BASE_TOOLS_BY_NAME[entry.name].id
                continue
            if entry.tool_type != "custom":
                continue  # a kind of tool this server cannot run
            if entry.source_code is None:
                raise Invalid.field([*here, "source_code"], "a custom tool needs its source_code")
            create = CreateTool(
                source_code=entry.source_code,
                description=entry.description,
                tags=entry.tags,
                # Letta writes "json" for a Python tool made with its JSON schema given.
                source_type="python" if entry.source_type in (None, "json") else entry.source_type,
                json_schema=entry.json_schema,
                args_json_schema=entry.args_json_schema,
                return_char_limit=entry.return_char_limit,
                pip_requirements=entry.pip_requirements,
                npm_requirements=entry.npm_requirements,
                default_requires_approval=entry.default_requires_approval,
                enable_parallel_execution=entry.enable_parallel_execution,
            )
            with _located(here):
                tool = self._new_tool(create)
            if tool.name in BASE_TOOLS_BY_NAME:  # its function is a base tool's
                base[entry.id] = BASE_TOOLS_BY_NAME[tool.name].id
                continue
            if tool.name in defined:
                raise Invalid.field(
                    [*here, "name"],
                    f"tools {defined[tool.name]} and {i} of the file both define '{tool.name}'",
                )
            defined[tool.name] = i
            custom[entry.id] = attrs.evolve(
                tool, metadata_=entry.metadata_, project_id=entry.project_id
            )
        return base, custom

    def _plan_agent(
        self, entry: AgentSchema, options: ImportOptions, at: Loc, options_at: str
    ) -> _AgentPlan:
        if entry.agent_type not in AGENT_TYPES:
            raise Invalid.field([*at, "agent_type"], f"unknown agent type {entry.agent_type!r}")
        with _located(at):  # rules the loop could not follow are refused, as at create
            self._check_rules(entry.tool_rules)
        model = self._import_model(entry, options, at, options_at)
        memory = []
        for j, create in enumerate(entry.memory_blocks or []):
            with _located([*at, "memory_blocks", j]):
                memory.append(self._new_block(create))
        name = options.name or entry.name or self._new_name()
        if options.append_copy_suffix and not options.name:
            name += "_copy"
        agent = self._new_agent(entry, model, name=name, project_id=options.project_id)
        base = self._base_tools_for(entry)
        return _AgentPlan(at, entry, agent, memory, base)

    def _import_model(
        self, entry: AgentSchema, options: ImportOptions, at: Loc, options_at: str
    ) -> dict[str, Any]:
        """The agent's model fields: the handles given with the import, else the file's.

        The file's model settings stay with the file's model; its context window
        stays whichever model the agent gets (Letta's `model` override does the same).
        """
        create = CreateAgent(
            model=options.model or _file_handle(entry),
            model_settings=None if options.model else entry.model_settings,
            context_window_limit=_context_window(entry),
            embedding=options.embedding
            or entry.embedding
            or (entry.embedding_config or {}).get("handle"),
        )
        try:
            return self._resolve_model(create)
        except Invalid as error:
            field = str(error.fields[0].loc[-1])  # "model" or "embedding"
            if getattr(options, field, None):  # the option named a model this server lacks
                raise Invalid.field([options_at, field], error.fields[0].msg) from None
            raise Invalid.field(
                [*at, field],
                f"{error.fields[0].msg}; import with the form field `{field}` set to one of "
                "this server's handles",
            ) from None

    async def _put_tool(self, tr: Transaction, tool: Tool, override: bool) -> str:
        """The id here of the file's custom `tool`: created, replacing, or the existing one."""
        holder = await self._named(tr, tool.name)
        if holder is None:
            self._write_tool(tr, tool)
            return tool.id
        if holder in BASE_TOOLS_BY_ID or not override:
            return holder
        current = await self._tool(tr, holder)
        replaced = attrs.evolve(
            tool,
            id=current.id,
            created_at=current.created_at,
            created_by_id=current.created_by_id,
            metadata_=tool.metadata_ if tool.metadata_ is not None else current.metadata_,
            project_id=tool.project_id if tool.project_id is not None else current.project_id,
        )
        self._write_tool(tr, replaced, current)
        return current.id
