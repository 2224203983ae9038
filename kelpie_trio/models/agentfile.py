"""Letta's agent file (.af, the v2 multi-entity format): the file, its entities, and import options.

An agent file holds agents, blocks and tools side by side; the agents refer to
the others by *file-local* ids ("agent-0", "block-1", "tool-2"), never by a
server's ids, so a file moves between servers and imports any number of times.
The classes mirror Letta's AgentFileSchema, AgentSchema, BlockSchema, ToolSchema
and MessageSchema (letta/schemas/agent_file.py); what this server does not keep
yet (skills, groups of other kinds than sleeptime) is read as plain JSON objects and
left out of an import; a sleeptime group is checked here and made by the import.
Messages, passages, archives and other conversations: agentfile_history.py; folders and
files: agentfile_files.py; MCP servers (without their secrets): agentfile_mcp.py.

`export_agent_file` and `check_agent_file` are pure: the service reads and
writes the store around them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

from kelpie_trio import __version__
from kelpie_trio.agent.sleeptime import SleeptimeGroup
from kelpie_trio.errors import Invalid, InvalidField
from kelpie_trio.models.agentfile_files import (
    FileAgentSchema,
    FileSchema,
    SourceSchema,
    file_problems,
)
from kelpie_trio.models.agentfile_history import (
    ArchiveSchema,
    ConversationSchema,
    MessageSchema,
    PassageSchema,
)
from kelpie_trio.models.agentfile_mcp import McpServerSchema, export_mcp_server
from kelpie_trio.models.agents import AgentView, CreateAgent
from kelpie_trio.models.blocks import Block, CreateBlock
from kelpie_trio.models.convert import iso
from kelpie_trio.models.mcp import McpServer
from kelpie_trio.models.tools import (
    Tool,
    ToolFields,
)

__all__ = [
    "AgentFileSchema",
    "AgentPart",
    "AgentSchema",
    "ArchiveSchema",
    "BlockSchema",
    "ConversationSchema",
    "ImportOptions",
    "ImportedAgentsResponse",
    "McpServerSchema",
    "MessageSchema",
    "PassageSchema",
    "ToolSchema",
    "check_agent_file",
    "export_agent_file",
    "sleeptime_groups",
]

Loc = list[str | int]


@attrs.define(kw_only=True)
class BlockSchema(CreateBlock):
    """A memory block in an agent file: a CreateBlock with its file-local id."""

    id: str

    def as_create(self) -> CreateBlock:
        return CreateBlock(**{f.name: getattr(self, f.name) for f in attrs.fields(CreateBlock)})


@attrs.define(kw_only=True)
class ToolSchema(ToolFields):
    """A tool in an agent file: Letta's Tool fields, with a file-local id."""

    id: str
    source_type: str | None = None
    name: str | None = None


@attrs.define(kw_only=True)
class AgentSchema(CreateAgent):
    """An agent in an agent file: a CreateAgent whose block and tool ids are file-local."""

    id: str
    source_ids: list[str] | None = None
    identity_ids: list[str] | None = None
    include_multi_agent_tools: bool = False
    include_base_tool_rules: bool | None = None
    secrets: dict[str, str] | None = None
    tool_exec_environment_variables: dict[str, str] | None = None
    response_format: dict[str, Any] | None = None
    compaction_settings: dict[str, Any] | None = None
    in_context_message_ids: list[str] = attrs.Factory(list)
    messages: list[MessageSchema] = attrs.Factory(list)
    files_agents: list[FileAgentSchema] = attrs.Factory(list)
    group_ids: list[str] = attrs.Factory(list)
    # Not in Letta's format (its reader ignores them): the agent's own archival passages,
    # the file-local ids of the archives attached to it, and its other conversations
    # (agentfile_history.py).
    passages: list[PassageSchema] = attrs.Factory(list)
    archive_ids: list[str] = attrs.Factory(list)
    conversations: list[ConversationSchema] = attrs.Factory(list)


