"""The agent service's CRUD on every store backend, FoundationDB included (a real cluster
when KELPIE_FDB_CLUSTER_FILE names one, else the fake binding that fires its callbacks
from another thread): the same records, indexes and errors everywhere."""

from __future__ import annotations

import pytest

from kelpie_trio.env import RealEnv
from kelpie_trio.errors import NotFound
from kelpie_trio.service import AgentService, Page
from kelpie_trio.storage import Store


async def test_agent_crud_with_memory_and_tags(store: Store) -> None:
    service = AgentService(store, RealEnv())
    body = {
        "name": "ada",
        "tags": ["x", "y"],
        "memory_blocks": [{"label": "human", "value": "Name: Ada"}],
    }
    created = (await service.create_agent(body)).agent
    got = await service.get_agent(created.id)
    assert got.agent.name == "ada" and [b.value for b in got.blocks] == ["Name: Ada"]
    await service.update_agent(created.id, {"name": "ada2", "tags": ["y"]})
    listed = await service.list_agents(Page(limit=100), tags=["y"])
    assert [v.agent.name for v in listed if v.agent.id == created.id] == ["ada2"]
    block = await service.update_agent_block(created.id, "human", {"value": "Name: Ada L."})
    assert block.value == "Name: Ada L."
    await service.delete_agent(created.id)
    with pytest.raises(NotFound):
        await service.get_agent(created.id)
    with pytest.raises(NotFound):
        await service.agent_block(created.id, "human")
