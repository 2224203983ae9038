"""SSE and streamable-HTTP MCP servers at addresses that are not public: allowed by
default (as stdio servers are), refused when the operator says so
(KELPIE_MCP_ALLOW_PRIVATE=off, or KELPIE_MCP_STDIO=off without it): a literal address
or localhost at create and update (422, nothing stored), a name resolving to one when
connecting (checked on the addresses connected to)."""

from __future__ import annotations

from pathlib import Path

import pytest
from letta_client import UnprocessableEntityError

from kelpie_trio.mcp import McpFailure, McpSettings
from kelpie_trio.mcp.client import SdkMcpConnector, private_url_refusal
from kelpie_trio.models.mcp import McpServer
from tests.mcp.test_mcp_e2e import http_demo, node


def test_literal_addresses_and_localhost_are_judged_without_resolving() -> None:
    refused = ["http://127.0.0.1:8000/mcp", "http://[::1]:9/mcp", "http://localhost:3000/sse",
               "http://LOCALHOST./mcp", "http://api.localhost/mcp", "http://10.1.2.3/mcp",
               "http://169.254.169.254/latest", "http://[::ffff:192.168.0.1]/mcp",
               "http://0.0.0.0:80/"]  # fmt: skip
    for url in refused:
        assert private_url_refusal(url) is not None, url
    for url in ("https://mcp.example.com/mcp", "http://8.8.8.8/mcp", "http://[2606:4700::1]/"):
        assert private_url_refusal(url) is None, url


def test_the_setting_follows_stdio_unless_given() -> None:
    assert McpSettings.from_env({}).allow_private is True
    assert McpSettings.from_env({"KELPIE_MCP_STDIO": "off"}).allow_private is False
    given = {"KELPIE_MCP_STDIO": "off", "KELPIE_MCP_ALLOW_PRIVATE": "on"}
    assert McpSettings.from_env(given).allow_private is True
    assert McpSettings.from_env({"KELPIE_MCP_ALLOW_PRIVATE": "off"}).allow_private is False
    with pytest.raises(ValueError, match="KELPIE_MCP_ALLOW_PRIVATE"):
        McpSettings.from_env({"KELPIE_MCP_ALLOW_PRIVATE": "maybe"})


async def test_a_name_resolving_to_loopback_is_refused_when_connecting() -> None:
    with http_demo() as url:
        named = url.replace("127.0.0.1", "localhost")  # resolved by the node, not judged
        server = McpServer(id="mcp_server-1", server_name="demo",
                           mcp_server_type="streamable_http", server_url=named)  # fmt: skip
        with pytest.raises(McpFailure) as refused:
            async with SdkMcpConnector(allow_private=False).connect(server) as connection:
                await connection.list_tools()
        assert "refused to connect to 'localhost'" in str(refused.value)
        assert "KELPIE_MCP_ALLOW_PRIVATE=on" in str(refused.value)
        async with SdkMcpConnector(allow_private=True).connect(server) as connection:
            assert "add" in [t.name for t in await connection.list_tools()]


async def test_a_node_that_refuses_them_answers_422_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KELPIE_MCP_ALLOW_PRIVATE", "off")
    async with node(tmp_path, monkeypatch) as (letta, _, _):
        config = {"mcp_server_type": "streamable_http", "server_url": "http://127.0.0.1:9/mcp"}
        with pytest.raises(UnprocessableEntityError, match="public addresses only"):
            await letta.mcp_servers.create(server_name="local", config=config)
        assert await letta.mcp_servers.list() == []
        public = {"mcp_server_type": "sse", "server_url": "https://mcp.example.invalid/sse"}
        made = await letta.mcp_servers.create(server_name="remote", config=public)
        with pytest.raises(UnprocessableEntityError, match="not a public address"):
            await letta.mcp_servers.update(
                made.id, config={"mcp_server_type": "sse", "server_url": "http://[::1]:9/sse"}
            )
        assert (await letta.mcp_servers.retrieve(made.id)).server_url == public["server_url"]
