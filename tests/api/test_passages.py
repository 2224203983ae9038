"""/v1/agents/{id}/archival-memory through the app's test client: insert, list, delete, search."""

from __future__ import annotations

import pytest
from quart.testing import QuartClient

from kelpie_trio.models.passages import (
    default_archive_id,
    parse_timestamp,
    split_text,
)
from kelpie_trio.service import PASSAGE_INDEX
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

UNKNOWN_AGENT = "agent-00000000-0000-4000-8000-000000000000"
UNKNOWN_PASSAGE = "passage-00000000-0000-4000-8000-000000000000"

PASSAGE_FIELDS = {
    "id", "text", "archive_id", "tags", "metadata", "embedding", "embedding_config",
    "created_at", "updated_at", "is_deleted", "organization_id", "source_id", "file_id",
    "file_name", "created_by_id", "last_updated_by_id",
}  # fmt: skip


async def new_agent(client: QuartClient, name: str = "archivist") -> str:
    response = await client.post("/v1/agents/", json={"name": name})
    assert response.status_code == 200, await response.get_data()
    return (await response.get_json())["id"]


async def insert(client: QuartClient, agent_id: str, text: str, **fields) -> list[dict]:
    response = await client.post(
        f"/v1/agents/{agent_id}/archival-memory", json={"text": text, **fields}
    )
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


async def listing(client: QuartClient, agent_id: str, query: str = "") -> list[dict]:
    response = await client.get(f"/v1/agents/{agent_id}/archival-memory{query}")
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


async def search(client: QuartClient, agent_id: str, query: str, **params) -> dict:
    response = await client.get(
        f"/v1/agents/{agent_id}/archival-memory/search",
        query_string={"query": query, **params},
    )
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


# -- insert ---------------------------------------------------------------------


async def test_insert_returns_a_list_with_the_passage_in_letta_shape(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    made = await insert(client, agent_id, "The user's cat is called Miso.", tags=["pets"])
    assert isinstance(made, list) and len(made) == 1
    passage = made[0]
    assert set(passage) == PASSAGE_FIELDS  # Letta's Passage forbids other fields
    assert passage["id"].startswith("passage-")
    assert passage["text"] == "The user's cat is called Miso."
    assert passage["tags"] == ["pets"] and passage["metadata"] == {}
    assert passage["embedding"] is None and passage["is_deleted"] is False
    assert passage["archive_id"] == default_archive_id(agent_id)
    assert passage["created_at"].endswith("+00:00")


async def test_insert_keeps_the_given_created_at(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    [passage] = await insert(client, agent_id, "old news", created_at="2024-03-01T12:00:00Z")
    assert passage["created_at"] == "2024-03-01T12:00:00+00:00"


async def test_long_text_becomes_several_passages_in_order(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    sentences = [f"Sentence number {i} says something memorable." for i in range(80)]
    made = await insert(client, agent_id, " ".join(sentences))
    assert len(made) > 1
    assert all(len(p["text"]) <= 1200 for p in made)  # 300 tokens at ~4 characters each
    assert " ".join(p["text"] for p in made) == " ".join(sentences)
    assert [p["id"] for p in await listing(client, agent_id)] == [p["id"] for p in made]


async def test_missing_text_is_a_422_naming_the_field(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    response = await client.post(f"/v1/agents/{agent_id}/archival-memory", json={"tags": ["x"]})
    assert response.status_code == 422
    assert [d["loc"] for d in (await response.get_json())["detail"]] == [["body", "text"]]
    assert await listing(client, agent_id) == []


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"text": "   "}, ["body", "text"]),
        ({"text": 7}, ["body", "text"]),
        ({"text": "t", "tags": "not-a-list"}, ["body", "tags"]),
        ({"text": "t", "created_at": "yesterday"}, ["body", "created_at"]),
    ],
)
async def test_bad_insert_fields_are_a_422(client: QuartClient, fields: dict, loc: list) -> None:
    agent_id = await new_agent(client)
    response = await client.post(f"/v1/agents/{agent_id}/archival-memory", json=fields)
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["loc"] == loc
    assert await listing(client, agent_id) == []


