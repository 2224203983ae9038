"""The official letta-client SDK against a real server: tools and an agent's tools."""

from __future__ import annotations

import letta_client
import pytest
from letta_client import Letta

# Tool requires only `id`; a server should still send every field Letta does.
FIELDS = {"id", "name", "tool_type", "description", "source_type", "source_code", "json_schema",
          "tags", "return_char_limit"}  # fmt: skip


def source(name: str, doc: str) -> str:
    return (
        f"def {name}(city: str, days: int = 1) -> str:\n"
        f'    """{doc}\n\n'
        "    Args:\n"
        "        city (str): Where.\n"
        "        days (int): How many days ahead.\n"
        '    """\n'
        "    return city\n"
    )


def test_sdk_creates_retrieves_updates_and_deletes_a_tool(letta: Letta) -> None:
    tool = letta.tools.create(source_code=source("forecast", "Tell the weather."), tags=["w"])
    assert tool.model_fields_set >= FIELDS
    assert tool.id.startswith("tool-") and tool.name == "forecast"
    assert tool.tool_type == "custom" and tool.description == "Tell the weather."
    params = tool.json_schema["parameters"]
    assert params["required"] == ["city"]
    assert params["properties"]["days"] == {
        "type": "integer",
        "description": "How many days ahead.",
    }
    assert letta.tools.retrieve(tool.id).source_code == tool.source_code
    updated = letta.tools.update(tool.id, description="Weather ahead.", metadata={"v": 2})
    assert updated.description == "Weather ahead." and updated.metadata == {"v": 2}
    assert updated.name == "forecast" and updated.tags == ["w"]
    letta.tools.delete(tool.id)
    with pytest.raises(letta_client.NotFoundError):
        letta.tools.retrieve(tool.id)


def test_sdk_upsert_keeps_the_id(letta: Letta) -> None:
    first = letta.tools.upsert(source_code=source("tides", "Tide times."))
    second = letta.tools.upsert(source_code=source("tides", "Tide tables."))
    assert second.id == first.id and second.description == "Tide tables."
    assert [t.id for t in letta.tools.list(name="tides")] == [first.id]


def test_sdk_sees_409_for_a_taken_name_and_422_for_bad_source(letta: Letta) -> None:
    letta.tools.create(source_code=source("sunrise", "When the sun rises."))
    with pytest.raises(letta_client.ConflictError):
        letta.tools.create(source_code=source("sunrise", "Again."))
    with pytest.raises(letta_client.UnprocessableEntityError) as raised:
        letta.tools.create(source_code="def nope(:\n")
    assert "line 1" in str(raised.value.body)
    with pytest.raises(letta_client.PermissionDeniedError):
        letta.tools.upsert(source_code=source("send_message", "Not ours to replace."))


def test_sdk_lists_base_tools_and_walks_every_page(letta: Letta) -> None:
    made = {letta.tools.create(source_code=source(f"paged_{i}", "Paged.")).id for i in range(5)}
    listed = list(letta.tools.list(limit=3))  # follows ?after= across base and custom tools
    ids = [t.id for t in listed]
    assert len(ids) == len(set(ids)) and made <= set(ids)
    names = [t.name for t in listed]
    assert names[0] == "send_message" and "archival_memory_search" in names
    assert all(t.model_fields_set >= FIELDS for t in listed)
    assert [t.name for t in letta.tools.list(search="paged_", limit=2)] == [
        f"paged_{i}" for i in range(5)
    ]


def test_sdk_agent_tools_list_attach_detach(letta: Letta) -> None:
    tool = letta.tools.create(source_code=source("moon_phase", "The moon's phase."))
    agent = letta.agents.create(name="tooled", tools=["moon_phase"])
    assert "moon_phase" in [t.name for t in agent.tools]
    assert all("id" in t.model_fields_set for t in agent.tools)
    assert "memory_replace" in [t.name for t in agent.tools]  # base tools by default
    bare = letta.agents.create(name="bare", include_base_tools=False)
    assert bare.tools == []
    state = letta.agents.tools.attach(tool.id, agent_id=bare.id)
    assert state is not None and [t.name for t in state.tools] == ["moon_phase"]
    assert [t.id for t in letta.agents.tools.list(bare.id)] == [tool.id]
    letta.agents.tools.detach(tool.id, agent_id=bare.id)
    assert list(letta.agents.tools.list(bare.id)) == []
    assert [t.name for t in letta.agents.retrieve(agent.id).tools].count("moon_phase") == 1


def test_sdk_searches_tools(letta: Letta) -> None:
    results = letta.tools.search(query="core memory append", limit=3)
    assert results[0].tool.name == "core_memory_append"
    assert {"tool", "combined_score"} <= results[0].model_fields_set
