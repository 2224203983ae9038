"""MCP servers through a real node and letta-client: a server written in the tests (stdio
and streamable HTTP on loopback) and a published one (mcp-server-time over stdio); create,
list, run, attach, an agent turn that calls an MCP tool (scripted provider), and each way
an MCP server misbehaves (hangs, crashes mid-call, is not installed, declares an invalid
schema, answers an error, drops a tool): a clear tool error, and a healthy node after."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from letta_client import AsyncLetta, ConflictError, NotFoundError

from kelpie_trio.config import ServerConfig
from kelpie_trio.nursery.node import run_node
from tests.llm.fake_providers import FakeProvider, openai_completion, serving

DEMO = str(Path(__file__).with_name("demo_server.py"))
SECRET = "mcp-s3cr3t-4b1d"
TOKEN = "demo-token-93ac"


@asynccontextmanager
async def node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncLetta, str, FakeProvider]]:
    """A node serving on loopback (SQLite in tmp_path), a scripted OpenAI provider, and
    letta-client on it; MCP calls time out after 3 s."""
    monkeypatch.setenv("KELPIE_MCP_CALL_TIMEOUT", "3")
    async with serving() as fake, trio.open_nursery() as nursery:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
        stop = trio.Event()
        config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1)
        dispatcher = await nursery.start(
            functools.partial(run_node, config, shutdown=stop, handle_signals=False)
        )
        letta = AsyncLetta(base_url=dispatcher.address, max_retries=0)
        try:
            yield letta, dispatcher.address, fake
        finally:
            await letta.close()
            stop.set()


def stdio_config(**env: str) -> dict[str, Any]:
    return {"mcp_server_type": "stdio", "command": sys.executable, "args": [DEMO, "stdio"],
            "env": env or None}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def http_demo(transport: str = "http", **env: str) -> Iterator[str]:
    """The demo server on streamable HTTP (or SSE), on a free loopback port, until the
    block ends: its URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, DEMO, transport, str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # readiness: a bounded wait until the port accepts
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the demo MCP server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/{'sse' if transport == 'sse' else 'mcp'}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _turn(letta: AsyncLetta, fake: FakeProvider, agent_id: str, name: str,
                args: dict[str, Any]) -> Any:  # fmt: skip
    """One turn in which the model calls `name` once, then ends; the tool's return."""
    fake.script(openai_completion(tool_calls=[("call_1", name, args)]), openai_completion("ok"))
    reply = await letta.agents.messages.create(
        agent_id, messages=[{"role": "user", "content": "go"}]
    )
    [returned] = [m for m in reply.messages if m.message_type == "tool_return_message"]
    return returned


