"""/v1/mcp-servers/ refusals in Letta's shapes, on the in-process app (no MCP sessions:
a server is created without tools, as Letta creates one it cannot reach)."""

from __future__ import annotations

from typing import Any

import pytest
from quart.testing import QuartClient

STDIO = {"mcp_server_type": "stdio", "command": "kb-server", "args": []}


async def _create(client: QuartClient, **body: Any) -> Any:
    return await client.post("/v1/mcp-servers/", json={"server_name": "kb", "config": STDIO,
                                                       **body})  # fmt: skip


async def test_bad_configs_are_422_naming_the_field(client: QuartClient) -> None:
    cases = [
        ({"config": STDIO, "server_name": None}, ["body", "server_name"]),
        ({"server_name": "x", "config": {"mcp_server_type": "ftp"}},
         ["body", "config", "mcp_server_type"]),
        ({"server_name": "x", "config": {"mcp_server_type": "stdio", "args": []}},
         ["body", "config", "command"]),
        ({"server_name": "x", "config": {"mcp_server_type": "stdio", "command": "c"}},
         ["body", "config", "args"]),
        ({"server_name": "x", "config": {"mcp_server_type": "streamable_http",
                                         "server_url": "file:///etc/passwd"}},
         ["body", "config", "server_url"]),
        ({"server_name": "x", "config": {"mcp_server_type": "sse"}},
         ["body", "config", "server_url"]),
        ({"server_name": "x", "config": {**STDIO, "env": {"K": 1}}},
         ["body", "config", "env", "K"]),
    ]  # fmt: skip
    for body, loc in cases:
        response = await client.post("/v1/mcp-servers/", json=body)
        assert response.status_code == 422, body
        detail = (await response.get_json())["detail"]
        assert detail[0]["loc"][:3] == loc[:3], (body, detail)
    assert (await (await client.get("/v1/mcp-servers/")).get_json()) == []


async def test_unknown_and_malformed_ids(client: QuartClient) -> None:
    unknown = "mcp_server-00000000-0000-4000-8000-000000000000"
    assert (await client.get(f"/v1/mcp-servers/{unknown}")).status_code == 404
    assert (await client.get(f"/v1/mcp-servers/{unknown}/tools")).status_code == 404
    assert (await client.get("/v1/mcp-servers/nope")).status_code == 422
    assert (await client.delete(f"/v1/mcp-servers/{unknown}")).status_code == 404


async def test_a_name_is_unique_and_secrets_never_come_back(client: QuartClient) -> None:
    body = {"server_name": "web", "config": {
        "mcp_server_type": "streamable_http", "server_url": "http://127.0.0.1:9/mcp",
        "auth_token": "Bearer tok-123", "custom_headers": {"X-Key": "hdr-456"}}}  # fmt: skip
    created = await client.post("/v1/mcp-servers/", json=body)
    assert created.status_code == 200
    shown = await created.get_json()
    assert shown["auth_token"] == "********"
    assert shown["custom_headers"] == {"X-Key": "********"}
    again = await client.post("/v1/mcp-servers/", json=body)
    assert again.status_code == 409
    listed = await (await client.get("/v1/mcp-servers/")).get_data()
    assert b"tok-123" not in listed and b"hdr-456" not in listed
    # Unreachable (no sessions here): Letta's 404 with its code, the server unchanged.
    refresh = await client.patch(f"/v1/mcp-servers/{shown['id']}/refresh")
    assert refresh.status_code == 404
    assert (await refresh.get_json())["detail"]["code"] == "MCPServerUnavailable"
    # Its type cannot change; a refused update changes nothing.
    changed = await client.patch(f"/v1/mcp-servers/{shown['id']}",
                                 json={"config": STDIO})  # fmt: skip
    assert changed.status_code == 422
    assert (await (await client.get(f"/v1/mcp-servers/{shown['id']}")).get_json()) == shown
    assert (await client.delete(f"/v1/mcp-servers/{shown['id']}")).status_code == 204


@pytest.mark.parametrize(
    ("method", "path", "loc"),
    [("POST", "/v1/tools/mcp/servers/connect", "body"),
     ("GET", "/v1/tools/mcp/oauth/callback?state=s&code=c", "query")],
)  # fmt: skip
async def test_lettas_oauth_routes_are_a_422_saying_oauth_is_not_supported(
    client: QuartClient, method: str, path: str, loc: str
) -> None:
    """Where Letta would start (or finish) an MCP OAuth flow: a 422 naming what is not
    supported and what to use instead; nothing is created."""
    body = {"server_name": "oauth", "type": "streamable_http",
            "server_url": "https://mcp.example.com/mcp"}  # fmt: skip
    answer = await client.open(path, method=method, json=body if method == "POST" else None)
    assert answer.status_code == 422
    [error] = (await answer.get_json())["detail"]
    assert error["loc"] == [loc]
    assert "OAuth flows for MCP servers are not supported" in error["msg"]
    assert "POST /v1/mcp-servers/" in error["msg"] and "auth_token" in error["msg"]
    assert (await (await client.get("/v1/mcp-servers/")).get_json()) == []
