"""The official letta-client SDK against a real server: export_file and import_file."""

from __future__ import annotations

import json

import letta_client
import pytest
from letta_client import Letta


def tool_source(name: str, doc: str) -> str:
    return (
        f"def {name}(sides: int) -> int:\n"
        f'    """{doc}\n\n'
        "    Args:\n"
        "        sides (int): How many sides.\n"
        '    """\n'
        "    return sides\n"
    )


def make_agent(letta: Letta, name: str, tool: str) -> letta_client.types.AgentState:
    letta.tools.upsert(source_code=tool_source(tool, "Roll a die."))
    return letta.agents.create(
        name=name,
        system="You roll dice.",
        memory_blocks=[
            {"label": "persona", "value": "A dice roller."},
            {"label": "human", "value": "Name: Ada"},
        ],
        tools=[tool],
        tags=["dice"],
    )


def test_sdk_export_then_import_makes_an_equal_agent(letta: Letta) -> None:
    original = make_agent(letta, "roller", "roll_sdk")
    text = letta.agents.export_file(original.id)
    assert isinstance(text, str)
    exported = json.loads(text)
    assert exported["agents"][0]["id"] == "agent-0" and exported["agents"][0]["name"] == "roller"
    imported = letta.agents.import_file(file=("roller.af", text.encode(), "application/json"))
    assert imported.model_fields_set == {"agent_ids"}
    (new_id,) = imported.agent_ids
    copy = letta.agents.retrieve(new_id, include=["agent.blocks", "agent.tools", "agent.tags"])
    assert copy.id != original.id
    assert (copy.name, copy.system, copy.tags) == (original.name, original.system, original.tags)
    assert copy.llm_config.handle == original.llm_config.handle
    assert [(b.label, b.value) for b in copy.memory.blocks] == [
        (b.label, b.value) for b in original.memory.blocks
    ]
    assert {b.id for b in copy.memory.blocks}.isdisjoint(b.id for b in original.memory.blocks)
    assert [t.name for t in copy.tools] == [t.name for t in original.tools]


def test_sdk_import_with_a_new_name_and_tools_kept(letta: Letta) -> None:
    original = make_agent(letta, "keeper", "roll_kept")
    exported = json.loads(letta.agents.export_file(original.id))
    tool = next(t for t in exported["tools"] if t["name"] == "roll_kept")
    tool.update(source_code=tool_source("roll_kept", "Roll two dice."), json_schema=None)
    imported = letta.agents.import_file(
        file=("keeper.af", json.dumps(exported).encode(), "application/json"),
        name="kept",
        override_existing_tools=False,
    )
    copy = letta.agents.retrieve(imported.agent_ids[0])
    assert copy.name == "kept"
    (kept,) = letta.tools.list(name="roll_kept")
    assert "Roll a die." in kept.source_code  # not replaced by the file's version
    letta.agents.import_file(file=("keeper.af", json.dumps(exported).encode()))
    (replaced,) = letta.tools.list(name="roll_kept")
    assert replaced.id == kept.id and "Roll two dice." in replaced.source_code


def test_sdk_a_bad_file_is_unprocessable(letta: Letta) -> None:
    before = {a.id for a in letta.agents.list()}
    with pytest.raises(letta_client.UnprocessableEntityError):
        letta.agents.import_file(file=("bad.af", b'{"agents": "nope"}'))
    with pytest.raises(letta_client.UnprocessableEntityError):
        letta.agents.import_file(file=("bad.af", b"not json at all"))
    assert {a.id for a in letta.agents.list()} == before


def test_sdk_export_of_an_unknown_agent_is_not_found(letta: Letta) -> None:
    with pytest.raises(letta_client.NotFoundError):
        letta.agents.export_file("agent-00000000-0000-4000-8000-000000000000")
