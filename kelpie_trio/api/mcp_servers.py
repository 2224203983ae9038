"""/v1/mcp-servers/ (Letta's client.mcp_servers and client.mcp_servers.tools)."""

from __future__ import annotations

import orjson
from quart import Blueprint, Response, request

from kelpie_trio.api.common import body, check_id, json_response, render, service
from kelpie_trio.api.spec import documented
from kelpie_trio.errors import Invalid
from kelpie_trio.models.mcp import CreateMcpServer, shown
from kelpie_trio.models.tools import Tool

mcp_servers = Blueprint("mcp_servers", __name__)


def _server_id(value: str) -> str:
    return check_id(value, "mcp_server", "mcp_server_id")


@mcp_servers.post("/v1/mcp-servers/")
@mcp_servers.post("/v1/mcp-servers")
@documented(
    "Add an MCP server (stdio, sse or streamable_http) and sync its tools",
    request=CreateMcpServer,
)
async def create_mcp_server() -> Response:
    return json_response(shown(await service().create_mcp_server(await body())))


@mcp_servers.get("/v1/mcp-servers/")
@mcp_servers.get("/v1/mcp-servers")
@documented("List the MCP servers (secrets masked)")
async def list_mcp_servers() -> Response:
    return json_response([shown(s) for s in await service().list_mcp_servers()])


@mcp_servers.get("/v1/mcp-servers/connect/<mcp_server_id>")
@documented(
    "Check that an MCP server connects (Letta's events; OAuth is refused with a 422)",
    media_type="text/event-stream",
)
async def connect_mcp_server(mcp_server_id: str) -> Response:
    events = await service().connect_mcp_server(_server_id(mcp_server_id))
    payload = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    return Response(payload, content_type="text/event-stream")


# Letta's legacy MCP routes (/v1/tools/mcp/..., which letta-client 1.12.1 no longer calls)
# where it starts an OAuth flow, or finishes one: refused, saying what to do instead.
_NO_OAUTH = (
    "OAuth flows for MCP servers are not supported by this server. Register the server "
    "with POST /v1/mcp-servers/ giving auth_token (and auth_header) or custom_headers, "
    "and check that it connects with GET /v1/mcp-servers/connect/{mcp_server_id}"
)


@mcp_servers.post("/v1/tools/mcp/servers/connect")
@documented("Not served: Letta's legacy connect, which starts OAuth flows (a 422 says why)")
async def legacy_connect_mcp_server() -> Response:
    raise Invalid.field(["body"], f"POST /v1/tools/mcp/servers/connect: {_NO_OAUTH}")


@mcp_servers.get("/v1/tools/mcp/oauth/callback")
@documented("Not served: the end of an MCP OAuth flow, which this server never starts")
async def mcp_oauth_callback() -> Response:
    raise Invalid.field(["query"], f"no MCP OAuth flow was started here. {_NO_OAUTH}")


@mcp_servers.get("/v1/mcp-servers/<mcp_server_id>")
@documented("Retrieve an MCP server (secrets masked)")
async def retrieve_mcp_server(mcp_server_id: str) -> Response:
    return json_response(shown(await service().get_mcp_server(_server_id(mcp_server_id))))


@mcp_servers.patch("/v1/mcp-servers/<mcp_server_id>")
@documented("Update an MCP server's name or configuration", request=CreateMcpServer, partial=True)
async def update_mcp_server(mcp_server_id: str) -> Response:
    server = await service().update_mcp_server(_server_id(mcp_server_id), await body())
    return json_response(shown(server))


@mcp_servers.delete("/v1/mcp-servers/<mcp_server_id>")
@documented("Delete an MCP server and its tools")
async def delete_mcp_server(mcp_server_id: str) -> Response:
    await service().delete_mcp_server(_server_id(mcp_server_id))
    return Response(b"", status=204)


@mcp_servers.patch("/v1/mcp-servers/<mcp_server_id>/refresh")
@documented("Sync an MCP server's tools again: add, update, remove", query=("agent_id",))
async def refresh_mcp_server(mcp_server_id: str) -> Response:
    request.args.get("agent_id")  # Letta passes it on as a header to the server; unused here
    return json_response(await service().refresh_mcp_server(_server_id(mcp_server_id)))


@mcp_servers.get("/v1/mcp-servers/<mcp_server_id>/tools")
@mcp_servers.get("/v1/mcp-servers/<mcp_server_id>/tools/")
@documented("List the tools synced from an MCP server", response=Tool, many=True)
async def list_mcp_tools(mcp_server_id: str) -> Response:
    tools = await service().list_mcp_tools(_server_id(mcp_server_id))
    return json_response([render(t) for t in tools])


@mcp_servers.get("/v1/mcp-servers/<mcp_server_id>/tools/<tool_id>")
@documented("Retrieve a tool of an MCP server", response=Tool)
async def retrieve_mcp_tool(mcp_server_id: str, tool_id: str) -> Response:
    tool = await service().get_mcp_tool(
        _server_id(mcp_server_id), check_id(tool_id, "tool", "tool_id")
    )
    return json_response(render(tool))


@mcp_servers.post("/v1/mcp-servers/<mcp_server_id>/tools/<tool_id>/run")
@documented("Run a tool of an MCP server", body_optional=True)
async def run_mcp_tool(mcp_server_id: str, tool_id: str) -> Response:
    raw = await request.get_data()
    payload = await body() if raw.strip() else {}
    result = await service().run_mcp_tool(
        _server_id(mcp_server_id), check_id(tool_id, "tool", "tool_id"), payload
    )
    return json_response(result)
