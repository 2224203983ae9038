"""/v1/archives/ and an agent's archives through the app's test client, and the insert rule."""

from __future__ import annotations

from typing import Any

from quart.testing import QuartClient

from kelpie_trio.models.archives import insert_owner

UNKNOWN_ARCHIVE = "archive-00000000-0000-4000-8000-000000000000"


async def ok(response: Any) -> Any:
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


async def new_agent(client: QuartClient, name: str) -> str:
    return (await ok(await client.post("/v1/agents/", json={"name": name})))["id"]


async def new_archive(client: QuartClient, name: str, **fields: Any) -> dict:
    return await ok(await client.post("/v1/archives/", json={"name": name, **fields}))


async def attach(client: QuartClient, agent_id: str, archive_id: str, how: str = "attach") -> None:
    await ok(await client.patch(f"/v1/agents/{agent_id}/archives/{how}/{archive_id}"))


def test_inserts_go_to_the_agents_own_archive_once_it_has_passages() -> None:
    assert insert_owner("agent-1", False, []) == "agent-1"
    assert insert_owner("agent-1", False, ["archive-2", "archive-3"]) == "archive-2"
    assert insert_owner("agent-1", True, ["archive-2"]) == "agent-1"


async def test_an_archive_has_letta_fields(client: QuartClient) -> None:
    archive = await new_archive(client, "notes", description="mine")
    assert archive["id"].startswith("archive-")
    fields = {"name", "description", "organization_id", "vector_db_provider",
              "embedding_config", "metadata", "created_at", "updated_at"}  # fmt: skip
    assert archive.keys() >= fields
    assert (archive["name"], archive["description"], archive["vector_db_provider"]) == (
        "notes",
        "mine",
        "native",
    )
    assert archive["organization_id"].startswith("org-")
    assert await ok(await client.get(f"/v1/archives/{archive['id']}")) == archive


async def test_archives_list_newest_first_by_name_and_by_agent(client: QuartClient) -> None:
    first = await new_archive(client, "a")
    second = await new_archive(client, "b")
    third = await new_archive(client, "a")
    listed = await ok(await client.get("/v1/archives/"))
    assert [a["id"] for a in listed] == [third["id"], second["id"], first["id"]]
    named = await ok(await client.get("/v1/archives?name=a&order=asc"))
    assert [a["id"] for a in named] == [first["id"], third["id"]]
    page = await ok(await client.get(f"/v1/archives/?limit=1&after={third['id']}"))
    assert [a["id"] for a in page] == [second["id"]]
    agent = await new_agent(client, "holder")
    await attach(client, agent, second["id"])
    await attach(client, agent, second["id"])  # twice is once
    mine = await ok(await client.get(f"/v1/archives/?agent_id={agent}"))
    assert [a["id"] for a in mine] == [second["id"]]
    held = await ok(await client.get(f"/v1/archives/{second['id']}/agents"))
    assert [a["id"] for a in held] == [agent]


async def test_update_changes_name_and_description_only(client: QuartClient) -> None:
    archive = await new_archive(client, "old", description="d")
    response = await client.patch(
        f"/v1/archives/{archive['id']}", json={"name": "new", "vector_db_provider": "tpuf"}
    )
    changed = await ok(response)
    assert (changed["name"], changed["description"], changed["vector_db_provider"]) == (
        "new", "d", "native"
    )  # fmt: skip


async def test_a_batch_is_stored_whole_or_not_at_all(client: QuartClient) -> None:
    archive = await new_archive(client, "batch")
    bad = {"passages": [{"text": "fine"}, {"text": " "}]}
    response = await client.post(f"/v1/archives/{archive['id']}/passages/batch", json=bad)
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["loc"] == ["body", "passages", 1, "text"]
    found = await ok(await client.post("/v1/passages/search", json={"archive_id": archive["id"]}))
    assert found == []
    good = {"passages": [{"text": "one", "created_at": "2025-01-02T03:04:05Z",
                          "metadata": {"k": 1}, "tags": ["t", "t"]}]}  # fmt: skip
    [made] = await ok(await client.post(f"/v1/archives/{archive['id']}/passages/batch", json=good))
    assert made["created_at"].startswith("2025-01-02T03:04:05")
    assert (made["metadata"], made["tags"], made["archive_id"]) == ({"k": 1}, ["t"], archive["id"])


async def test_passage_search_filters_as_letta(client: QuartClient) -> None:
    archive = await new_archive(client, "filters")
    path = f"/v1/archives/{archive['id']}/passages"
    body = {"text": "green tea", "tags": ["a"], "created_at": "2024-05-01T00:00:00Z"}
    old = await ok(await client.post(path, json=body))
    new = await ok(await client.post(path, json={"text": "black tea", "tags": ["a", "b"]}))

    async def search(**body: Any) -> list[str]:
        found = await ok(await client.post("/v1/passages/search", json=body))
        return [r["passage"]["id"] for r in found]

    assert set(await search(query="tea")) == {old["id"], new["id"]}
    assert await search(query="tea", tags=["a", "b"], tag_match_mode="all") == [new["id"]]
    assert await search(query="tea", end_date="2024-12-31T00:00:00Z") == [old["id"]]
    assert await search(query="tea", start_date="2025-01-01") == [new["id"]]
    assert await search(query="tea", limit=1) in ([old["id"]], [new["id"]])
    for body in ({"limit": 0}, {"limit": 101}, {"start_date": "soon"}, {"tags": "a"},
                 {"tag_match_mode": "some"}):  # fmt: skip
        response = await client.post("/v1/passages/search", json=body)
        assert response.status_code == 422, body
    response = await client.post("/v1/passages/search", json={"archive_id": UNKNOWN_ARCHIVE})
    assert response.status_code == 404


