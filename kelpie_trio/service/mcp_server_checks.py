"""What an MCP server record must hold, and the errors MCP server requests answer with.

Checked on every create and update (service/mcp_servers.py), after the update is applied
to the stored record, so a record is whole whichever fields a request sent.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kelpie_trio.errors import Conflict, Invalid, ServiceError
from kelpie_trio.models.mcp import MASK, SERVER_TYPES, McpConfig, McpServer
from kelpie_trio.service.limits import check_key_part

__all__ = ["McpUnavailable", "ToolNameClash", "check_server", "config_type", "kept_secrets"]


class McpUnavailable(ServiceError):
    """The MCP server could not be reached to list its tools. Letta answers 404 with this
    code; clients match on it."""

    status = 404

    def __init__(self, server: McpServer, error: Exception) -> None:
        super().__init__(f"Could not connect to MCP server {server.server_name} to resync tools")
        self.error = str(error)

    def detail(self) -> object:
        return {"code": "MCPServerUnavailable", "message": str(self), "error": self.error}


class ToolNameClash(Conflict):
    """A listing names tools that other tools here already have: nothing is synced."""

    def __init__(self, server: McpServer, owners: dict[str, str]) -> None:
        clashes = "; ".join(f"'{name}' is already {owner}" for name, owner in owners.items())
        super().__init__(
            f"MCP server '{server.server_name}' lists tools whose names are taken: {clashes}. "
            "Tool names are unique on this server, so none of its tools were synced: rename "
            "or delete the tool that has the name, or the MCP server that owns it"
        )


def _strings(value: Any, loc: list[str | int], what: str) -> None:
    if value is not None and not (
        isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    ):
        raise Invalid.field(loc, f"{what} must be an object of strings")


def _check_url(url: str | None, loc: list[str | int]) -> None:
    if not url:
        raise Invalid.field(loc, "a server_url is required for this server type", "missing")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise Invalid.field(loc, "server_url has a port that is not a number") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid.field(loc, "server_url must be an http:// or https:// URL with a host")


def check_server(server: McpServer) -> None:
    """A whole record (after create or update), or Invalid naming the field."""
    loc: list[str | int] = ["body", "config"]
    if not server.server_name:
        raise Invalid.field(["body", "server_name"], "server_name must not be empty")
    check_key_part(["body", "server_name"], server.server_name, "the server's name")
    if server.mcp_server_type == "stdio":
        if not server.command:
            raise Invalid.field([*loc, "command"], "a stdio server needs a command", "missing")
    else:
        _check_url(server.server_url, [*loc, "server_url"])
    _strings(server.env, [*loc, "env"], "env")
    _strings(server.custom_headers, [*loc, "custom_headers"], "custom_headers")


def config_type(config: McpConfig, fallback: str | None = None) -> str:
    kind = config.mcp_server_type or fallback
    if kind not in SERVER_TYPES:
        raise Invalid.field(
            ["body", "config", "mcp_server_type"],
            f"mcp_server_type must be one of {', '.join(SERVER_TYPES)}",
        )
    return kind


def kept_secrets(
    given: dict[str, str] | None, stored: dict[str, str] | None
) -> dict[str, str] | None:
    """Secrets sent back masked keep their stored values."""
    if given is None:
        return None
    return {k: (stored or {}).get(k, v) if v == MASK else v for k, v in given.items()}
