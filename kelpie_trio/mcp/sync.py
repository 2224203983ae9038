"""Tool sync, sans-IO: what an MCP server's listing makes of the tools stored for it.

A listed tool becomes a tool record of type `external_mcp` whose JSON schema is the one
the server declares (its `inputSchema` as the `parameters`, with the defaults Letta adds
where the server leaves them out: `type: object`, `properties`, `required`). A listed
tool whose schema is not a JSON schema object is not added: it is reported as skipped,
with the reason. `plan` compares a listing with the stored tools: which to add, which to
update (schema or description changed), which to remove (no longer listed).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import attrs

from kelpie_trio.models.mcp import MCP_TOOL_TYPE, McpServer, McpTool

__all__ = ["MCP_METADATA_KEY", "SyncPlan", "is_mcp_tool", "plan", "server_of", "tool_schema"]

MCP_METADATA_KEY = "mcp"  # metadata_["mcp"] = {"server_name", "server_id"}, as Letta keeps it
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what LLM providers accept as a function name


class InvalidSchema(ValueError):
    pass


def tool_schema(tool: McpTool) -> dict[str, Any]:
    """The tool's JSON schema as the agent offers it to the model, or InvalidSchema."""
    if not _NAME.match(tool.name):
        raise InvalidSchema(
            f"the name {tool.name!r} is not a valid function name (letters, digits, _ and -, "
            "at most 64)"
        )
    declared = tool.input_schema
    if not isinstance(declared, dict):
        raise InvalidSchema("its inputSchema is not a JSON object")
    parameters = copy.deepcopy(declared)
    kind = parameters.setdefault("type", "object")
    if kind != "object":
        raise InvalidSchema(f"its inputSchema has type {kind!r}; a tool takes an object")
    properties = parameters.setdefault("properties", {})
    if not isinstance(properties, dict) or not all(
        isinstance(v, dict) for v in properties.values()
    ):
        raise InvalidSchema("its inputSchema's properties are not a JSON object of schemas")
    required = parameters.setdefault("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise InvalidSchema("its inputSchema's required is not a list of names")
    unknown = [r for r in required if r not in properties]
    if unknown:
        raise InvalidSchema(f"its inputSchema requires undeclared properties: {unknown}")
    return {"name": tool.name, "description": tool.description or "", "parameters": parameters}


def is_mcp_tool(tool: Any) -> bool:
    return getattr(tool, "tool_type", None) == MCP_TOOL_TYPE


def server_of(tool: Any) -> str | None:
    """The id of the MCP server a stored tool came from."""
    meta = (getattr(tool, "metadata_", None) or {}).get(MCP_METADATA_KEY)
    return meta.get("server_id") if isinstance(meta, dict) else None


@attrs.frozen
class ToolFromServer:
    name: str
    description: str | None
    json_schema: dict[str, Any]


@attrs.frozen
class SyncPlan:
    add: list[ToolFromServer]
    update: list[tuple[Any, ToolFromServer]]  # (the stored tool, what it becomes)
    remove: list[Any]  # stored tools
    skipped: dict[str, str]  # name -> why it was not added


def plan(listed: list[McpTool], stored: list[Any]) -> SyncPlan:
    """What a listing changes in the tools stored for its server."""
    wanted: dict[str, ToolFromServer] = {}
    skipped: dict[str, str] = {}
    for tool in listed:
        if tool.name in wanted or tool.name in skipped:
            skipped[tool.name] = "the server lists two tools by this name"
            wanted.pop(tool.name, None)
            continue
        try:
            schema = tool_schema(tool)
        except InvalidSchema as why:
            skipped[tool.name] = str(why)
            continue
        wanted[tool.name] = ToolFromServer(tool.name, tool.description, schema)
    by_name = {t.name: t for t in stored}
    add = [w for name, w in wanted.items() if name not in by_name]
    update = [
        (by_name[name], w)
        for name, w in wanted.items()
        if name in by_name
        and (by_name[name].json_schema, by_name[name].description) != (w.json_schema, w.description)
    ]
    remove = [t for name, t in by_name.items() if name not in wanted]
    return SyncPlan(add, update, remove, skipped)


def metadata(server: McpServer) -> dict[str, Any]:
    return {MCP_METADATA_KEY: {"server_name": server.server_name, "server_id": server.id}}


def tags(server: McpServer) -> list[str]:
    return [f"{MCP_METADATA_KEY}:{server.server_name}"]
