"""/v1/agents/ through the app's test client: AgentState shape, memory, filters, errors."""

from __future__ import annotations

import pytest
import trio
from quart.testing import QuartClient

from kelpie_trio.api.app import create_app
from kelpie_trio.llm.catalog import CatalogConfig, ModelCatalog
from kelpie_trio.storage import MemoryStore

REQUIRED = {"id", "agent_type", "blocks", "llm_config", "memory", "name", "sources", "system",
            "tags", "tools"}  # fmt: skip


async def create(client: QuartClient, **fields) -> dict:
    response = await client.post("/v1/agents/", json=fields)
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


async def test_create_returns_a_full_agent_state(client: QuartClient) -> None:
    agent = await create(
        client,
        name="ada",
        memory_blocks=[
            {"label": "human", "value": "Name: Ada"},
            {"label": "persona", "value": "kind"},
        ],
        tags=["a", "b"],
        metadata={"team": "x"},
    )  # fmt: skip
    assert agent.keys() >= REQUIRED
    assert agent["id"].startswith("agent-") and agent["name"] == "ada"
    assert [b["label"] for b in agent["blocks"]] == ["human", "persona"]
    assert agent["memory"]["blocks"] == agent["blocks"]
    assert agent["tags"] == ["a", "b"] and agent["metadata"] == {"team": "x"}
    assert agent["model"] == "sim/agent" and agent["llm_config"]["handle"] == "sim/agent"
    assert agent["system"]  # a default system prompt
    got = await (await client.get(f"/v1/agents/{agent['id']}")).get_json()
    assert got == agent


async def test_unknown_model_is_a_422_naming_the_field(client: QuartClient) -> None:
    response = await client.post("/v1/agents/", json={"model": "nope/none"})
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["loc"] == ["body", "model"]
    assert await (await client.get("/v1/agents/")).get_json() == []


async def test_a_shared_block_is_edited_once_and_seen_by_all(client: QuartClient) -> None:
    shared = await (
        await client.post("/v1/blocks/", json={"label": "team", "value": "v1"})
    ).get_json()
    a = await create(client, block_ids=[shared["id"]])
    b = await create(client, block_ids=[shared["id"]])
    await client.patch(f"/v1/agents/{a['id']}/core-memory/blocks/team", json={"value": "v2"})
    seen = await (await client.get(f"/v1/agents/{b['id']}/core-memory/blocks/team")).get_json()
    assert seen["value"] == "v2"
    holders = await (await client.get(f"/v1/blocks/{shared['id']}/agents")).get_json()
    assert sorted(x["id"] for x in holders) == sorted([a["id"], b["id"]])


async def test_attach_and_detach_a_block(client: QuartClient) -> None:
    agent = await create(client)
    block = await (
        await client.post("/v1/blocks/", json={"label": "notes", "value": ""})
    ).get_json()
    attached = await (
        await client.patch(f"/v1/agents/{agent['id']}/core-memory/blocks/attach/{block['id']}")
    ).get_json()
    assert [b["id"] for b in attached["blocks"]] == [block["id"]]
    detached = await (
        await client.patch(f"/v1/agents/{agent['id']}/core-memory/blocks/detach/{block['id']}")
    ).get_json()
    assert detached["blocks"] == []
    assert (await client.get(f"/v1/blocks/{block['id']}")).status_code == 200  # block kept


async def test_two_blocks_with_one_label_conflict(client: QuartClient) -> None:
    agent = await create(client, memory_blocks=[{"label": "human", "value": "x"}])
    other = await (
        await client.post("/v1/blocks/", json={"label": "human", "value": "y"})
    ).get_json()
    response = await client.patch(
        f"/v1/agents/{agent['id']}/core-memory/blocks/attach/{other['id']}"
    )
    assert response.status_code == 409
    same = await client.post(
        "/v1/agents/",
        json={"memory_blocks": [{"label": "h", "value": "1"}, {"label": "h", "value": "2"}]},
    )
    assert same.status_code == 409
    assert len(await (await client.get("/v1/blocks/")).get_json()) == 2  # nothing half-made


