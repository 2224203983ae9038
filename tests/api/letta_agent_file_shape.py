"""What Letta 0.16.8's reader requires of an agent file, without Letta or pydantic.

Read from letta/schemas/agent_file.py and the schemas it builds on (AgentFileSchema,
AgentSchema(CreateAgent), MessageSchema(MessageCreate), GroupSchema(GroupCreate),
BlockSchema(CreateBlock), ToolSchema(Tool), MCPServerSchema): the fields without defaults,
their types, the enums, and the file-local references Letta's importer follows (it maps
every `agent_ids`, `manager_agent_id`, `block_ids`, `tool_ids` and `in_context_message_ids`
through the ids the file defines, and fails on one it lacks). Extra fields are fine: each of
those models ignores what it does not know.
"""

from __future__ import annotations

from typing import Any

__all__ = ["letta_shape_problems"]

_TOP = ("agents", "groups", "blocks", "files", "sources", "tools", "mcp_servers")
_MESSAGE_ROLES = {"assistant", "user", "tool", "function", "system", "approval", "summary"}
_MANAGER_TYPES = {"round_robin", "supervisor", "dynamic", "sleeptime", "voice_sleeptime"}
# GroupSchema's manager configs that name their manager (SupervisorManagerSchema and kin).
_WITH_MANAGER = {"supervisor", "dynamic", "sleeptime", "voice_sleeptime"}


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
    for key in ("agents", "groups", "blocks", "tools", "mcp_servers"):
        ids[key] = set()
        for i, entry in enumerate(file[key]):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                problems.append(f"{key}[{i}].id: a string is required")
            else:
                ids[key].add(entry["id"])
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
        for field, kind in (
            ("block_ids", "blocks"),
            ("tool_ids", "tools"),
            ("group_ids", "groups"),
        ):
            for ref in agent.get(field) or []:
                if ref not in ids[kind]:
                    problems.append(f"{where}.{field}: {ref!r} is none of the file's {kind}")
    return problems
