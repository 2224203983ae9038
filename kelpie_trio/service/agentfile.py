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
- tools of a kind this server cannot run (MCP, Composio, LangChain, Letta
  built-ins it lacks) are left out of the agents that held them.

Not imported yet: messages (a later issue brings them; the file's history is
read for its shape and dropped, which is also what `strip_messages` asks),
groups, files, sources, MCP servers and skills.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import attrs

from kelpie_trio.errors import Invalid, InvalidField, TooLarge
from kelpie_trio.models import convert
from kelpie_trio.models.agentfile import (
    AgentFileSchema,
    AgentSchema,
    ImportOptions,
    Loc,
    check_agent_file,
    export_agent_file,
)
from kelpie_trio.models.agents import (
    AGENT_TYPES,
    Agent,
    AgentView,
    CreateAgent,
)
from kelpie_trio.models.blocks import Block
from kelpie_trio.models.tools import CreateTool, Tool
from kelpie_trio.service.agents import AGENT_INDEX, AgentCases
from kelpie_trio.service.common import micros
from kelpie_trio.service.tools import ToolsNotFound
from kelpie_trio.storage import TransactionTooLarge
from kelpie_trio.storage.base import Transaction
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


class AgentFileCases(AgentCases):
    async def export_agent_file(self, agent_id: str) -> AgentFileSchema:
        """GET /v1/agents/{id}/export: the agent, its blocks and tools, as one file."""

        async def read(tr: Transaction) -> AgentView:
            return await self._view(tr, await self._agent(tr, agent_id))

        return export_agent_file(await self.store.transact(read), now=self.env.now())

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
        plans = [
            self._plan_agent(entry, options, [*at, "agents", i], options_at)
            for i, entry in enumerate(file.agents)
        ]

        async def write(tr: Transaction) -> list[str]:
            tool_ids = dict(base_tools)  # file-local id -> id here
            for file_id, tool in custom_tools.items():
                tool_ids[file_id] = await self._put_tool(tr, tool, options.override_existing_tools)
            for block in blocks.values():
                self._write_block(tr, block, new=True)
            made: list[str] = []
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
                    tool_ids=[t.id for t in tools],
                )
                self._write_agent(tr, agent)
                tr.set(AGENT_INDEX.pack((micros(agent.created_at), agent.id)), b"")
                self._link(tr, agent)
                made.append(agent.id)
            return made

        try:
            return await self.store.transact(write)
        except TransactionTooLarge as error:
            # All or nothing has a ceiling: what one transaction may write.
            raise TooLarge(
                f"the agent file is too large to import in one piece ({error}); "
                "split its agents into several files"
            ) from None

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
                source_type=entry.source_type or "python",
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
