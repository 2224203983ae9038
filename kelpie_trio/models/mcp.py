"""MCP servers: the stored record, the create and update requests, and how the API shows them.

Letta's wire shapes (StdioMCPServer, SSEMCPServer, StreamableHTTPMCPServer): one record
type here with the fields of all three, `mcp_server_type` saying which apply. Secrets (a
stdio server's env values, the HTTP servers' token and header values) are stored as given
and shown as MASK on every read; a MASK sent back in an update keeps the stored value.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = [
    "MASK",
    "MCP_TOOL_TYPE",
    "SERVER_TYPES",
    "CreateMcpServer",
    "McpConfig",
    "McpServer",
    "McpTool",
    "shown",
]

MASK = "********"  # what a secret reads as (the agents' secrets read the same)
MCP_TOOL_TYPE = "external_mcp"  # Letta's ToolType of a tool an MCP server serves
SERVER_TYPES = ("stdio", "sse", "streamable_http")


@attrs.define(kw_only=True)
class McpConfig:
    """A create request's `config` (Letta's CreateStdio/SSE/StreamableHTTPMCPServer),
    and an update's (every field optional there)."""

    mcp_server_type: str | None = None
    command: str | None = None
    args: list[str] | None = None
    env: dict[str, str] | None = None
    server_url: str | None = None
    auth_header: str | None = None
    auth_token: str | None = None
    custom_headers: dict[str, str] | None = None


@attrs.define
class CreateMcpServer:
    """POST /v1/mcp-servers/ and PATCH /v1/mcp-servers/{id} (server_name optional there)."""

    config: McpConfig
    server_name: str | None = None


@attrs.define(kw_only=True)
class McpServer:
    """The stored record: secrets in plain text, for the server's own use only."""

    id: str
    server_name: str
    mcp_server_type: str
    command: str | None = None
    args: list[str] = attrs.Factory(list)
    env: dict[str, str] | None = None
    server_url: str | None = None
    auth_header: str | None = None
    auth_token: str | None = None
    custom_headers: dict[str, str] | None = None
    created_at: float = 0.0

    def headers(self) -> dict[str, str]:
        """The HTTP headers every request to this server carries (secrets included)."""
        out = dict(self.custom_headers or {})
        if self.auth_token:
            name = self.auth_header or "Authorization"
            token = self.auth_token
            if name.lower() == "authorization" and not token.lower().startswith("bearer "):
                token = f"Bearer {token}"
            out[name] = token
        return out


@attrs.frozen
class McpTool:
    """A tool as an MCP server lists it: its name, description and input JSON schema."""

    name: str
    description: str | None
    input_schema: Any


def shown(server: McpServer) -> dict[str, Any]:
    """The record as the API shows it, in the shape of its type, secrets masked."""
    out: dict[str, Any] = {
        "id": server.id,
        "server_name": server.server_name,
        "mcp_server_type": server.mcp_server_type,
    }
    if server.mcp_server_type == "stdio":
        env = None if server.env is None else dict.fromkeys(server.env, MASK)
        out.update(command=server.command, args=list(server.args), env=env)
        return out
    headers = server.custom_headers
    out.update(
        server_url=server.server_url,
        auth_header=server.auth_header,
        auth_token=MASK if server.auth_token else None,
        custom_headers=None if headers is None else dict.fromkeys(headers, MASK),
    )
    return out