async def test_deleting_a_block_detaches_it_from_its_agents(client: QuartClient) -> None:
    agent = await create(client, memory_blocks=[{"label": "human", "value": "x"}])
    block_id = agent["blocks"][0]["id"]
    assert (await client.delete(f"/v1/blocks/{block_id}")).status_code == 200
    after = await (await client.get(f"/v1/agents/{agent['id']}")).get_json()
    assert after["blocks"] == []


async def test_patch_renames_retags_and_keeps_the_rest(client: QuartClient) -> None:
    agent = await create(client, name="old", tags=["x"], description="keep")
    response = await client.patch(f"/v1/agents/{agent['id']}", json={"name": "new", "tags": ["y"]})
    updated = await response.get_json()
    assert (updated["name"], updated["tags"], updated["description"]) == ("new", ["y"], "keep")
    assert await (await client.get("/v1/tags/")).get_json() == ["y"]


async def test_list_filters_by_name_tags_and_query_text(client: QuartClient) -> None:
    a = await create(client, name="alpha", tags=["red", "big"])
    b = await create(client, name="beta", tags=["red"])
    await create(client, name="gamma", tags=["blue"])

    async def ids(query: str) -> list[str]:
        return [x["id"] for x in await (await client.get("/v1/agents/" + query)).get_json()]

    assert await ids("?name=beta") == [b["id"]]
    assert await ids("?tags=red") == [a["id"], b["id"]]
    assert await ids("?tags=red&tags=big&match_all_tags=true") == [a["id"]]
    assert await ids("?query_text=ALP") == [a["id"]]


async def test_pagination_walks_every_agent_once(client: QuartClient) -> None:
    made = [(await create(client, name=f"n{i}"))["id"] for i in range(5)]
    seen, after = [], None
    while True:
        page = await (
            await client.get("/v1/agents/?limit=2" + (f"&after={after}" if after else ""))
        ).get_json()
        if not page:
            break
        seen += [a["id"] for a in page]
        after = page[-1]["id"]
    assert seen == made


async def test_delete_agent_and_unknown_ids(client: QuartClient) -> None:
    agent = await create(client, tags=["t"])
    assert (await client.delete(f"/v1/agents/{agent['id']}")).status_code == 200
    assert (await client.get(f"/v1/agents/{agent['id']}")).status_code == 404
    assert await (await client.get("/v1/tags/")).get_json() == []
    assert (await client.get("/v1/agents/agent-nope")).status_code == 422


async def test_models_lists_the_simulated_model_labeled(client: QuartClient) -> None:
    models = await (await client.get("/v1/models/")).get_json()
    sim = next(m for m in models if m["handle"] == "sim/agent")
    assert "simulated" in sim["provider_name"]
    embeddings = await (await client.get("/v1/models/embedding")).get_json()
    assert any(e["handle"] == "sim/embedding" for e in embeddings)


@pytest.fixture
async def openai_client(nursery: trio.Nursery):
    store = MemoryStore()
    await nursery.start(store.run)
    catalog = ModelCatalog.from_config(CatalogConfig(openai_api_key="sk-test"))
    async with create_app(store, catalog=catalog).test_app() as test_app:
        yield test_app.test_client()


async def test_model_settings_match_letta_for_gpt_4o_mini(openai_client: QuartClient) -> None:
    agent = await create(
        openai_client, model="openai/gpt-4o-mini", embedding="openai/text-embedding-3-small"
    )
    assert agent["model_settings"] == {
        "max_output_tokens": 16384,
        "parallel_tool_calls": True,
        "strict": False,
        "provider_type": "openai",
        "temperature": 1.0,
        "reasoning": {"reasoning_effort": "minimal"},
        "response_format": None,
    }
    assert agent["embedding_config"]["embedding_model"] == "text-embedding-3-small"
