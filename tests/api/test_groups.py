"""Sleeptime groups through the app's test client: what enable_sleeptime makes on create
and on update, what a delete takes with it, and the group routes' shapes and errors (the
companion's runs are the DST's: tests/dst/test_dst_sleeptime.py)."""

from __future__ import annotations

from typing import Any

from quart.testing import QuartClient

MISSING_GROUP = "group-00000000-0000-4000-8000-000000000000"
BLOCKS = [{"label": "human", "value": "Name: Ada"}, {"label": "persona", "value": "Kind."}]


async def _json(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, await response.get_data()
    return await response.get_json()


async def _agent(client: QuartClient, **fields: Any) -> dict:
    body = {"name": "ada", "memory_blocks": BLOCKS, **fields}
    return await _json(await client.post("/v1/agents/", json=body))


async def test_create_with_sleeptime_makes_the_companion_and_the_group(
    client: QuartClient,
) -> None:
    agent = await _agent(client, enable_sleeptime=True)
    group = agent["multi_agent_group"]
    assert group == agent["managed_group"]
    assert group["manager_type"] == "sleeptime"
    assert group["manager_agent_id"] == agent["id"]
    assert group["sleeptime_agent_frequency"] == 5
    [companion_id] = group["agent_ids"]
    companion = await _json(await client.get(f"/v1/agents/{companion_id}"))
    assert companion["agent_type"] == "sleeptime_agent"
    assert companion["multi_agent_group"] is None  # it serves the group; it does not manage it
    shared = {b["id"] for b in agent["blocks"]}
    assert shared < {b["id"] for b in companion["blocks"]}  # attached, not copied
    assert {r["tool_name"] for r in companion["tool_rules"] if r["type"] == "exit_loop"} == {
        "memory_finish_edits"
    }
    assert await _json(await client.get(f"/v1/groups/{group['id']}")) == group
    assert [g["id"] for g in await _json(await client.get("/v1/groups/"))] == [group["id"]]
    assert await _json(await client.get("/v1/groups/count")) == 1
    assert "group_id" not in agent  # the record's link is not part of AgentState


async def test_an_agent_without_sleeptime_has_no_group(client: QuartClient) -> None:
    agent = await _agent(client)
    assert agent["multi_agent_group"] is None
    assert await _json(await client.get("/v1/groups/")) == []


async def test_update_to_sleeptime_makes_the_group_once(client: QuartClient) -> None:
    agent = await _agent(client)
    path = f"/v1/agents/{agent['id']}"
    first = await _json(await client.patch(path, json={"enable_sleeptime": True}))
    again = await _json(await client.patch(path, json={"enable_sleeptime": True}))
    assert first["multi_agent_group"] is not None
    assert again["multi_agent_group"]["id"] == first["multi_agent_group"]["id"]
    assert await _json(await client.get("/v1/groups/count")) == 1


async def test_deleting_the_primary_deletes_the_companion_and_the_group(
    client: QuartClient,
) -> None:
    agent = await _agent(client, enable_sleeptime=True)
    group = agent["multi_agent_group"]
    await _json(await client.delete(f"/v1/agents/{agent['id']}"))
    await _json(await client.get(f"/v1/agents/{group['agent_ids'][0]}"), 404)
    await _json(await client.get(f"/v1/groups/{group['id']}"), 404)
    # The shared blocks stay, as blocks do when an agent is deleted.
    for block in agent["blocks"]:
        await _json(await client.get(f"/v1/blocks/{block['id']}"))


async def test_deleting_the_companion_leaves_the_primary_without_sleeptime(
    client: QuartClient,
) -> None:
    agent = await _agent(client, enable_sleeptime=True)
    companion_id = agent["multi_agent_group"]["agent_ids"][0]
    await _json(await client.delete(f"/v1/agents/{companion_id}"))
    after = await _json(await client.get(f"/v1/agents/{agent['id']}"))
    assert after["multi_agent_group"] is None
    assert after["enable_sleeptime"] is None


async def test_patch_changes_the_frequency_and_refuses_a_bad_one(client: QuartClient) -> None:
    agent = await _agent(client, enable_sleeptime=True)
    path = f"/v1/groups/{agent['multi_agent_group']['id']}"
    config = {"manager_type": "sleeptime", "sleeptime_agent_frequency": 2}
    changed = await _json(await client.patch(path, json={"manager_config": config}))
    assert changed["sleeptime_agent_frequency"] == 2
    for bad in (0, -1, "2", True):
        config = {"manager_type": "sleeptime", "sleeptime_agent_frequency": bad}
        refused = await _json(await client.patch(path, json={"manager_config": config}), 422)
        assert refused["detail"]
    wrong = {"manager_config": {"manager_type": "round_robin"}}
    await _json(await client.patch(path, json=wrong), 422)
    assert (await _json(await client.get(path)))["sleeptime_agent_frequency"] == 2


async def test_group_routes_answer_404_and_422_for_unknown_and_malformed_ids(
    client: QuartClient,
) -> None:
    await _json(await client.get(f"/v1/groups/{MISSING_GROUP}"), 404)
    await _json(await client.patch(f"/v1/groups/{MISSING_GROUP}", json={}), 404)
    await _json(await client.get("/v1/groups/nope"), 422)


async def test_a_block_attached_to_the_primary_is_attached_to_its_companion(
    client: QuartClient,
) -> None:
    agent = await _agent(client, enable_sleeptime=True)
    companion_id = agent["multi_agent_group"]["agent_ids"][0]
    block = await _json(await client.post("/v1/blocks/", json={"label": "notes", "value": "-"}))
    await _json(
        await client.patch(f"/v1/agents/{agent['id']}/core-memory/blocks/attach/{block['id']}")
    )
    companion = await _json(await client.get(f"/v1/agents/{companion_id}"))
    assert block["id"] in {b["id"] for b in companion["blocks"]}


async def test_deleting_a_group_keeps_its_agents_and_ends_the_pairing(
    client: QuartClient,
) -> None:
    agent = await _agent(client, enable_sleeptime=True)
    group = agent["multi_agent_group"]
    await _json(await client.delete(f"/v1/groups/{group['id']}"))
    await _json(await client.get(f"/v1/groups/{group['id']}"), 404)
    after = await _json(await client.get(f"/v1/agents/{agent['id']}"))
    assert after["multi_agent_group"] is None
    await _json(await client.get(f"/v1/agents/{group['agent_ids'][0]}"))
    await _json(await client.delete(f"/v1/groups/{group['id']}"), 404)


async def test_creating_a_group_is_a_404_that_says_why(client: QuartClient) -> None:
    refused = await _json(await client.post("/v1/groups/", json={"agent_ids": []}), 404)
    assert "enable_sleeptime" in refused["detail"]


async def test_an_update_that_does_not_ask_for_sleeptime_makes_no_group(
    client: QuartClient,
) -> None:
    agent = await _agent(client, enable_sleeptime=True)
    await _json(await client.delete(f"/v1/groups/{agent['multi_agent_group']['id']}"))
    renamed = await _json(await client.patch(f"/v1/agents/{agent['id']}", json={"name": "bo"}))
    assert renamed["multi_agent_group"] is None
    again = await _json(
        await client.patch(f"/v1/agents/{agent['id']}", json={"enable_sleeptime": True})
    )
    assert again["multi_agent_group"] is not None
