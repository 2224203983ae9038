"""An agent file carries the MCP servers its tools come from, without their secrets, and
an import links them again: letta-client against a real server, with the demo MCP server
of tests/mcp over stdio."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import letta_client
import pytest
from letta_client import Letta

from tests.mcp.test_mcp_e2e import DEMO

SECRET = "af-mcp-s3cr3t-77e1"


@pytest.fixture
def register(letta: Letta) -> Iterator[Callable[..., Any]]:
    """Register the demo server over stdio; every server of that name is deleted after
    (tool names are unique, so one left behind would hold `add` for the next test)."""
    names = []

    def make(name: str, **env: str) -> Any:
        names.append(name)
        config = {"mcp_server_type": "stdio", "command": sys.executable,
                  "args": [DEMO, "stdio"], "env": env}  # fmt: skip
        return letta.mcp_servers.create(server_name=name, config=config)

    yield make
    for server in letta.mcp_servers.list():
        if server.server_name in names:
            letta.mcp_servers.delete(server.id)


def _agent_with(letta: Letta, name: str, tool_names: list[str], server_id: str) -> str:
    tools = {t.name: t.id for t in letta.mcp_servers.tools.list(server_id)}
    agent = letta.agents.create(name=name, tool_ids=[tools[n] for n in tool_names])
    return agent.id


def _import(letta: Letta, text: str) -> str:
    (agent_id,) = letta.agents.import_file(
        file=("a.af", text.encode(), "application/json")
    ).agent_ids
    return agent_id


def _tools(letta: Letta, agent_id: str) -> dict[str, letta_client.types.Tool]:
    agent = letta.agents.retrieve(agent_id, include=["agent.tools"])
    return {t.name: t for t in agent.tools}


def test_an_mcp_tool_travels_with_its_server_and_never_its_secrets(
    letta: Letta, register: Callable[..., Any]
) -> None:
    server = register("af-demo", DEMO_GREETING="ahoy", API_KEY=SECRET)
    agent_id = _agent_with(letta, "mcp-roundtrip", ["add", "greet"], server.id)

    text = letta.agents.export_file(agent_id)
    assert SECRET not in text and "ahoy" not in text
    exported = json.loads(text)
    [entry] = exported["mcp_servers"]
    assert entry == {
        "id": "mcp_server-0",
        "server_type": "stdio",
        "server_name": "af-demo",
        "server_url": None,
        "stdio_config": {
            "server_name": "af-demo",
            "type": "stdio",
            "command": sys.executable,
            "args": [DEMO, "stdio"],
        },
        # Named, never their values: what to give again after an import elsewhere.
        "metadata_": {"secrets_not_exported": ["env.DEMO_GREETING", "env.API_KEY"]},
    }
    mcp_tools = [t for t in exported["tools"] if t["tool_type"] == "external_mcp"]
    assert sorted(t["name"] for t in mcp_tools) == ["add", "greet"]

    # Imported where the server is: the same server and the same tools are linked.
    before = {t.name: t.id for t in letta.mcp_servers.tools.list(server.id)}
    copy = _import(letta, text)
    assert {n: t.id for n, t in _tools(letta, copy).items() if n in before} == {
        "add": before["add"],
        "greet": before["greet"],
    }
    assert [s.id for s in letta.mcp_servers.list() if s.server_name == "af-demo"] == [server.id]

    # Imported where it is not (here: after deleting it): made again, without secrets,
    # its tools made again and linked; they run once the server answers.
    letta.mcp_servers.delete(server.id)
    again = _import(letta, text)
    [made] = [s for s in letta.mcp_servers.list() if s.server_name == "af-demo"]
    assert made.id != server.id
    assert made.env is None
    tools = _tools(letta, again)
    assert {t.name for t in letta.mcp_servers.tools.list(made.id)} == {"add", "greet"}
    assert tools["add"].id in {t.id for t in letta.mcp_servers.tools.list(made.id)}
    ran = letta.agents.tools.run("add", agent_id=again, args={"a": 2, "b": 3})
    assert (ran.status, ran.func_return) == ("success", "5")
    greeted = letta.agents.tools.run("greet", agent_id=again, args={"name": "Ada"})
    assert greeted.func_return == "hello, Ada"  # the default: the secret env did not travel


def test_an_import_refuses_a_server_configured_differently_and_changes_nothing(
    letta: Letta, register: Callable[..., Any]
) -> None:
    server = register("af-other")
    agent_id = _agent_with(letta, "mcp-conflict", ["add"], server.id)
    exported = json.loads(letta.agents.export_file(agent_id))
    exported["mcp_servers"][0]["stdio_config"]["args"] = [DEMO, "stdio", "--other"]
    agents_before = len(letta.agents.list(limit=1000).items)
    with pytest.raises(letta_client.ConflictError, match="configured differently"):
        _import(letta, json.dumps(exported))
    assert len(letta.agents.list(limit=1000).items) == agents_before


def test_an_mcp_server_entry_that_cannot_be_made_is_a_422(
    letta: Letta, register: Callable[..., Any]
) -> None:
    server = register("af-bad")
    agent_id = _agent_with(letta, "mcp-bad", ["add"], server.id)
    exported = json.loads(letta.agents.export_file(agent_id))
    letta.mcp_servers.delete(server.id)
    exported["mcp_servers"][0]["server_type"] = "carrier_pigeon"
    with pytest.raises(letta_client.UnprocessableEntityError, match="server_type"):
        _import(letta, json.dumps(exported))
    exported["mcp_servers"][0].update(server_type="streamable_http", server_url="ftp://x")
    with pytest.raises(letta_client.UnprocessableEntityError, match="http"):
        _import(letta, json.dumps(exported))
    assert [s for s in letta.mcp_servers.list() if s.server_name == "af-bad"] == []
