"""Agents: the stored record, the create request, and what PATCH may change.

The record keeps references (block and tool ids) rather than copies, so a block
shared by several agents is edited once and seen by all; the API assembles
Letta's AgentState (memory, blocks, tools, configs) from the record and the
referenced records.
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.models.blocks import CreateBlock

__all__ = [
    "DEFAULT_AGENT_TYPE",
    "DEFAULT_SYSTEM",
    "UPDATABLE_AGENT_FIELDS",
    "Agent",
    "AgentView",
    "CreateAgent",
]

DEFAULT_AGENT_TYPE = "letta_v1_agent"
AGENT_TYPES = frozenset(
    {
        "memgpt_agent",
        "memgpt_v2_agent",
        "letta_v1_agent",
        "react_agent",
        "workflow_agent",
        "split_thread_agent",
        "sleeptime_agent",
        "voice_convo_agent",
        "voice_sleeptime_agent",
    }
)

# Our own words, not Letta's prompt: what the agent is and how its memory works.
DEFAULT_SYSTEM = """\
You are a helpful agent with a persistent memory, served by kelpie-trio.

Your core memory is shown below in labeled blocks; it is always in your context.
Keep it current with the memory tools when you learn something worth keeping.
Older conversation and archival passages are not in your context: search them
with conversation_search and archival_memory_search when you need them.
Answer the user with send_message."""


# What the API shows in place of a secret's value; sent back on update, it keeps the value.
SECRET_MASK = "********"


@attrs.define
class Agent:
    id: str
    name: str
    system: str
    agent_type: str = DEFAULT_AGENT_TYPE
    description: str | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] = attrs.Factory(list)
    block_ids: list[str] = attrs.Factory(list)
    tool_ids: list[str] = attrs.Factory(list)
    model: str | None = None
    embedding: str | None = None
    llm_config: dict[str, Any] = attrs.Factory(dict)
    embedding_config: dict[str, Any] | None = None
    model_settings: dict[str, Any] | None = None
    tool_rules: list[dict[str, Any]] | None = None
    project_id: str | None = None
    template_id: str | None = None
    base_template_id: str | None = None
    deployment_id: str | None = None
    entity_id: str | None = None
    timezone: str | None = "UTC"
    hidden: bool | None = None
    message_buffer_autoclear: bool = False
    enable_sleeptime: bool | None = None
    max_files_open: int | None = None
    per_file_view_window_char_limit: int | None = None
    # The sleeptime group it manages or serves in (agent/sleeptime.py); not shown as such.
    group_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    # Environment variables for the agent's custom tools (Letta's `secrets`): passed to the
    # tool's process only, shown masked by the API, kept out of repr (and so of logs).
    secrets: dict[str, str] = attrs.field(factory=dict, repr=False)


@attrs.define
class CreateAgent:
    """POST /v1/agents/: every field optional, as in Letta."""

    name: str | None = None
    system: str | None = None
    agent_type: str = DEFAULT_AGENT_TYPE
    description: str | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    memory_blocks: list[CreateBlock] | None = None
    block_ids: list[str] | None = None
    tools: list[str] | None = None  # tool names
    tool_ids: list[str] | None = None
    include_base_tools: bool = True
    include_multi_agent_tools: bool = False
    include_base_tool_rules: bool | None = None  # None: as Letta settles it per type/model
    tool_rules: list[dict[str, Any]] | None = None
    model: str | None = None
    embedding: str | None = None
    model_settings: dict[str, Any] | None = None
    llm_config: dict[str, Any] | None = None
    embedding_config: dict[str, Any] | None = None
    context_window_limit: int | None = None
    reasoning: bool | None = None  # the model's native reasoning, where it has one
    project_id: str | None = None
    template_id: str | None = None
    base_template_id: str | None = None
    timezone: str | None = None
    hidden: bool | None = None
    message_buffer_autoclear: bool = False
    enable_sleeptime: bool | None = None
    max_files_open: int | None = None
    per_file_view_window_char_limit: int | None = None
    # Folders attached at creation (Letta's `folder_ids`, and its older `source_ids`).
    folder_ids: list[str] | None = None
    source_ids: list[str] | None = None
    secrets: dict[str, str] | None = attrs.field(default=None, repr=False)
    # Letta's older name for `secrets`, still accepted.
    tool_exec_environment_variables: dict[str, str] | None = attrs.field(default=None, repr=False)


# What PATCH /v1/agents/{id} may change directly; relations (blocks, tools) and
# models have their own handling in the service.
UPDATABLE_AGENT_FIELDS = frozenset(
    {
        "name",
        "system",
        "description",
        "metadata",
        "tags",
        "tool_rules",
        "project_id",
        "template_id",
        "base_template_id",
        "deployment_id",
        "entity_id",
        "timezone",
        "hidden",
        "message_buffer_autoclear",
        "enable_sleeptime",
        "max_files_open",
        "per_file_view_window_char_limit",
    }
)


@attrs.frozen
class AgentView:
    """An agent with the records it refers to, as one consistent read."""

    agent: Agent
    blocks: list[Any]  # Block, in the agent's order
    tools: list[Any]  # tool records (the tools issue fills these in)
    group: Any = None  # the sleeptime group it manages (Letta's multi_agent_group), if any
    # Its folders and files as its context shows them (service/agent_files.py), or None.
    directories: str | None = None
    # The folders attached to it (Letta's `sources`), read for the API only.
    folders: list[Any] = attrs.Factory(list)
    # Its files as it holds them (FileAgent records), read for the API only.
    file_blocks: list[Any] = attrs.Factory(list)
    # The identities holding the agent (service/identities.py), read for the API only.
    identities: list[Any] = attrs.Factory(list)