async def test_deleting_an_agent_drops_its_attachments_not_the_archive(
    client: QuartClient,
) -> None:
    archive = await new_archive(client, "kept")
    agent = await new_agent(client, "leaving")
    await attach(client, agent, archive["id"])
    [passage] = await ok(
        await client.post(f"/v1/agents/{agent}/archival-memory", json={"text": "in the archive"})
    )
    assert passage["archive_id"] == archive["id"]
    assert (await client.delete(f"/v1/agents/{agent}")).status_code == 200
    assert await ok(await client.get(f"/v1/archives/{archive['id']}/agents")) == []
    found = await ok(await client.post("/v1/passages/search", json={"archive_id": archive["id"]}))
    assert [r["passage"]["id"] for r in found] == [passage["id"]]


async def test_deleting_an_archive_detaches_it_and_deletes_its_passages(
    client: QuartClient,
) -> None:
    archive = await new_archive(client, "gone")
    agent = await new_agent(client, "staying")
    await attach(client, agent, archive["id"])
    await ok(await client.post(f"/v1/archives/{archive['id']}/passages", json={"text": "x y"}))
    assert (await client.delete(f"/v1/archives/{archive['id']}")).status_code == 204
    assert (await client.get(f"/v1/archives/{archive['id']}")).status_code == 404
    assert await ok(await client.get(f"/v1/agents/{agent}/archival-memory")) == []
    assert await ok(await client.get(f"/v1/archives/?agent_id={agent}")) == []
    response = await client.patch(f"/v1/agents/{agent}/archives/attach/{archive['id']}")
    assert response.status_code == 404
    # The agent's next insert starts its own archive.
    [mine] = await ok(
        await client.post(f"/v1/agents/{agent}/archival-memory", json={"text": "my own"})
    )
    assert mine["archive_id"] != archive["id"]


async def test_an_agent_deletes_a_passage_of_its_archive_but_not_of_another(
    client: QuartClient,
) -> None:
    archive = await new_archive(client, "shared")
    other = await new_archive(client, "other")
    agent = await new_agent(client, "deleter")
    await attach(client, agent, archive["id"])
    mine = await ok(await client.post(f"/v1/archives/{archive['id']}/passages", json={"text": "a"}))
    theirs = await ok(await client.post(f"/v1/archives/{other['id']}/passages", json={"text": "b"}))
    response = await client.delete(f"/v1/agents/{agent}/archival-memory/{theirs['id']}")
    assert response.status_code == 404
    response = await client.delete(f"/v1/agents/{agent}/archival-memory/{mine['id']}")
    assert response.status_code == 200
    response = await client.delete(f"/v1/archives/{archive['id']}/passages/{mine['id']}")
    assert response.status_code == 404
    response = await client.delete(f"/v1/archives/{archive['id']}/passages/{theirs['id']}")
    assert response.status_code == 404  # another archive's passage is not found here


async def test_an_agent_lists_its_own_and_its_archives_passages_in_order(
    client: QuartClient,
) -> None:
    agent = await new_agent(client, "lister")
    archive = await new_archive(client, "ordered")
    body = {"text": "one", "created_at": "2025-01-01T00:00:01Z"}
    own = await ok(await client.post(f"/v1/agents/{agent}/archival-memory", json=body))
    path = f"/v1/archives/{archive['id']}/passages"
    shared = [
        await ok(await client.post(path, json={"text": t, "created_at": f"2025-01-01T00:00:0{i}Z"}))
        for t, i in (("zero", 0), ("two", 2))
    ]
    await attach(client, agent, archive["id"])
    ids = [shared[0]["id"], own[0]["id"], shared[1]["id"]]
    listed = await ok(await client.get(f"/v1/agents/{agent}/archival-memory"))
    assert [p["id"] for p in listed] == ids
    newest = await ok(await client.get(f"/v1/agents/{agent}/archival-memory?ascending=false"))
    assert [p["id"] for p in newest] == ids[::-1]
    page = await ok(await client.get(f"/v1/agents/{agent}/archival-memory?limit=1&after={ids[0]}"))
    assert [p["id"] for p in page] == [ids[1]]
    # Detached: the archive's passages leave the listing.
    await attach(client, agent, archive["id"], "detach")
    listed = await ok(await client.get(f"/v1/agents/{agent}/archival-memory"))
    assert [p["id"] for p in listed] == [own[0]["id"]]


async def test_a_search_without_a_query_lists_oldest_first(client: QuartClient) -> None:
    archive = await new_archive(client, "plain")
    path = f"/v1/archives/{archive['id']}/passages"
    made = []
    for i, tag in ((3, "a"), (1, "b"), (2, "a")):
        body = {"text": f"note {i}", "tags": [tag], "created_at": f"2025-01-0{i}T00:00:00Z"}
        made.append(await ok(await client.post(path, json=body)))

    async def search(**body: Any) -> list[str]:
        found = await ok(await client.post("/v1/passages/search", json=body))
        assert all(r["score"] == 0 for r in found)
        return [r["passage"]["text"] for r in found]

    where = {"archive_id": archive["id"]}
    assert await search(**where) == ["note 1", "note 2", "note 3"]
    assert await search(**where, limit=2) == ["note 1", "note 2"]
    assert await search(**where, tags=["a"]) == ["note 2", "note 3"]
    assert await search(**where, start_date="2025-01-02", end_date="2025-01-02") == ["note 2"]
