"""Two real MCP servers (the tests' FastMCP server, over stdio) that list a tool by the
same name: tool names are unique on this server, so the second one's sync is a 409 that
names the tool and the server that owns it, and changes nothing; once the owner is gone,
the second one syncs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from letta_client import ConflictError

from tests.mcp.test_mcp_e2e import node, stdio_config


async def test_a_second_server_listing_a_taken_tool_name_is_refused_naming_its_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_tools, second_tools = tmp_path / "first.txt", tmp_path / "second.txt"
    first_tools.write_text("add\n")
    second_tools.write_text("greet\n")
    with trio.fail_after(90):
        async with node(tmp_path, monkeypatch) as (letta, _, _):
            first = await letta.mcp_servers.create(
                server_name="first", config=stdio_config(DEMO_TOOLS_FILE=str(first_tools))
            )
            [add] = await letta.mcp_servers.tools.list(first.id)
            # Created while it lists the same tool: refused, and no server is made.
            with pytest.raises(ConflictError) as refused:
                await letta.mcp_servers.create(
                    server_name="twin", config=stdio_config(DEMO_TOOLS_FILE=str(first_tools))
                )
            detail = refused.value.body["detail"]  # type: ignore[index]
            assert f"'add' is already the tool {add.id} of MCP server 'first' ({first.id})" in (
                detail
            )
            assert [s.server_name for s in await letta.mcp_servers.list()] == ["first"]

            second = await letta.mcp_servers.create(
                server_name="second", config=stdio_config(DEMO_TOOLS_FILE=str(second_tools))
            )
            assert [t.name for t in await letta.mcp_servers.tools.list(second.id)] == ["greet"]
            # Upstream, the second server starts listing `add` too, and drops `greet`: the
            # refresh is refused as a whole (greet stays) and the first keeps its tool.
            second_tools.write_text("add\n")
            with pytest.raises(ConflictError) as refused:
                await letta.mcp_servers.refresh(second.id)
            assert "MCP server 'first'" in refused.value.body["detail"]  # type: ignore[index]
            assert [t.name for t in await letta.mcp_servers.tools.list(second.id)] == ["greet"]
            assert [t.id for t in await letta.mcp_servers.tools.list(first.id)] == [add.id]
            run = await letta.mcp_servers.tools.run(add.id, mcp_server_id=first.id,
                                                    args={"a": 1, "b": 2})  # fmt: skip
            assert (run.status, run.func_return) == ("success", "3")

            await letta.mcp_servers.delete(first.id)
            synced = await letta.mcp_servers.refresh(second.id)
            assert (synced["added"], synced["deleted"]) == (["add"], ["greet"])
            [taken_over] = await letta.mcp_servers.tools.list(second.id)
            assert taken_over.name == "add" and taken_over.id != add.id
