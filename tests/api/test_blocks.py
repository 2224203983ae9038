"""/v1/blocks/ through the app's test client: shapes, errors, pagination."""

from __future__ import annotations

from quart.testing import QuartClient


async def create(client: QuartClient, **fields) -> dict:
    response = await client.post("/v1/blocks/", json={"label": "human", "value": "v", **fields})
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


async def test_create_returns_the_block_with_its_id_and_defaults(client: QuartClient) -> None:
    block = await create(client, value="likes tea", description="the user")
    assert block["id"].startswith("block-")
    assert block["value"] == "likes tea" and block["label"] == "human"
    assert block["limit"] == 100000 and block["read_only"] is False
    assert block["metadata"] == {} and block["tags"] == []
    assert "created_at" not in block
    got = await (await client.get(f"/v1/blocks/{block['id']}")).get_json()
    assert got == block


async def test_both_collection_paths_are_served(client: QuartClient) -> None:
    await create(client)
    for path in ("/v1/blocks", "/v1/blocks/"):
        response = await client.get(path)
        assert response.status_code == 200 and len(await response.get_json()) == 1


async def test_patch_changes_only_the_fields_given(client: QuartClient) -> None:
    block = await create(client, value="old", description="keep me")
    response = await client.patch(f"/v1/blocks/{block['id']}", json={"value": "new"})
    updated = await response.get_json()
    assert updated["value"] == "new" and updated["description"] == "keep me"
    assert updated["id"] == block["id"]


async def test_value_over_the_limit_is_a_422_and_changes_nothing(client: QuartClient) -> None:
    block = await create(client, value="short", limit=10)
    response = await client.patch(f"/v1/blocks/{block['id']}", json={"value": "x" * 11})
    assert response.status_code == 422
    detail = (await response.get_json())["detail"]
    assert detail[0]["loc"] == ["body", "value"] and "limit of 10" in detail[0]["msg"]
    assert (await (await client.get(f"/v1/blocks/{block['id']}")).get_json())["value"] == "short"
    too_big = await client.post("/v1/blocks/", json={"label": "l", "value": "xyz", "limit": 2})
    assert too_big.status_code == 422
    assert await (await client.get("/v1/blocks/")).get_json() == [block]


async def test_missing_and_mistyped_fields_are_named_in_the_422(client: QuartClient) -> None:
    response = await client.post("/v1/blocks/", json={"value": 5})
    assert response.status_code == 422
    detail = (await response.get_json())["detail"]
    assert {tuple(d["loc"]) for d in detail} == {("body", "value"), ("body", "label")}
    assert await (await client.get("/v1/blocks/")).get_json() == []


async def test_malformed_json_is_a_422_not_a_500(client: QuartClient) -> None:
    response = await client.post(
        "/v1/blocks/", data=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["type"] == "json_invalid"


async def test_unknown_fields_are_ignored_as_letta_does(client: QuartClient) -> None:
    block = await create(client, surprise="ignored")
    assert "surprise" not in block


async def test_unknown_id_is_404_and_malformed_id_is_422(client: QuartClient) -> None:
    unknown = "block-00000000-0000-4000-8000-000000000000"
    response = await client.get(f"/v1/blocks/{unknown}")
    assert response.status_code == 404
    assert (await response.get_json())["detail"] == f"Block with id '{unknown}' not found"
    assert (await client.get("/v1/blocks/nonsense")).status_code == 422
    assert (await client.delete(f"/v1/blocks/{unknown}")).status_code == 404


async def test_delete_removes_the_block(client: QuartClient) -> None:
    block = await create(client)
    assert (await client.delete(f"/v1/blocks/{block['id']}")).status_code == 200
    assert (await client.get(f"/v1/blocks/{block['id']}")).status_code == 404
    assert await (await client.get("/v1/blocks/")).get_json() == []


async def test_pagination_by_after_and_before_walks_every_block_once(client: QuartClient) -> None:
    made = [(await create(client, value=str(i)))["id"] for i in range(7)]
    seen, after = [], None
    while True:
        query = "?limit=3" + (f"&after={after}" if after else "")
        page = await (await client.get("/v1/blocks/" + query)).get_json()
        if not page:
            break
        seen += [b["id"] for b in page]
        after = page[-1]["id"]
    assert seen == made
    desc = await (await client.get("/v1/blocks/?order=desc&limit=2")).get_json()
    assert [b["id"] for b in desc] == made[::-1][:2]
    before = await (await client.get(f"/v1/blocks/?before={made[3]}")).get_json()
    assert [b["id"] for b in before] == made[:3]


async def test_label_filter(client: QuartClient) -> None:
    persona = await create(client, label="persona")
    await create(client, label="human")
    found = await (await client.get("/v1/blocks/?label=persona")).get_json()
    assert found == [persona]


async def test_bad_paging_arguments_are_422(client: QuartClient) -> None:
    assert (await client.get("/v1/blocks/?limit=zero")).status_code == 422
    assert (await client.get("/v1/blocks/?order=sideways")).status_code == 422


async def test_unknown_route_is_a_json_404(client: QuartClient) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert await response.get_json() == {"detail": "Not Found"}


async def test_a_body_over_the_size_limit_is_a_413_and_changes_nothing(
    client: QuartClient,
) -> None:
    from kelpie_trio.api.app import MAX_BODY_BYTES

    huge = b'{"label": "l", "value": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = await client.post(
        "/v1/blocks/", data=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "detail" in await response.get_json()
    assert await (await client.get("/v1/blocks/")).get_json() == []


async def test_a_string_where_a_list_belongs_is_a_422(client: QuartClient) -> None:
    response = await client.post("/v1/blocks/", json={"label": "l", "value": "v", "tags": "abc"})
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["loc"] == ["body", "tags"]


async def test_a_block_value_beyond_the_stores_value_limit_is_stored_in_chunks(
    client: QuartClient,
) -> None:
    value = "é" * 100_000  # 200 kB of UTF-8: twice FDB's value limit, within the block's
    block = await create(client, value=value)
    got = await (await client.get(f"/v1/blocks/{block['id']}")).get_json()
    assert got["value"] == value
