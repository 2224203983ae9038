"""An agent file's MCP servers: stored records <-> Letta's MCPServerSchema (pure).

Letta's file lists, under `mcp_servers`, the MCP servers the agents' tools come from:
a file-local id ("mcp_server-0"), `server_type`, `server_name`, `server_url` (SSE and
streamable HTTP) and `stdio_config` (command and args). The tools keep their
`metadata_.mcp.server_name`, which names the file's server they come from.

No secret is exported: not a stdio server's env values, not the HTTP servers' token
or header values, not a URL's user, password or query (where tokens hide). What was
left out is named (never its value) in the entry's metadata_ under
`secrets_not_exported`, so whoever imports the file knows what to give again. An
imported server is created without them: PATCH /v1/mcp-servers/{id} sets them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs

from kelpie_trio.mcp import sync
from kelpie_trio.models.mcp import SERVER_TYPES, McpServer

__all__ = [
    "McpServerSchema",
    "export_mcp_server",
    "mcp_server_of_tool",
    "new_mcp_server",
    "public_url",
    "same_mcp_config",
]

SECRETS_KEY = "secrets_not_exported"


@attrs.define(kw_only=True)
class McpServerSchema:
    """An MCP server in an agent file (Letta's MCPServerSchema)."""

    id: str
    server_type: str
    server_name: str
    server_url: str | None = None
    stdio_config: dict[str, Any] | None = None
    metadata_: dict[str, Any] | None = None


def public_url(url: str | None) -> str | None:
    """A server's URL without what may be a secret: user, password, query, fragment."""
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def export_mcp_server(server: McpServer, file_id: str) -> McpServerSchema:
    """The server as the file carries it: its configuration, never its secrets."""
    left_out = [f"env.{name}" for name in server.env or {}]
    left_out += [f"custom_headers.{name}" for name in server.custom_headers or {}]
    if server.auth_token:
        left_out.append(f"auth_token ({server.auth_header or 'Authorization'})")
    if server.server_url and public_url(server.server_url) != server.server_url:
        left_out.append("server_url's user, password, query or fragment")
    stdio = None
    if server.mcp_server_type == "stdio":
        stdio = {"server_name": server.server_name, "type": "stdio",
                 "command": server.command, "args": list(server.args)}  # fmt: skip
    return McpServerSchema(
        id=file_id,
        server_type=server.mcp_server_type,
        server_name=server.server_name,
        server_url=public_url(server.server_url),
        stdio_config=stdio,
        metadata_={SECRETS_KEY: left_out} if left_out else None,
    )


def _stdio(entry: McpServerSchema) -> tuple[str | None, list[str]]:
    config = entry.stdio_config or {}
    command = config.get("command")
    args = config.get("args") or []
    return (
        command if isinstance(command, str) else None,
        [a for a in args if isinstance(a, str)] if isinstance(args, list) else [],
    )


def new_mcp_server(entry: McpServerSchema, server_id: str, now: float) -> McpServer:
    """The record an import creates for a file's server (without secrets; the type is
    checked by the caller)."""
    command, args = _stdio(entry)
    stdio = entry.server_type == "stdio"
    return McpServer(
        id=server_id,
        server_name=entry.server_name,
        mcp_server_type=entry.server_type,
        command=command if stdio else None,
        args=args if stdio else [],
        server_url=None if stdio else entry.server_url,
        created_at=now,
    )


def same_mcp_config(server: McpServer, entry: McpServerSchema) -> bool:
    """Whether a server here is the file's (the same type and configuration, secrets
    aside): an import then links its tools instead of making another."""
    if server.mcp_server_type != entry.server_type:
        return False
    if server.mcp_server_type == "stdio":
        return (server.command, list(server.args)) == _stdio(entry)
    return public_url(server.server_url) == public_url(entry.server_url)


def mcp_server_of_tool(tool: Any) -> str | None:
    """The name of the MCP server an exported tool came from (its metadata_, as Letta
    writes it, else its `mcp:<name>` tag)."""
    meta = (getattr(tool, "metadata_", None) or {}).get(sync.MCP_METADATA_KEY)
    if isinstance(meta, dict) and isinstance(meta.get("server_name"), str):
        return meta["server_name"]
    prefix = f"{sync.MCP_METADATA_KEY}:"
    for tag in getattr(tool, "tags", None) or []:
        if isinstance(tag, str) and tag.startswith(prefix):
            return tag[len(prefix) :]
    return None


def check_server_type(entry: McpServerSchema) -> str | None:
    """Why the file's server cannot be made here, or None."""
    if entry.server_type not in SERVER_TYPES:
        return f"server_type must be one of {', '.join(SERVER_TYPES)}"
    return None
