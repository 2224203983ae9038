"""Tools: the stored record in Letta's Tool shape, and the create (and upsert) request.

A tool's `name` and `json_schema` are not chosen by the client: they come from
the function in `source_code` (kelpie_trio/tools/schema.py), or from a
`json_schema` the client supplies for that function.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = [
    "DEFAULT_RETURN_CHAR_LIMIT",
    "MAX_RETURN_CHAR_LIMIT",
    "TOOL_TYPES",
    "UPDATABLE_TOOL_FIELDS",
    "CreateTool",
    "NpmRequirement",
    "PipRequirement",
    "Tool",
]

DEFAULT_RETURN_CHAR_LIMIT = 50_000  # characters of a tool's result the agent sees, as Letta
MAX_RETURN_CHAR_LIMIT = 1_000_000

# Letta's ToolType enum; tools created here are all "custom".
TOOL_TYPES = frozenset(
    {
        "custom",
        "letta_core",
        "letta_memory_core",
        "letta_multi_agent_core",
        "letta_sleeptime_core",
        "letta_voice_sleeptime_core",
        "letta_builtin",
        "letta_files_core",
        "external_langchain",
        "external_composio",
        "external_mcp",
    }
)


@attrs.define
class PipRequirement:
    name: str
    version: str | None = None


@attrs.define
class NpmRequirement:
    name: str
    version: str | None = None


@attrs.define(kw_only=True)
class ToolFields:
    """What a stored tool and an agent file's tool share (Letta's Tool fields)."""

    tool_type: str = "custom"
    description: str | None = None
    tags: list[str] = attrs.Factory(list)
    source_code: str | None = None
    json_schema: dict[str, Any] | None = None
    args_json_schema: dict[str, Any] | None = None
    return_char_limit: int = DEFAULT_RETURN_CHAR_LIMIT
    pip_requirements: list[PipRequirement] | None = None
    npm_requirements: list[NpmRequirement] | None = None
    default_requires_approval: bool | None = None
    enable_parallel_execution: bool | None = False
    created_by_id: str | None = None
    last_updated_by_id: str | None = None
    metadata_: dict[str, Any] | None = None  # Letta's wire name, trailing underscore included
    project_id: str | None = None


@attrs.define(kw_only=True)
class Tool(ToolFields):
    """A tool as Letta's API shows it (plus `created_at`, used for ordering)."""

    id: str
    name: str
    source_type: str | None = "python"
    created_at: float = 0.0


@attrs.define
class CreateTool:
    """POST and PUT /v1/tools/ (Letta's ToolCreate): only `source_code` is required."""

    source_code: str
    description: str | None = None
    tags: list[str] | None = None
    source_type: str = "python"
    json_schema: dict[str, Any] | None = None
    args_json_schema: dict[str, Any] | None = None
    return_char_limit: int = DEFAULT_RETURN_CHAR_LIMIT
    pip_requirements: list[PipRequirement] | None = None
    npm_requirements: list[NpmRequirement] | None = None
    default_requires_approval: bool | None = None
    enable_parallel_execution: bool | None = False


# What PATCH /v1/tools/{id} may change (Letta's ToolUpdate); the name follows the source.
UPDATABLE_TOOL_FIELDS = frozenset(
    {
        "description",
        "tags",
        "source_code",
        "source_type",
        "json_schema",
        "args_json_schema",
        "return_char_limit",
        "pip_requirements",
        "npm_requirements",
        "metadata_",
        "default_requires_approval",
        "enable_parallel_execution",
    }
)
