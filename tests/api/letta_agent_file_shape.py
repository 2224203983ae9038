"""What Letta 0.16.8's reader requires of an agent file, without Letta or pydantic.

Read from letta/schemas/agent_file.py and the schemas it builds on (AgentFileSchema,
AgentSchema(CreateAgent), MessageSchema(MessageCreate), GroupSchema(GroupCreate),
BlockSchema(CreateBlock), ToolSchema(Tool), MCPServerSchema, SourceSchema(SourceCreate),
FileSchema(FileMetadataBase), FileAgentSchema(FileAgentBase)): the fields without defaults,
their types, the enums, and the file-local references Letta's importer follows (it maps
every `agent_ids`, `manager_agent_id`, `block_ids`, `tool_ids`, `source_ids`,
`in_context_message_ids`, a file's `source_id` and an agent's `files_agents` through the ids
the file defines, and fails on one it lacks), and its `_validate_schema`: ids of the form
`<kind>-<integer>`, a file-agent's `agent_id` the agent's own. Extra fields are fine: each
of those models ignores what it does not know.
"""

from __future__ import annotations

from typing import Any

__all__ = ["letta_shape_problems"]

_TOP = ("agents", "groups", "blocks", "files", "sources", "tools", "mcp_servers")
_MESSAGE_ROLES = {"assistant", "user", "tool", "function", "system", "approval", "summary"}
_MANAGER_TYPES = {"round_robin", "supervisor", "dynamic", "sleeptime", "voice_sleeptime"}
# GroupSchema's manager configs that name their manager (SupervisorManagerSchema and kin).
_WITH_MANAGER = {"supervisor", "dynamic", "sleeptime", "voice_sleeptime"}
_STATUSES = {"pending", "parsing", "embedding", "completed", "error"}
# The id prefix Letta's importer requires of each top-level kind.
_PREFIXES = {"agents": "agent", "groups": "group", "blocks": "block", "files": "file",
             "sources": "source", "tools": "tool", "mcp_servers": "mcp_server"}  # fmt: skip


def _well_formed(ident: str, prefix: str) -> bool:
    head, _, number = ident.rpartition("-")
    return head == prefix and number.isdigit()


def letta_shape_problems(file: Any) -> list[str]:
    """Why Letta 0.16.8 would refuse to read `file` (empty: it reads it)."""
    problems: list[str] = []
    if not isinstance(file, dict):
        return ["the file is not a JSON object"]
    for key in _TOP:
        if not isinstance(file.get(key), list):
            problems.append(f"{key}: a list is required")
    if problems:
        return problems
    ids: dict[str, set[str]] = {}
    for key, prefix in _PREFIXES.items():
        ids[key] = set()
        for i, entry in enumerate(file[key]):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                problems.append(f"{key}[{i}].id: a string is required")
            elif not _well_formed(entry["id"], prefix):
                problems.append(f"{key}[{i}].id: {entry['id']!r} is not {prefix}-<integer>")
            else:
                ids[key].add(entry["id"])
    for i, source in enumerate(file["sources"]):
        if not isinstance(source.get("name"), str):
            problems.append(f"sources[{i}].name: a string is required")
    for i, entry in enumerate(file["files"]):
        if entry.get("source_id") not in ids["sources"]:
            problems.append(f"files[{i}].source_id: {entry.get('source_id')!r} is no source")
        if entry.get("processing_status", "pending") not in _STATUSES:
            problems.append(f"files[{i}].processing_status: not one of Letta's statuses")
        for field in ("file_name", "original_file_name", "file_type", "content"):
            if entry.get(field) is not None and not isinstance(entry[field], str):
                problems.append(f"files[{i}].{field}: a string or null is required")
    for i, block in enumerate(file["blocks"]):
        for field in ("label", "value"):
            if not isinstance(block.get(field), str):
                problems.append(f"blocks[{i}].{field}: a string is required")
    for i, server in enumerate(file["mcp_servers"]):
        for field in ("server_type", "server_name"):
            if not isinstance(server.get(field), str):
                problems.append(f"mcp_servers[{i}].{field}: a string is required")
    for i, group in enumerate(file["groups"]):
        where = f"groups[{i}]"
        if not isinstance(group.get("description"), str):
            problems.append(f"{where}.description: a string is required (GroupCreate)")
        members = group.get("agent_ids")
        if not isinstance(members, list):
            problems.append(f"{where}.agent_ids: a list is required")
            members = []
        problems += [f"{where}.agent_ids: {m!r} is no agent of the file"
                     for m in members if m not in ids["agents"]]  # fmt: skip
        config = group.get("manager_config", {"manager_type": "round_robin"})
        kind = config.get("manager_type") if isinstance(config, dict) else None
        if kind not in _MANAGER_TYPES:
            problems.append(f"{where}.manager_config.manager_type: {kind!r} is no manager type")
        elif kind in _WITH_MANAGER and config.get("manager_agent_id") not in ids["agents"]:
            problems.append(f"{where}.manager_config.manager_agent_id: no agent of the file")
    for i, agent in enumerate(file["agents"]):
        where = f"agents[{i}]"
        messages = agent.get("messages", [])
        message_ids = set()
        for j, message in enumerate(messages):
            here = f"{where}.messages[{j}]"
            if not isinstance(message.get("id"), str):
                problems.append(f"{here}.id: a string is required")
            message_ids.add(message.get("id"))
            if message.get("role") not in _MESSAGE_ROLES:
                problems.append(f"{here}.role: {message.get('role')!r} is no message role")
            content = message.get("content")
            if not isinstance(content, str | list):
                problems.append(f"{here}.content: a string or a list of parts is required")
            elif isinstance(content, list):
                untyped = [p for p in content if not isinstance(p, dict) or "type" not in p]
                problems += [f"{here}.content: a part without a type"] if untyped else []
        for ref in agent.get("in_context_message_ids", []):
            if ref not in message_ids:
                problems.append(f"{where}.in_context_message_ids: {ref!r} is no message of it")
        for j, held in enumerate(agent.get("files_agents", [])):
            here = f"{where}.files_agents[{j}]"
            for field in ("agent_id", "file_id", "source_id", "file_name"):
                if not isinstance(held.get(field), str):
                    problems.append(f"{here}.{field}: a string is required")
            if held.get("agent_id") != agent.get("id"):
                problems.append(f"{here}.agent_id: not the agent's own id")
            if held.get("file_id") not in ids["files"]:
                problems.append(f"{here}.file_id: {held.get('file_id')!r} is no file")
            if held.get("source_id") not in ids["sources"]:
                problems.append(f"{here}.source_id: {held.get('source_id')!r} is no source")
        for field, kind in (
            ("block_ids", "blocks"),
            ("tool_ids", "tools"),
            ("group_ids", "groups"),
            ("source_ids", "sources"),
        ):
            for ref in agent.get(field) or []:
                if ref not in ids[kind]:
                    problems.append(f"{where}.{field}: {ref!r} is none of the file's {kind}")
    return problems