async def test_text_beyond_one_insert_is_a_413(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    response = await client.post(
        f"/v1/agents/{agent_id}/archival-memory", json={"text": "x" * 1_000_001}
    )
    assert response.status_code == 413
    assert await listing(client, agent_id) == []


async def test_unknown_agent_is_404_and_malformed_agent_id_is_422(client: QuartClient) -> None:
    base = f"/v1/agents/{UNKNOWN_AGENT}/archival-memory"
    assert (await client.post(base, json={"text": "t"})).status_code == 404
    assert (await client.get(base)).status_code == 404
    assert (await client.get(f"{base}/search?query=t")).status_code == 404
    assert (await client.delete(f"{base}/{UNKNOWN_PASSAGE}")).status_code == 404
    body = await (await client.get(base)).get_json()
    assert body["detail"] == f"Agent with id '{UNKNOWN_AGENT}' not found"
    response = await client.post("/v1/agents/nonsense/archival-memory", json={"text": "t"})
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["loc"] == ["path", "agent_id"]


# -- list -----------------------------------------------------------------------


async def test_list_is_oldest_first_and_pages_with_after_and_before(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    ids = [(await insert(client, agent_id, f"fact {i}"))[0]["id"] for i in range(5)]
    assert [p["id"] for p in await listing(client, agent_id)] == ids
    newest_first = await listing(client, agent_id, "?ascending=false")
    assert [p["id"] for p in newest_first] == ids[::-1]
    page = await listing(client, agent_id, f"?after={ids[1]}&limit=2")
    assert [p["id"] for p in page] == ids[2:4]
    page = await listing(client, agent_id, f"?before={ids[3]}&limit=10")
    assert [p["id"] for p in page] == ids[:3]
    page = await listing(client, agent_id, f"?ascending=false&after={ids[3]}&limit=2")
    assert [p["id"] for p in page] == [ids[2], ids[1]]


async def test_list_orders_by_created_at_not_by_insertion(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    [late] = await insert(client, agent_id, "late", created_at="2025-06-01T00:00:00Z")
    [early] = await insert(client, agent_id, "early", created_at="2025-01-01T00:00:00Z")
    assert [p["id"] for p in await listing(client, agent_id)] == [early["id"], late["id"]]


async def test_list_search_filters_by_text_case_insensitively(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    await insert(client, agent_id, "Likes GREEN tea")
    await insert(client, agent_id, "Dislikes coffee")
    found = await listing(client, agent_id, "?search=green")
    assert [p["text"] for p in found] == ["Likes GREEN tea"]


async def test_list_limit_must_be_in_range(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    for bad in ("0", "abc", "1001"):
        response = await client.get(f"/v1/agents/{agent_id}/archival-memory?limit={bad}")
        assert response.status_code == 422
        assert (await response.get_json())["detail"][0]["loc"] == ["query", "limit"]


async def test_agents_never_see_each_others_passages(client: QuartClient) -> None:
    mine, theirs = await new_agent(client, "mine"), await new_agent(client, "theirs")
    [secret] = await insert(client, theirs, "their secret about tea", tags=["t"])
    await insert(client, mine, "my note about tea", tags=["t"])
    assert [p["text"] for p in await listing(client, mine)] == ["my note about tea"]
    found = await search(client, mine, "secret tea", tags="t")
    assert [r["content"] for r in found["results"]] == ["my note about tea"]
    # Nor delete them, nor page from them.
    response = await client.delete(f"/v1/agents/{mine}/archival-memory/{secret['id']}")
    assert response.status_code == 404
    assert await listing(client, mine, f"?after={secret['id']}") == []
    assert [p["id"] for p in await listing(client, theirs)] == [secret["id"]]


# -- delete ---------------------------------------------------------------------


async def test_delete_removes_the_passage_and_answers_letta_message(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    [keep] = await insert(client, agent_id, "keep me")
    [drop] = await insert(client, agent_id, "drop me")
    response = await client.delete(f"/v1/agents/{agent_id}/archival-memory/{drop['id']}")
    assert response.status_code == 200
    assert (await response.get_json()) == {
        "message": f"Memory id={drop['id']} successfully deleted"
    }
    assert [p["id"] for p in await listing(client, agent_id)] == [keep["id"]]
    assert (await search(client, agent_id, "drop"))["results"] == []
    again = await client.delete(f"/v1/agents/{agent_id}/archival-memory/{drop['id']}")
    assert again.status_code == 404
    assert (await again.get_json())["detail"] == f"Passage with id '{drop['id']}' not found"


async def test_delete_with_a_malformed_memory_id_is_422(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    response = await client.delete(f"/v1/agents/{agent_id}/archival-memory/block-1")
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["loc"] == ["path", "memory_id"]


async def test_deleting_the_agent_deletes_its_passages(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    await insert(client, agent_id, "goes with the agent")
    assert (await client.delete(f"/v1/agents/{agent_id}")).status_code == 200
    store = client.app.config["KELPIE_STORE"]

    async def left(tr: Transaction) -> list:
        return [
            *await tr.get_prefix(keys.PASSAGES.pack((agent_id,))),
            *await tr.get_prefix(PASSAGE_INDEX.pack((agent_id,))),
        ]

    assert await store.transact(left) == []


# -- search ---------------------------------------------------------------------


async def test_search_answers_count_and_results_in_letta_shape(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    [made] = await insert(client, agent_id, "Ada likes green tea", tags=["food"])
    found = await search(client, agent_id, "tea")
    assert found["count"] == 1
    assert found["results"] == [
        {"id": made["id"], "content": "Ada likes green tea", "timestamp": made["created_at"],
         "tags": ["food"]}
    ]  # fmt: skip


async def test_search_ranks_by_matching_terms_then_recency(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    await insert(client, agent_id, "green tea in the morning", created_at="2025-01-01T00:00:00Z")
    await insert(client, agent_id, "tea with milk", created_at="2025-01-02T00:00:00Z")
    await insert(client, agent_id, "tea again", created_at="2025-01-03T00:00:00Z")
    await insert(client, agent_id, "coffee only", created_at="2025-01-04T00:00:00Z")
    found = await search(client, agent_id, "Green TEA")
    assert [r["content"] for r in found["results"]] == [
        "green tea in the morning",  # two terms
        "tea again",  # one term, newest
        "tea with milk",
    ]
    assert found["count"] == 3


async def test_search_matches_whole_words_only(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    await insert(client, agent_id, "a category of things")
    assert (await search(client, agent_id, "cat"))["results"] == []


async def test_search_filters_by_tags_any_and_all(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    await insert(client, agent_id, "note one", tags=["a"])
    await insert(client, agent_id, "note two", tags=["a", "b"])
    await insert(client, agent_id, "note three", tags=["c"])
    base = f"/v1/agents/{agent_id}/archival-memory/search?query=note"

    async def contents(query: str) -> list[str]:
        response = await client.get(base + query)
        assert response.status_code == 200
        return sorted(r["content"] for r in (await response.get_json())["results"])

    assert await contents("&tags=a&tags=c") == ["note one", "note three", "note two"]
    assert await contents("&tags=a&tags=b&tag_match_mode=all") == ["note two"]
    assert await contents("&tags=b&tags=c&tag_match_mode=any") == ["note three", "note two"]
    bad = await client.get(base + "&tag_match_mode=some")
    assert bad.status_code == 422
    assert (await bad.get_json())["detail"][0]["loc"] == ["query", "tag_match_mode"]


async def test_search_filters_by_date_range_inclusively(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    for day in ("01", "15", "31"):
        await insert(client, agent_id, f"entry {day}", created_at=f"2025-01-{day}T18:00:00Z")
    found = await search(client, agent_id, "entry", start_datetime="2025-01-15T00:00:00Z",
                         end_datetime="2025-01-31")  # fmt: skip
    assert sorted(r["content"] for r in found["results"]) == ["entry 15", "entry 31"]
    bad = await client.get(
        f"/v1/agents/{agent_id}/archival-memory/search?query=x&start_datetime=soon"
    )
    assert bad.status_code == 422
    assert (await bad.get_json())["detail"][0]["loc"] == ["query", "start_datetime"]


async def test_search_top_k_limits_and_defaults_to_five(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    for i in range(7):
        await insert(client, agent_id, f"memo {i}")
    assert (await search(client, agent_id, "memo"))["count"] == 5
    assert (await search(client, agent_id, "memo", top_k="2"))["count"] == 2
    assert (await search(client, agent_id, "memo", top_k="50"))["count"] == 7
    for bad in ("0", "two"):
        response = await client.get(
            f"/v1/agents/{agent_id}/archival-memory/search?query=memo&top_k={bad}"
        )
        assert response.status_code == 422


async def test_search_without_a_query_is_a_422(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    response = await client.get(f"/v1/agents/{agent_id}/archival-memory/search")
    assert response.status_code == 422
    detail = (await response.get_json())["detail"]
    assert detail == [{"loc": ["query", "query"], "msg": "Field required", "type": "missing"}]


async def test_search_with_an_empty_query_lists_the_newest(client: QuartClient) -> None:
    agent_id = await new_agent(client)
    await insert(client, agent_id, "first", created_at="2025-01-01T00:00:00Z")
    await insert(client, agent_id, "second", created_at="2025-01-02T00:00:00Z")
    found = await search(client, agent_id, "")
    assert [r["content"] for r in found["results"]] == ["second", "first"]


async def test_search_timestamps_are_in_the_agents_timezone(client: QuartClient) -> None:
    response = await client.post("/v1/agents/", json={"name": "tz", "timezone": "Asia/Tokyo"})
    agent_id = (await response.get_json())["id"]
    await insert(client, agent_id, "noon in UTC", created_at="2025-01-01T12:00:00Z")
    [result] = (await search(client, agent_id, "noon"))["results"]
    assert result["timestamp"] == "2025-01-01T21:00:00+09:00"


# -- the rules, without a store ----------------------------------------------------


def test_split_text_keeps_short_text_exactly() -> None:
    assert split_text("  spaced  ", 100) == ["  spaced  "]


def test_split_text_prefers_paragraphs_then_sentences_then_spaces() -> None:
    text = "a" * 30 + "\n\n" + "b" * 30 + ". " + "c" * 30
    assert split_text(text, 40) == ["a" * 30, "b" * 30 + ".", "c" * 30]
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]  # no boundary: hard cut


def test_parse_timestamp_reads_dates_zones_and_naive_times_as_utc() -> None:
    assert parse_timestamp("2025-01-01") == parse_timestamp("2025-01-01T00:00:00Z")
    assert parse_timestamp("2025-01-01", end_of_day=True) == parse_timestamp(
        "2025-01-01T23:59:59.999999+00:00"
    )
    assert parse_timestamp("2025-01-01T09:00:00+09:00") == parse_timestamp("2025-01-01T00:00:00")
    with pytest.raises(ValueError):
        parse_timestamp("not a date")
