"""Identities against a real server: CRUD and upsert over HTTP (letta-client 1.12.1 has no
client.identities), attach/detach through client.agents.identities, and the agent listing's
identity filters."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import letta_client
import pytest
from letta_client import Letta


@pytest.fixture
def http(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url) as client:
        yield client


def _create(http: httpx.Client, key: str, **extra: object) -> dict:
    answer = http.post(
        "/v1/identities/",
        json={"identifier_key": key, "name": key.title(), "identity_type": "user", **extra},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_identity_is_created_read_listed_changed_and_deleted(http: httpx.Client) -> None:
    made = _create(http, "crud-ada", properties=[{"key": "plan", "value": "pro", "type": "string"}])
    assert made["id"].startswith("identity-") and made["agent_ids"] == []
    assert http.get(f"/v1/identities/{made['id']}").json() == made
    listed = http.get("/v1/identities/", params={"identifier_key": "crud-ada"}).json()
    assert [i["id"] for i in listed] == [made["id"]]
    changed = http.patch(
        f"/v1/identities/{made['id']}",
        json={"name": "Ada L", "properties": [{"key": "seats", "value": 3, "type": "number"}]},
    ).json()
    assert changed["name"] == "Ada L"
    assert {p["key"] for p in changed["properties"]} == {"plan", "seats"}  # merged by key
    replaced = http.put(
        f"/v1/identities/{made['id']}/properties",
        json=[{"key": "tier", "value": True, "type": "boolean"}],
    ).json()
    assert [p["key"] for p in replaced["properties"]] == ["tier"]
    assert http.delete(f"/v1/identities/{made['id']}").status_code == 200
    assert http.get(f"/v1/identities/{made['id']}").status_code == 404


def test_a_second_identity_with_one_key_is_a_409_and_put_replaces_it(http: httpx.Client) -> None:
    first = _create(http, "upsert-bob")
    again = http.post(
        "/v1/identities/",
        json={"identifier_key": "upsert-bob", "name": "Bob", "identity_type": "user"},
    )
    assert again.status_code == 409
    upserted = http.put(
        "/v1/identities/",
        json={"identifier_key": "upsert-bob", "name": "Robert", "identity_type": "org"},
    ).json()
    assert upserted["id"] == first["id"] and upserted["name"] == "Robert"
    assert upserted["identity_type"] == "org"


def test_bad_identity_input_is_a_4xx_in_lettas_shape(http: httpx.Client) -> None:
    bad_type = http.post(
        "/v1/identities/", json={"identifier_key": "k", "name": "n", "identity_type": "boss"}
    )
    assert (
        bad_type.status_code == 422 and bad_type.json()["detail"][0]["loc"][-1] == "identity_type"
    )
    wrong_value = http.post(
        "/v1/identities/",
        json={"identifier_key": "k2", "name": "n", "identity_type": "user",
              "properties": [{"key": "n", "value": "three", "type": "number"}]},
    )  # fmt: skip
    assert wrong_value.status_code == 422
    missing_agent = http.post(
        "/v1/identities/",
        json={"identifier_key": "k3", "name": "n", "identity_type": "user",
              "agent_ids": ["agent-00000000-0000-4000-8000-000000000000"]},
    )  # fmt: skip
    assert missing_agent.status_code == 404
    assert http.get("/v1/identities/not-an-id").status_code == 422
    assert http.get("/v1/identities/", params={"identifier_key": "k"}).json() == []  # none stored


def test_identities_attach_to_agents_and_filter_the_agent_list(
    letta: Letta, http: httpx.Client
) -> None:
    ada, bob = (letta.agents.create(name=n) for n in ("ident-ada", "ident-bob"))
    team = _create(http, "team-a", identity_type="org")
    letta.agents.identities.attach(team["id"], agent_id=ada.id)
    letta.agents.identities.attach(team["id"], agent_id=ada.id)  # twice: no change
    assert http.get(f"/v1/identities/{team['id']}").json()["agent_ids"] == [ada.id]
    assert [a.id for a in letta.agents.list(identity_id=team["id"])] == [ada.id]
    _create(http, "team-b", identity_type="org", agent_ids=[bob.id])
    assert [a.id for a in letta.agents.list(identifier_keys=["team-a"])] == [ada.id]
    both = letta.agents.list(identifier_keys=["team-a", "team-b"])
    assert sorted(a.id for a in both) == sorted([ada.id, bob.id])
    letta.agents.identities.detach(team["id"], agent_id=ada.id)
    assert list(letta.agents.list(identity_id=team["id"])) == []
    with pytest.raises(letta_client.NotFoundError):
        letta.agents.identities.attach(
            "identity-00000000-0000-4000-8000-000000000000", agent_id=bob.id
        )
    letta.agents.identities.attach(team["id"], agent_id=bob.id)
    letta.agents.delete(bob.id)  # a deleted agent leaves its identities
    assert http.get(f"/v1/identities/{team['id']}").json()["agent_ids"] == []


def test_identity_ids_on_an_agent_are_taken_shown_and_replaced(
    letta: Letta, http: httpx.Client
) -> None:
    team, user = _create(http, "ids-team", identity_type="org"), _create(http, "ids-user")
    agent = letta.agents.create(name="ids-agent", identity_ids=[team["id"]])
    assert agent.identity_ids == [team["id"]]
    assert [(i.id, i.identifier_key, i.agent_ids) for i in agent.identities or []] == [
        (team["id"], "ids-team", [agent.id])
    ]  # Letta's non-deprecated field: the identities themselves
    assert letta.agents.retrieve(agent.id).identity_ids == [team["id"]]
    assert http.get(f"/v1/identities/{team['id']}").json()["agent_ids"] == [agent.id]
    letta.agents.identities.attach(user["id"], agent_id=agent.id)
    assert sorted(letta.agents.retrieve(agent.id).identity_ids) == sorted([team["id"], user["id"]])
    # An update's identity_ids replace the agent's identities, as Letta's do.
    updated = letta.agents.update(agent.id, identity_ids=[user["id"]])
    assert updated.identity_ids == [user["id"]]
    assert http.get(f"/v1/identities/{team['id']}").json()["agent_ids"] == []
    listed = [a for a in letta.agents.list(name="ids-agent")]
    assert [a.identity_ids for a in listed] == [[user["id"]]]
    assert letta.agents.update(agent.id, name="ids-agent").identity_ids == [user["id"]]
    http.delete(f"/v1/identities/{user['id']}").raise_for_status()
    assert letta.agents.retrieve(agent.id).identity_ids == []


def test_an_unknown_identity_id_on_an_agent_is_a_409_that_changes_nothing(
    letta: Letta, http: httpx.Client
) -> None:
    known = _create(http, "unknown-ids-known")
    missing = "identity-00000000-0000-4000-8000-000000000000"
    with pytest.raises(letta_client.ConflictError):
        letta.agents.create(name="unknown-ids", identity_ids=[known["id"], missing])
    assert list(letta.agents.list(name="unknown-ids")) == []  # nothing created
    assert http.get(f"/v1/identities/{known['id']}").json()["agent_ids"] == []
    agent = letta.agents.create(name="unknown-ids-2", identity_ids=[known["id"]])
    with pytest.raises(letta_client.ConflictError):
        letta.agents.update(agent.id, identity_ids=[missing])
    assert letta.agents.retrieve(agent.id).identity_ids == [known["id"]]
    bad = http.post("/v1/agents/", json={"name": "x", "identity_ids": "identity-1"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "identity_ids"]


def test_deleting_an_agent_or_block_removes_it_from_its_identities(
    letta: Letta, http: httpx.Client
) -> None:
    block = letta.blocks.create(label="team-notes", value="v")
    agent = letta.agents.create(name="leaving-agent")
    holder = _create(http, "leaving-holder", agent_ids=[agent.id], block_ids=[block.id])
    other = _create(http, "leaving-other", agent_ids=[agent.id])
    letta.agents.delete(agent.id)
    letta.blocks.delete(block.id)
    for identity in (holder, other):
        stored = http.get(f"/v1/identities/{identity['id']}").json()
        assert stored["agent_ids"] == [] and stored["block_ids"] == []