@attrs.define
class AgentFileSchema:
    """A whole agent file, as GET /v1/agents/{id}/export writes it and POST /import reads it."""

    agents: list[AgentSchema]
    groups: list[dict[str, Any]]
    blocks: list[BlockSchema]
    files: list[FileSchema]
    sources: list[SourceSchema]
    tools: list[ToolSchema]
    mcp_servers: list[McpServerSchema]
    skills: list[dict[str, Any]] = attrs.Factory(list)
    metadata: dict[str, str] = attrs.Factory(dict)
    created_at: str | None = None
    archives: list[ArchiveSchema] = attrs.Factory(list)  # not in Letta's format, as `passages`


@attrs.frozen
class ImportOptions:
    """The form fields of POST /v1/agents/import this server acts on (Letta's Body_import_agent).

    `name`, `model` and `embedding` replace what the file says for every agent in
    it; `override_existing_tools` lets the file's source replace that of a custom
    tool of the same name (base tools are never replaced); `append_copy_suffix`
    adds "_copy" to the names, but only when asked for explicitly (see the API).
    """

    name: str | None = None
    model: str | None = None
    embedding: str | None = None
    override_existing_tools: bool = True
    append_copy_suffix: bool = False
    project_id: str | None = None
    # Letta's strip_messages: the agents come without their messages (and windows), in
    # every conversation.
    strip_messages: bool = False


@attrs.define
class ImportedAgentsResponse:
    """The answer to an import: the new server ids of the agents, in the file's order."""

    agent_ids: list[str]


# -- export ----------------------------------------------------------------------


def _block_entry(block: Block, file_id: str) -> BlockSchema:
    fields = {f.name: getattr(block, f.name) for f in attrs.fields(CreateBlock)}
    fields["label"] = block.label or ""
    return BlockSchema(id=file_id, **fields)


def _tool_entry(tool: Tool, file_id: str) -> ToolSchema:
    fields = attrs.asdict(tool, recurse=False)
    fields.pop("created_at")
    fields["id"] = file_id
    return ToolSchema(**fields)


@attrs.define(kw_only=True)
class AgentPart:
    """What the file says of one agent, read by the service: the agent and its blocks and
    tools, its history and window (file-local message ids), its own passages, the file ids
    of its archives, its other conversations, its folders and the files it holds."""

    view: AgentView
    messages: list[MessageSchema] = attrs.Factory(list)
    in_context: list[str] = attrs.Factory(list)
    passages: list[PassageSchema] = attrs.Factory(list)
    archive_ids: list[str] = attrs.Factory(list)
    conversations: list[ConversationSchema] = attrs.Factory(list)
    source_ids: list[str] = attrs.Factory(list)  # file-local, of its folders
    files_agents: list[FileAgentSchema] = attrs.Factory(list)


