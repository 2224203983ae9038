"""Sleeptime groups and conversations in agent files a client gets wrong: refused whole."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from quart.testing import QuartClient

from kelpie_trio.api.app import create_app
from kelpie_trio.storage import MemoryStore
from tests.api.test_agentfile import import_file, ok, upload

LETTA_FILE = Path(__file__).parents[1] / "data" / "letta_agent_files" / "sleeptime_group_v2.af"
SIM = {"model": "sim/agent", "embedding": "sim/embedding"}


@pytest.fixture
async def client(nursery: trio.Nursery) -> AsyncIterator[QuartClient]:
    store = MemoryStore()
    await nursery.start(store.run)
    async with create_app(store).test_app() as test_app:  # the simulated models only
        yield test_app.test_client()


def letta_file() -> dict[str, Any]:
    return json.loads(LETTA_FILE.read_text())


async def refused(client: QuartClient, content: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post("/v1/agents/import", files=upload(content), form=SIM)
    assert response.status_code == 422
    assert await ok(await client.get("/v1/agents/")) == []  # nothing was written
    return (await response.get_json())["detail"]


async def test_a_group_naming_an_agent_the_file_lacks_is_refused(client: QuartClient) -> None:
    file = letta_file()
    file["groups"][0]["manager_config"]["manager_agent_id"] = "agent-7"
    file["groups"][0]["agent_ids"] = ["agent-0"]
    problems = await refused(client, file)
    assert [p["loc"] for p in problems] == [
        ["body", "file", "groups", 0, "manager_config", "manager_agent_id"]
    ]


async def test_a_companion_that_is_its_own_manager_or_a_bad_frequency_is_refused(
    client: QuartClient,
) -> None:
    file = letta_file()
    file["groups"][0]["agent_ids"] = ["agent-0"]
    file["groups"][0]["manager_config"]["sleeptime_agent_frequency"] = 0
    problems = await refused(client, file)
    assert {tuple(p["loc"][4:]) for p in problems} == {
        ("agent_ids", 0),
        ("manager_config", "sleeptime_agent_frequency"),
    }


async def test_a_conversation_window_naming_a_message_it_lacks_is_refused(
    client: QuartClient,
) -> None:
    file = letta_file()
    file["agents"][0]["conversations"] = [
        {"id": "conversation-0", "messages": [], "in_context_message_ids": ["message-1"]}
    ]
    problems = await refused(client, file)
    assert problems[0]["loc"] == [
        "body", "file", "agents", 0, "conversations", 0, "in_context_message_ids", 0,
    ]  # fmt: skip


async def test_a_group_of_a_kind_not_made_here_is_left_out(client: QuartClient) -> None:
    file = letta_file()
    file["groups"][0]["manager_config"] = {"manager_type": "round_robin"}
    file["agents"][0]["group_ids"] = []
    primary, _ = await import_file(client, file, **SIM)
    made = await ok(await client.get(f"/v1/agents/{primary}"))
    assert made["multi_agent_group"] is None
    assert await ok(await client.get("/v1/groups")) == []


async def test_exporting_a_conversation_that_is_not_one_is_a_404(client: QuartClient) -> None:
    made = await ok(await client.post("/v1/agents/", json={"name": "a"}))
    for bad in ("nope", "conv-" + "x" * 5000, "conv-00000000-0000-4000-8000-000000000000"):
        response = await client.get(f"/v1/agents/{made['id']}/export?conversation_id={bad}")
        assert response.status_code == 404, bad
        assert "Conversation" in (await response.get_json())["detail"]
