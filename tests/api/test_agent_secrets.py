"""An agent's tool secrets (`secrets`, Letta's older `tool_exec_environment_variables`):
stored with it, shown masked on every read, replaced as a whole on update."""

from __future__ import annotations

from typing import Any

from quart.testing import QuartClient

from kelpie_trio.models.agents import SECRET_MASK


async def create(client: QuartClient, **fields: Any) -> dict:
    response = await client.post("/v1/agents/", json=fields)
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


def shown(agent: dict) -> list[tuple[str, str]]:
    assert agent["tool_exec_environment_variables"] == agent["secrets"]
    return [(s["key"], s["value"]) for s in agent["secrets"]]


async def stored(client: QuartClient, agent_id: str) -> dict[str, str]:
    service = client.app.config["KELPIE_SERVICE"]
    return (await service.get_agent(agent_id)).agent.secrets


async def test_secrets_are_stored_and_shown_masked(client: QuartClient) -> None:
    agent = await create(client, secrets={"TOKEN": "t0k3n", "REGION": "eu"})
    assert shown(agent) == [("REGION", SECRET_MASK), ("TOKEN", SECRET_MASK)]
    record = agent["secrets"][0]
    assert record["agent_id"] == agent["id"] and record["id"].startswith("agent-env-")
    again = await (await client.get(f"/v1/agents/{agent['id']}")).get_json()
    assert again["secrets"] == agent["secrets"]  # stable ids, same mask
    listed = await (await client.get("/v1/agents/")).get_json()
    assert "t0k3n" not in str(listed)
    assert await stored(client, agent["id"]) == {"TOKEN": "t0k3n", "REGION": "eu"}


async def test_the_older_name_is_accepted(client: QuartClient) -> None:
    agent = await create(client, tool_exec_environment_variables={"KEY": "v"})
    assert shown(agent) == [("KEY", SECRET_MASK)]
    assert await stored(client, agent["id"]) == {"KEY": "v"}


async def test_an_update_replaces_the_set_and_the_mask_keeps_a_value(client: QuartClient) -> None:
    agent = await create(client, secrets={"TOKEN": "t0k3n", "OLD": "x"})
    body = {"secrets": {"TOKEN": SECRET_MASK, "NEW": "n"}}
    updated = await (await client.patch(f"/v1/agents/{agent['id']}", json=body)).get_json()
    assert shown(updated) == [("NEW", SECRET_MASK), ("TOKEN", SECRET_MASK)]
    assert await stored(client, agent["id"]) == {"TOKEN": "t0k3n", "NEW": "n"}
    # An update that does not name them leaves them be.
    await client.patch(f"/v1/agents/{agent['id']}", json={"description": "d"})
    assert await stored(client, agent["id"]) == {"TOKEN": "t0k3n", "NEW": "n"}


async def test_a_bad_secret_is_a_422_and_changes_nothing(client: QuartClient) -> None:
    for secrets in ({"A=B": "x"}, {"OK": 5}, ["TOKEN"]):
        response = await client.post("/v1/agents/", json={"secrets": secrets})
        assert response.status_code == 422, secrets
        assert (await response.get_json())["detail"][0]["loc"][:2] == ["body", "secrets"]
    assert await (await client.get("/v1/agents/")).get_json() == []
    agent = await create(client, secrets={"TOKEN": "t0k3n"})
    response = await client.patch(f"/v1/agents/{agent['id']}", json={"secrets": {"A=B": "x"}})
    assert response.status_code == 422
    assert await stored(client, agent["id"]) == {"TOKEN": "t0k3n"}