def export_agent_file(
    parts: list[AgentPart],
    *,
    now: float,
    archives: list[ArchiveSchema] | None = None,
    mcp_servers: list[McpServer] | None = None,
    group: SleeptimeGroup | None = None,
    processed: list[str] | None = None,
    sources: list[SourceSchema] | None = None,
    files: list[FileSchema] | None = None,
) -> AgentFileSchema:
    """Agents (the exported one first, `agent-0`, then its sleeptime companions, as Letta
    adds the agents of the group it manages), their blocks and tools (base tools too), each
    once however many agents hold it, with their histories, windows, passages and archives
    as agentfile_history.py makes them, and the sleeptime `group` in Letta's GroupSchema
    with, beside it, `last_processed_message_ids` (not in Letta's format: the file ids of
    the last message its companion read in each of the manager's conversations, so the
    copy's companion goes on where the original's stopped).

    File-local ids are numbered as Letta's exporter numbers them: in the order
    the agents refer to their tools, then their blocks; the lists are sorted as
    Letta sorts them (tools by name, blocks by label), so a Letta server and
    this one write the same file for the same agent. `mcp_servers` are those the
    agents' MCP tools come from (in the order of those tools), without their secrets.
    """
    agent_ids = {p.view.agent.id: f"agent-{i}" for i, p in enumerate(parts)}
    tools = {t.id: t for p in parts for t in p.view.tools}
    blocks = {b.id: b for p in parts for b in p.view.blocks}
    tool_ids = {ident: f"tool-{i}" for i, ident in enumerate(tools)}
    block_ids = {ident: f"block-{i}" for i, ident in enumerate(blocks)}
    group_id = "group-0"
    entries = []
    for part in parts:
        view, agent = part.view, part.view.agent
        manages = group is not None and group.manager_agent_id == agent.id
        entries.append(
            AgentSchema(
                id=agent_ids[agent.id],
                name=agent.name,
                system=agent.system,
                agent_type=agent.agent_type,
                description=agent.description,
                metadata=agent.metadata,
                tags=list(agent.tags),
                memory_blocks=[],
                block_ids=[block_ids[b.id] for b in view.blocks],
                tools=[],
                tool_ids=[tool_ids[t.id] for t in view.tools],
                # tool_ids lists every tool, base tools included: importing adds none.
                include_base_tools=False,
                tool_rules=agent.tool_rules,
                model=agent.model,
                embedding=agent.embedding,
                model_settings=agent.model_settings,
                llm_config=agent.llm_config,
                embedding_config=agent.embedding_config,
                project_id=agent.project_id,
                template_id=agent.template_id,
                base_template_id=agent.base_template_id,
                timezone=agent.timezone,
                hidden=agent.hidden,
                message_buffer_autoclear=agent.message_buffer_autoclear,
                # The group (group_ids) says it; a second companion would come of the flag.
                enable_sleeptime=False if manages else agent.enable_sleeptime,
                max_files_open=agent.max_files_open,
                per_file_view_window_char_limit=agent.per_file_view_window_char_limit,
                source_ids=list(part.source_ids),
                files_agents=list(part.files_agents),
                messages=list(part.messages),
                in_context_message_ids=list(part.in_context),
                group_ids=[group_id] if manages else [],
                passages=list(part.passages),
                archive_ids=list(part.archive_ids),
                conversations=list(part.conversations),
            )
        )
    groups = []
    if group is not None and group.manager_agent_id in agent_ids:
        groups.append(
            {
                "id": group_id,
                "agent_ids": [agent_ids[a] for a in group.agent_ids if a in agent_ids],
                "description": group.description,
                "manager_config": {
                    "manager_type": "sleeptime",
                    "manager_agent_id": agent_ids[group.manager_agent_id],
                    "sleeptime_agent_frequency": group.sleeptime_agent_frequency,
                },
                "project_id": group.project_id,
                "shared_block_ids": [],
                "hidden": group.hidden,
                "last_processed_message_ids": list(processed or []),
            }
        )
    return AgentFileSchema(
        agents=entries,
        groups=groups,
        blocks=sorted(
            (_block_entry(b, block_ids[b.id]) for b in blocks.values()), key=lambda b: b.label
        ),
        files=list(files or []),
        sources=list(sources or []),
        tools=sorted(
            (_tool_entry(t, tool_ids[t.id]) for t in tools.values()), key=lambda t: t.name or ""
        ),
        mcp_servers=[
            export_mcp_server(m, f"mcp_server-{i}") for i, m in enumerate(mcp_servers or [])
        ],
        skills=[],
        # Letta writes its database revision here; ours names the server that wrote the file.
        metadata={"revision_id": f"kelpie-trio-{__version__}"},
        created_at=iso(now),
        archives=list(archives or []),
    )


def sleeptime_groups(file: AgentFileSchema) -> list[dict[str, Any]]:
    """The file's groups of manager type sleeptime (the only kind made here)."""
    return [
        g
        for g in file.groups
        if isinstance(g, dict)
        and isinstance(g.get("manager_config"), dict)
        and g["manager_config"].get("manager_type") == "sleeptime"
    ]


# -- import: what a file must satisfy before anything is written ------------------