async def _healthy(letta: AsyncLetta, url: str, server_id: str, add_id: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/v1/health/")).status_code == 200
    result = await letta.mcp_servers.tools.run(add_id, mcp_server_id=server_id,
                                              args={"a": 2, "b": 3})  # fmt: skip
    assert (result.status, result.func_return) == ("success", "5")


async def test_a_stdio_server_registered_listed_run_and_called_by_an_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(90):
        async with node(tmp_path, monkeypatch) as (letta, url, fake):
            server = await letta.mcp_servers.create(
                server_name="demo", config=stdio_config(DEMO_GREETING="ahoy", API_KEY=SECRET)
            )
            assert server.id.startswith("mcp_server-")
            assert server.env == {"DEMO_GREETING": "********", "API_KEY": "********"}
            async with httpx.AsyncClient(base_url=url) as http:
                for path in ("/v1/mcp-servers/", f"/v1/mcp-servers/{server.id}"):
                    assert SECRET not in (await http.get(path)).text
            [listed] = [s for s in await letta.mcp_servers.list() if s.id == server.id]
            assert listed.server_name == "demo"

            tools = {t.name: t for t in await letta.mcp_servers.tools.list(server.id)}
            assert set(tools) == {"add", "greet", "hang", "crash", "fail", "broken"}
            add = tools["add"]
            assert add.tool_type == "external_mcp"
            assert add.json_schema["parameters"]["properties"]["a"]["type"] == "integer"
            assert add.json_schema["parameters"]["required"] == ["a", "b"]
            got = await letta.mcp_servers.tools.retrieve(add.id, mcp_server_id=server.id)
            assert got.id == add.id

            result = await letta.mcp_servers.tools.run(add.id, mcp_server_id=server.id,
                                                       args={"a": 1, "b": 2})  # fmt: skip
            assert (result.status, result.func_return) == ("success", "3")

            agent = await letta.agents.create(model="openai/gpt-4o-mini")
            await letta.agents.tools.attach(tools["greet"].id, agent_id=agent.id)
            returned = await _turn(letta, fake, agent.id, "greet", {"name": "Ada"})
            assert (returned.status, returned.tool_return) == ("success", "ahoy, Ada")
            direct = await letta.agents.tools.run("greet", agent_id=agent.id,
                                                  args={"name": "Cy"})  # fmt: skip
            assert (direct.status, direct.func_return) == ("success", "ahoy, Cy")
            # The model saw the tool with the schema the server declared.
            offered = fake.received[-2].json["tools"]
            [greet] = [t["function"] for t in offered if t["function"]["name"] == "greet"]
            assert greet["parameters"]["properties"]["name"]["type"] == "string"

            # The mask sent back keeps the stored value (the server still greets).
            await letta.mcp_servers.update(
                server.id,
                config={"mcp_server_type": "stdio", "env": {"DEMO_GREETING": "********",
                                                             "API_KEY": "********"}},
            )  # fmt: skip
            again = await letta.mcp_servers.tools.run(
                tools["greet"].id, mcp_server_id=server.id, args={"name": "Bo"}
            )
            assert again.func_return == "ahoy, Bo"

            # The node's /metrics counts them: four calls (run, turn, direct, again).
            async with httpx.AsyncClient(base_url=url) as http:
                scraped = (await http.get("/metrics")).text
            assert 'kelpie_mcp_calls_total{server_type="stdio"} 4.0' in scraped
            assert 'kelpie_mcp_sessions_open{server_type="stdio"} 1.0' in scraped

            await letta.mcp_servers.delete(server.id)
            with pytest.raises(NotFoundError):
                await letta.mcp_servers.retrieve(server.id)
            with pytest.raises(NotFoundError):
                await letta.tools.retrieve(add.id)
            assert [t.name for t in (await letta.agents.retrieve(
                agent.id, include=["agent.tools"])).tools if t.name == "greet"] == []  # fmt: skip
    logged = [r for r in caplog.records if not r.name.startswith("letta_client")]
    assert logged and all(SECRET not in r.getMessage() for r in logged)


async def test_a_streamable_http_server_with_a_bearer_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with http_demo(DEMO_TOKEN=TOKEN) as mcp_url, trio.fail_after(60):
        async with node(tmp_path, monkeypatch) as (letta, url, _):
            server = await letta.mcp_servers.create(
                server_name="web",
                config={"mcp_server_type": "streamable_http", "server_url": mcp_url,
                        "auth_header": "Authorization", "auth_token": TOKEN},
            )  # fmt: skip
            assert server.auth_token == "********"
            tools = {t.name: t for t in await letta.mcp_servers.tools.list(server.id)}
            result = await letta.mcp_servers.tools.run(
                tools["add"].id, mcp_server_id=server.id, args={"a": 20, "b": 22}
            )
            assert (result.status, result.func_return) == ("success", "42")
            assert tools["add"].tags == ["mcp:web"]
            assert tools["add"].metadata["mcp"] == {"server_name": "web", "server_id": server.id}
            # Renamed: its tools' tags and metadata follow; the token stays (sent masked).
            renamed = await letta.mcp_servers.update(
                server.id, server_name="web2",
                config={"mcp_server_type": "streamable_http", "auth_token": "********"},
            )  # fmt: skip
            assert renamed.server_name == "web2"
            add = await letta.mcp_servers.tools.retrieve(tools["add"].id, mcp_server_id=server.id)
            assert add.tags == ["mcp:web2"]
            again = await letta.mcp_servers.tools.run(add.id, mcp_server_id=server.id,
                                                      args={"a": 1, "b": 1})  # fmt: skip
            assert again.func_return == "2"

            # Without the token: created (as Letta does), no tools; a refresh says why.
            shut = await letta.mcp_servers.create(
                server_name="shut",
                config={"mcp_server_type": "streamable_http", "server_url": mcp_url},
            )
            assert await letta.mcp_servers.tools.list(shut.id) == []
            with pytest.raises(NotFoundError) as refused:
                await letta.mcp_servers.refresh(shut.id)
            detail = refused.value.body["detail"]
            assert detail["code"] == "MCPServerUnavailable"
            assert "401" in detail["error"] and "auth_token" in detail["error"]
            # Letta's connect route would start OAuth here: a clear 422 instead.
            async with httpx.AsyncClient(base_url=url) as http:
                oauth = await http.get(f"/v1/mcp-servers/connect/{shut.id}")
                assert oauth.status_code == 422
                assert "OAuth flows are not supported" in oauth.json()["detail"][0]["msg"]
                legacy = await http.post(  # Letta's older route, which starts OAuth too
                    "/v1/tools/mcp/servers/connect",
                    json={"server_name": "shut", "type": "streamable_http", "server_url": mcp_url},
                )
                assert legacy.status_code == 422
                assert "OAuth flows for MCP servers are not supported" in legacy.text
                ok = await http.get(f"/v1/mcp-servers/connect/{server.id}")
                assert ok.headers["content-type"].startswith("text/event-stream")
                events = [orjson.loads(line[6:]) for line in ok.text.splitlines() if line]
                assert [e["event"] for e in events] == ["connection_attempt", "success"]
                assert "add" in {t["name"] for t in events[1]["tools"]}
                for path in ("/v1/mcp-servers/", f"/v1/mcp-servers/{server.id}"):
                    assert TOKEN not in (await http.get(path)).text
    # Not in any log line of the node: ours, the MCP SDK's, its HTTP client's (the test's
    # own letta-client, in this process too, logs what it sends at DEBUG: not the node).
    logged = [r for r in caplog.records if not r.name.startswith("letta_client")]
    assert logged and all(TOKEN not in r.getMessage() for r in logged)


async def test_an_sse_server_and_a_tool_whose_name_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with http_demo("sse", DEMO_TOKEN=TOKEN) as mcp_url, trio.fail_after(60):
        async with node(tmp_path, monkeypatch) as (letta, _, _):
            mine = await letta.tools.create(source_code=GREET)
            config = {"mcp_server_type": "sse", "server_url": mcp_url,
                      "custom_headers": {"Authorization": f"Bearer {TOKEN}"}}  # fmt: skip
            # A custom tool has the name `greet`: the server is refused, naming both, and
            # nothing is made (Letta would replace the custom tool by the MCP one).
            with pytest.raises(ConflictError) as refused:
                await letta.mcp_servers.create(server_name="events", config=config)
            detail = refused.value.body["detail"]  # type: ignore[index]
            assert f"'greet' is already the custom tool {mine.id}" in detail
            assert await letta.mcp_servers.list() == []
            assert (await letta.tools.retrieve(mine.id)).tool_type == "custom"
            await letta.tools.delete(mine.id)
            server = await letta.mcp_servers.create(server_name="events", config=config)
            assert server.custom_headers == {"Authorization": "********"}
            tools = {t.name: t for t in await letta.mcp_servers.tools.list(server.id)}
            assert "greet" in tools
            result = await letta.mcp_servers.tools.run(
                tools["add"].id, mcp_server_id=server.id, args={"a": 4, "b": 5}
            )
            assert (result.status, result.func_return) == ("success", "9")
            # PUT /v1/tools/ replaces `add` by a custom tool (keeping its id): it is no
            # longer the server's, and a refresh is refused rather than take it back.
            await letta.tools.upsert(source_code=ADD)
            listed = {t.name for t in await letta.mcp_servers.tools.list(server.id)}
            assert "add" not in listed
            with pytest.raises(ConflictError) as refused:
                await letta.mcp_servers.refresh(server.id)
            assert f"'add' is already the custom tool {tools['add'].id}" in str(
                refused.value.body["detail"]  # type: ignore[index]
            )
            assert (await letta.tools.retrieve(tools["add"].id)).tool_type == "custom"
            assert {t.name for t in await letta.mcp_servers.tools.list(server.id)} == listed


ADD = '''
def add(a: int, b: int) -> int:
    """Add.

    Args:
        a: one
        b: another
    """
    return a + b
'''

GREET = '''
def greet(name: str) -> str:
    """Greet.

    Args:
        name: who
    """
    return name
'''


async def test_a_published_server_from_pypi_over_stdio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command = shutil.which("mcp-server-time", path=str(Path(sys.executable).parent))
    assert command, "mcp-server-time is in the test extra: pip install -e '.[test]'"
    with trio.fail_after(60):
        async with node(tmp_path, monkeypatch) as (letta, _, _):
            server = await letta.mcp_servers.create(
                server_name="time",
                config={"mcp_server_type": "stdio", "command": command,
                        "args": ["--local-timezone", "UTC"]},
            )  # fmt: skip
            tools = {t.name: t for t in await letta.mcp_servers.tools.list(server.id)}
            assert "get_current_time" in tools
            result = await letta.mcp_servers.tools.run(
                tools["get_current_time"].id, mcp_server_id=server.id,
                args={"timezone": "UTC"},
            )  # fmt: skip
            assert result.status == "success"
            assert '"timezone": "UTC"' in result.func_return


async def test_each_misbehaviour_is_a_clear_tool_error_and_the_node_stays_healthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offered = tmp_path / "offered"
    offered.write_text("add greet hang crash fail broken")
    with trio.fail_after(120):
        async with node(tmp_path, monkeypatch) as (letta, url, fake):
            server = await letta.mcp_servers.create(
                server_name="demo", config=stdio_config(DEMO_TOOLS_FILE=str(offered))
            )
            tools = {t.name: t for t in await letta.mcp_servers.tools.list(server.id)}
            agent = await letta.agents.create(
                model="openai/gpt-4o-mini", tool_ids=[t.id for t in tools.values()]
            )

            async def call(name: str) -> Any:
                return await _turn(letta, fake, agent.id, name, {"a": 1, "b": 1} if name == "add"
                                   else {})  # fmt: skip

            hung = await call("hang")  # the node's call timeout is 3 s
            assert hung.status == "error"
            assert "did not answer tools/call 'hang' within 3 s" in hung.tool_return
            await _healthy(letta, url, server.id, tools["add"].id)

            crashed = await call("crash")
            assert crashed.status == "error"
            assert "closed the connection" in crashed.tool_return
            await _healthy(letta, url, server.id, tools["add"].id)  # restarted at once

            failed = await call("fail")
            assert failed.status == "error"
            assert failed.tool_return == "Error executing tool fail: upstream says no"

            offered.write_text("add greet hang crash fail")  # `broken` removed upstream
            gone = await call("broken")
            assert gone.status == "error"
            assert "no longer offers a tool named 'broken'" in gone.tool_return
            sync = await letta.mcp_servers.refresh(server.id)
            assert sync["deleted"] == ["broken"]

            # Back, requiring a property it does not declare: not added, and said why.
            offered.write_text("add greet hang crash fail broken")
            await letta.mcp_servers.update(
                server.id, config={**stdio_config(DEMO_TOOLS_FILE=str(offered),
                                                  DEMO_BAD_SCHEMA="1")},
            )  # fmt: skip
            sync = await letta.mcp_servers.refresh(server.id)
            assert sync["added"] == []
            assert "requires undeclared properties: ['y']" in sync["skipped"]["broken"]

            # Not installed: the command is gone from this node.
            await letta.mcp_servers.update(
                server.id, config={"mcp_server_type": "stdio", "command": "no-such-mcp-server"}
            )
            missing = await call("add")
            assert missing.status == "error"
            assert "command not found" in missing.tool_return
            await letta.mcp_servers.update(server.id, config=stdio_config())
            await _healthy(letta, url, server.id, tools["add"].id)

            # A new version of the server: the changed tool is updated in place (same id).
            await letta.mcp_servers.update(server.id, config=stdio_config(DEMO_V2="1"))
            sync = await letta.mcp_servers.refresh(server.id)
            assert sync["updated"] == ["add"]
            add = await letta.tools.retrieve(tools["add"].id)
            assert add.description == "Add two integers (v2)."
