"""Sizes the store cannot hold, and a full disk, seen from the API.

A client's request that is too large for the store is the client's mistake: a 4xx
naming the field and the limit, refused before anything is written, never a 503
"retry shortly". A full disk is answered at once with a 507 that says so.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from quart.testing import QuartClient

from kelpie_trio.api.app import create_app
from kelpie_trio.service.limits import MAX_BLOCK_CHARS, MAX_KEY_PART_BYTES, MAX_RECORD_BYTES
from kelpie_trio.storage.limits import MAX_KEY_BYTES
from kelpie_trio.storage.sqlite import SqliteStore
from tests.storage.test_sqlite_full import CappedStore

LONG = "x" * (MAX_KEY_BYTES + 1)  # past the store's own key limit, not only our budget
WIDE = "\N{GRINNING FACE}"  # four bytes of UTF-8


async def nothing_stored(client: QuartClient) -> None:
    assert await (await client.get("/v1/agents/")).get_json() == []
    assert await (await client.get("/v1/blocks/")).get_json() == []


def refused_for_size(response, status: int) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status
    assert "Retry-After" not in response.headers  # the same request fails the same way


async def test_a_tag_over_the_key_budget_is_a_422_naming_it(client: QuartClient) -> None:
    response = await client.post("/v1/agents/", json={"tags": ["ok", LONG]})
    refused_for_size(response, 422)
    [field] = (await response.get_json())["detail"]
    assert field["loc"] == ["body", "tags", 1]
    assert f"{MAX_KEY_PART_BYTES:,} bytes" in field["msg"]
    assert field["type"] == "string_too_long"
    await nothing_stored(client)


async def test_a_tag_over_the_key_budget_in_an_update_changes_nothing(
    client: QuartClient,
) -> None:
    agent = await (await client.post("/v1/agents/", json={"tags": ["a"]})).get_json()
    response = await client.patch(f"/v1/agents/{agent['id']}", json={"tags": ["b", LONG]})
    refused_for_size(response, 422)
    assert (await response.get_json())["detail"][0]["loc"] == ["body", "tags", 1]
    kept = await (await client.get(f"/v1/agents/{agent['id']}")).get_json()
    assert kept["tags"] == ["a"]


async def test_a_tool_name_over_the_key_budget_is_a_422(client: QuartClient) -> None:
    name = "f" * (MAX_KEY_BYTES + 1)
    source = f"def {name}(x: int) -> int:\n"
    source += '    """Echo.\n\n    Args:\n        x: a number\n    """\n'
    response = await client.post("/v1/tools/", json={"source_code": source})
    refused_for_size(response, 422)
    assert (await response.get_json())["detail"][0]["loc"] == ["body", "name"]
    listed = await (await client.get("/v1/tools/?limit=1000")).get_json()
    assert all(t["name"] != name for t in listed)


async def test_an_agent_with_12_mb_of_metadata_is_a_413_naming_it(client: QuartClient) -> None:
    metadata = {f"k{i}": "v" * 100_000 for i in range(120)}  # ~12 MB, under the body limit
    response = await client.post("/v1/agents/", json={"name": "big", "metadata": metadata})
    refused_for_size(response, 413)
    detail = (await response.get_json())["detail"]
    assert detail.startswith("body.metadata:") and f"{MAX_RECORD_BYTES:,} bytes" in detail
    await nothing_stored(client)


async def test_a_block_limit_past_what_a_block_can_store_is_a_422(client: QuartClient) -> None:
    body = {"label": "huge", "value": "v", "limit": MAX_BLOCK_CHARS + 1}
    response = await client.post("/v1/blocks/", json=body)
    refused_for_size(response, 422)
    [field] = (await response.get_json())["detail"]
    assert field["loc"] == ["body", "limit"] and f"{MAX_BLOCK_CHARS:,}" in field["msg"]
    await nothing_stored(client)


async def test_a_full_block_of_four_byte_characters_still_stores(client: QuartClient) -> None:
    value = WIDE * MAX_BLOCK_CHARS
    body = {"label": "wide", "value": value, "limit": MAX_BLOCK_CHARS}
    response = await client.post("/v1/blocks/", json=body)
    assert response.status_code == 200
    stored = await (await client.get(f"/v1/blocks/{(await response.get_json())['id']}")).get_json()
    assert stored["value"] == value


async def test_a_block_too_large_to_store_is_a_413(client: QuartClient) -> None:
    metadata = {"notes": "n" * MAX_RECORD_BYTES}
    response = await client.post(
        "/v1/blocks/", json={"label": "b", "value": "", "metadata": metadata}
    )
    refused_for_size(response, 413)
    assert (await response.get_json())["detail"].startswith("body.metadata:")
    await nothing_stored(client)


async def test_records_that_fit_alone_but_not_together_are_a_413(client: QuartClient) -> None:
    # Defence in depth: each block fits its record, all of them together are over the
    # store's 10 MB transaction. The store's TransactionTooLarge is the request's size.
    value = "v" * MAX_BLOCK_CHARS
    blocks = [{"label": f"b{i}", "value": value, "limit": MAX_BLOCK_CHARS} for i in range(11)]
    response = await client.post("/v1/agents/", json={"memory_blocks": blocks})
    refused_for_size(response, 413)
    assert "limit of 10000000 bytes" in (await response.get_json())["detail"]
    await nothing_stored(client)


@pytest.fixture
async def full_disk_client(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[QuartClient]:
    """The API over a SQLite file that may grow only a little more than it has."""
    db = tmp_path / "kelpie.db"
    store = SqliteStore(db)
    await nursery.start(store.run)
    await store.aclose()
    capped = CappedStore(db)
    capped.pages = os.stat(db).st_size // 4096 + 60
    await nursery.start(capped.run)
    async with create_app(capped).test_app() as test_app:
        yield test_app.test_client()
    await capped.aclose()


async def test_a_full_disk_is_a_prompt_507_and_the_refused_write_is_not_stored(
    full_disk_client: QuartClient,
) -> None:
    client = full_disk_client
    made = []
    for i in range(100):
        started = trio.current_time()
        body = {"label": f"b{i}", "value": "v" * 9_000, "limit": 10_000}
        response = await client.post("/v1/blocks/", json=body)
        if response.status_code != 200:
            break
        made.append((await response.get_json())["id"])
    else:
        raise AssertionError("the disk never filled up")
    assert trio.current_time() - started < 1.0  # at once, not after a minute of retries
    assert response.status_code == 507
    assert "storage is full" in (await response.get_json())["detail"]
    assert response.headers["x-should-retry"] == "false"
    listed = await (await client.get("/v1/blocks/?limit=1000")).get_json()
    assert [b["id"] for b in listed] == made  # reads still work; the refused block is not there