def check_agent_file(file: AgentFileSchema, at: Loc) -> None:
    """Invalid listing every dangling or duplicate file-local id of `file` (found at `at`)."""
    problems: list[InvalidField] = []

    def unique(kind: str, ids: list[str]) -> None:
        for ident, count in Counter(ids).items():
            if count > 1:
                problems.append(InvalidField([*at, kind], f"{count} {kind} have the id {ident!r}"))

    unique("agents", [a.id for a in file.agents])
    unique("blocks", [b.id for b in file.blocks])
    unique("tools", [t.id for t in file.tools])
    unique("archives", [a.id for a in file.archives])
    unique("mcp_servers", [m.id for m in file.mcp_servers])
    problems += file_problems(file.sources, file.files, file.agents, at)
    for name, count in Counter(m.server_name for m in file.mcp_servers).items():
        if count > 1:
            problems.append(
                InvalidField([*at, "mcp_servers"], f"{count} MCP servers are named {name!r}")
            )
    archives = {a.id for a in file.archives}
    by_id = {b.id: b for b in file.blocks}
    blocks = set(by_id)
    tools = {t.id for t in file.tools}
    for i, agent in enumerate(file.agents):
        here = [*at, "agents", i]
        for field, known, kind in (
            ("block_ids", blocks, "block"),
            ("tool_ids", tools, "tool"),
            ("archive_ids", archives, "archive"),
        ):
            for j, ref in enumerate(getattr(agent, field) or []):
                if ref not in known:
                    problems.append(
                        InvalidField(
                            [*here, field, j],
                            f"no {kind} with the file-local id {ref!r} in the file's {kind}s",
                        )
                    )
        labels = Counter(
            [by_id[ref].label for ref in dict.fromkeys(agent.block_ids or []) if ref in by_id]
            + [b.label for b in agent.memory_blocks or []]
        )
        for label, count in labels.items():
            if count > 1:
                problems.append(
                    InvalidField(
                        [*here, "block_ids"], f"{count} of the agent's blocks are labeled {label!r}"
                    )
                )
        for ident, count in Counter(m.id for m in agent.messages).items():
            if count > 1:
                problems.append(
                    InvalidField([*here, "messages"], f"{count} messages have the id {ident!r}")
                )
        unique_messages = {m.id for m in agent.messages}
        for j, ref in enumerate(agent.in_context_message_ids):
            if ref not in unique_messages:
                problems.append(
                    InvalidField(
                        [*here, "in_context_message_ids", j],
                        f"no message with the file-local id {ref!r} in the agent's messages",
                    )
                )
        for k, conversation in enumerate(agent.conversations):
            there = [*here, "conversations", k]
            ids = Counter(m.id for m in conversation.messages)
            for ident, count in ids.items():
                if count > 1:
                    problems.append(
                        InvalidField(
                            [*there, "messages"], f"{count} messages have the id {ident!r}"
                        )
                    )
            for j, ref in enumerate(conversation.in_context_message_ids):
                if ref not in ids:
                    problems.append(
                        InvalidField(
                            [*there, "in_context_message_ids", j],
                            f"no message with the file-local id {ref!r} in the conversation's "
                            "messages",
                        )
                    )
    agents = {a.id for a in file.agents}
    managed: Counter[str] = Counter()
    for i, group in enumerate(file.groups):
        if group not in sleeptime_groups(file):
            continue
        here = [*at, "groups", i]
        manager = group["manager_config"].get("manager_agent_id")
        if manager not in agents:
            where = [*here, "manager_config", "manager_agent_id"]
            problems.append(InvalidField(where, f"no agent with the file-local id {manager!r}"))
        managed[manager] += 1
        members = group.get("agent_ids")
        if not isinstance(members, list) or not members:
            problems.append(InvalidField([*here, "agent_ids"], "a sleeptime group needs its agent"))
            continue
        for j, ref in enumerate(members):
            if ref not in agents or ref == manager:
                said = f"no companion agent with the file-local id {ref!r}"
                problems.append(InvalidField([*here, "agent_ids", j], said))
        frequency = group["manager_config"].get("sleeptime_agent_frequency")
        if frequency is not None and (
            not isinstance(frequency, int) or isinstance(frequency, bool) or frequency < 1
        ):
            problems.append(
                InvalidField([*here, "manager_config", "sleeptime_agent_frequency"],
                             "a whole number of turns, at least 1, or null")
            )  # fmt: skip
    for manager, count in managed.items():
        if count > 1:
            problems.append(
                InvalidField([*at, "groups"], f"{count} groups are managed by {manager!r}")
            )
    if problems:
        raise Invalid(problems)
