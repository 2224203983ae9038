"""The official letta-client SDK against a real server: agents, core memory, models, tags."""

from __future__ import annotations

import letta_client
import pytest
from letta_client import Letta

REQUIRED = {"id", "agent_type", "blocks", "llm_config", "memory", "name", "sources", "system",
            "tags", "tools"}  # fmt: skip


def test_sdk_agent_round_trip_with_memory_blocks(letta: Letta) -> None:
    agent = letta.agents.create(
        name="sdk-agent",
        memory_blocks=[{"label": "human", "value": "Name: Ada"}],
        tags=["sdk"],
    )
    assert agent.model_fields_set >= REQUIRED
    assert agent.memory.blocks[0].value == "Name: Ada"
    got = letta.agents.retrieve(agent.id)
    assert got.name == "sdk-agent" and got.llm_config.handle == agent.llm_config.handle
    letta.agents.blocks.update("human", agent_id=agent.id, value="Name: Ada Lovelace")
    assert letta.agents.blocks.retrieve("human", agent_id=agent.id).value == "Name: Ada Lovelace"
    assert [b.label for b in letta.agents.blocks.list(agent.id)] == ["human"]
    assert letta.agents.update(agent.id, name="renamed").name == "renamed"
    assert "sdk" in list(letta.tags.list())
    letta.agents.delete(agent.id)
    with pytest.raises(letta_client.NotFoundError):
        letta.agents.retrieve(agent.id)


def test_sdk_lists_every_agent_across_pages(letta: Letta) -> None:
    made = {letta.agents.create(name=f"page-{i}", tags=["paging"]).id for i in range(5)}
    seen = [a.id for a in letta.agents.list(tags=["paging"], limit=2)]
    assert sorted(seen) == sorted(made)


def test_sdk_shared_block_attach_and_agents_of_block(letta: Letta) -> None:
    block = letta.blocks.create(label="team", value="shared")
    a = letta.agents.create(name="a", block_ids=[block.id])
    b = letta.agents.create(name="b")
    letta.agents.blocks.attach(block.id, agent_id=b.id)
    holders = {x.id for x in letta.blocks.agents.list(block.id)}
    assert holders == {a.id, b.id}
    letta.agents.blocks.detach(block.id, agent_id=a.id)
    assert {x.id for x in letta.blocks.agents.list(block.id)} == {b.id}


def test_sdk_lists_models_with_required_fields(letta: Letta) -> None:
    models = letta.models.list()
    assert any(m.handle == "sim/agent" for m in models)
    for m in models:
        # Field names here are the SDK's: it renames model_* (pydantic's reserved prefix).
        assert {"context_window", "model", "api_model_endpoint_type", "name"} <= m.model_fields_set
