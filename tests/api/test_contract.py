"""What the README promises at the edge: wrong types are 422, a body is a JSON object, deep
JSON is refused cleanly, health reports the Letta API version, unknown paths are 404,
405 names what is allowed, the bearer scheme is case-insensitive, a message page holds at
most `limit` items."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from quart.testing import QuartClient

from kelpie_trio.agent.history import history_key
from kelpie_trio.agent.messages import Message, StoredToolCall
from kelpie_trio.api.app import create_app
from kelpie_trio.models import convert
from kelpie_trio.storage import MemoryStore
from kelpie_trio.storage.chunks import set_blob
from kelpie_trio.tools.base import BASE_TOOLS


@pytest.fixture
async def app(nursery: trio.Nursery) -> AsyncIterator[tuple[QuartClient, MemoryStore]]:
    store = MemoryStore()
    await nursery.start(store.run)
    async with create_app(store).test_app() as test_app:
        yield test_app.test_client(), store


async def _agent(client: QuartClient) -> str:
    response = await client.post("/v1/agents/", json={"name": "a"})
    assert response.status_code == 200
    return (await response.get_json())["id"]


async def _count_agents(client: QuartClient) -> int:
    return len(await (await client.get("/v1/agents/")).get_json())


@pytest.mark.parametrize(
    "query",
    [
        "limit=-1",
        "limit=0",
        "limit=abc",
        "order=sideways",
        "after=garbage",
        "before=garbage",
        "match_all_tags=maybe",
    ],
)
async def test_a_mistyped_query_parameter_on_a_listing_is_a_422(
    app: tuple[QuartClient, MemoryStore], query: str
) -> None:
    client, _ = app
    response = await client.get(f"/v1/agents/?{query}")
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["loc"][0] == "query"


@pytest.mark.parametrize(
    "query", ["include_err=maybe", "use_assistant_message=maybe", "after=garbage", "limit=0"]
)
async def test_a_mistyped_query_parameter_on_messages_is_a_422(
    app: tuple[QuartClient, MemoryStore], query: str
) -> None:
    client, _ = app
    agent_id = await _agent(client)
    response = await client.get(f"/v1/agents/{agent_id}/messages?{query}")
    assert response.status_code == 422


async def test_booleans_take_the_spellings_fastapi_takes(
    app: tuple[QuartClient, MemoryStore],
) -> None:
    client, _ = app
    for spelling in ("true", "False", "1", "0", "yes", "off"):
        assert (await client.get(f"/v1/agents/?match_all_tags={spelling}")).status_code == 200


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        (b"", {}),
        (b'{"name": "x"}', {"content-type": "text/plain"}),
        (b"null", {"content-type": "application/json"}),
        (b"[]", {"content-type": "application/json"}),
        (b'"text"', {"content-type": "application/json"}),
    ],
)
async def test_creating_an_agent_needs_a_json_object(
    app: tuple[QuartClient, MemoryStore], data: bytes, headers: dict[str, str]
) -> None:
    client, _ = app
    response = await client.post("/v1/agents/", data=data, headers=headers)
    assert response.status_code == 422
    assert await _count_agents(client) == 0  # a refused request changes nothing


@pytest.mark.parametrize("path", ["/v1/blocks/", "/v1/tools/", "/v1/agents/"])
async def test_json_nested_hundreds_deep_is_a_clear_422(
    app: tuple[QuartClient, MemoryStore], path: str
) -> None:
    client, _ = app
    deep = b'{"metadata": ' + b'{"a": ' * 400 + b"1" + b"}" * 400 + b"}"
    response = await client.post(path, data=deep, headers={"content-type": "application/json"})
    assert response.status_code == 422
    detail = (await response.get_json())["detail"]
    assert detail[0]["loc"] == ["body"] and "deeper" in detail[0]["msg"]


async def test_health_reports_the_letta_api_version_and_its_own(
    app: tuple[QuartClient, MemoryStore],
) -> None:
    client, _ = app
    health = await (await client.get("/v1/health/")).get_json()
    assert health["version"] == "0.16.8"
    assert health["kelpie_trio_version"] == "0.1.0" and health["status"] == "ok"


async def test_add_base_tools_answers_the_base_tools_every_time(
    app: tuple[QuartClient, MemoryStore],
) -> None:
    client, _ = app
    names = sorted(t.name for t in BASE_TOOLS)
    for _ in range(2):  # the CLI calls it at every start
        response = await client.post("/v1/tools/add-base-tools")
        assert response.status_code == 200
        assert sorted(t["name"] for t in await response.get_json()) == names
    listed = await (await client.get("/v1/tools/?limit=1000")).get_json()
    assert sorted(t["name"] for t in listed) == names  # nothing added twice


async def test_a_path_no_route_serves_is_a_404_even_when_it_looks_like_one(
    app: tuple[QuartClient, MemoryStore],
) -> None:
    client, _ = app
    assert (await client.post("/v1/tools/not-a-route")).status_code == 404
    assert (await client.put("/v1/agents/summarize")).status_code == 404


async def test_a_405_says_which_methods_are_allowed(
    app: tuple[QuartClient, MemoryStore],
) -> None:
    client, _ = app
    response = await client.put("/v1/tools/tool-00000000-0000-4000-8000-000000000000")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {
        "DELETE",
        "GET",
        "HEAD",
        "OPTIONS",
        "PATCH",
    }


async def test_the_bearer_scheme_is_case_insensitive(nursery: trio.Nursery) -> None:
    store = MemoryStore()
    await nursery.start(store.run)
    async with create_app(store, password="hunter2").test_app() as test_app:
        client = test_app.test_client()
        for scheme in ("Bearer", "bearer", "BEARER"):
            response = await client.get(
                "/v1/blocks/", headers={"authorization": f"{scheme} hunter2"}
            )
            assert response.status_code == 200
        assert (
            await client.get("/v1/blocks/", headers={"authorization": "Basic hunter2"})
        ).status_code == 401


def _stored(agent_id: str, seq: int, **fields: Any) -> Message:
    return Message(id=f"message-{seq:08d}-0000-4000-8000-000000000000", agent_id=agent_id,
                   seq=seq, created_at=float(seq), **fields)  # fmt: skip


async def test_a_message_page_holds_at_most_limit_items(
    app: tuple[QuartClient, MemoryStore],
) -> None:
    client, store = app
    agent_id = await _agent(client)
    # A user message, then one assistant message that shows as reasoning + a tool call.
    history = [
        _stored(agent_id, 0, role="user", content="hi"),
        _stored(
            agent_id,
            1,
            role="assistant",
            reasoning="thinking",
            tool_calls=[
                StoredToolCall(
                    id="call-1", name="archival_memory_search", arguments='{"query": "x"}'
                )
            ],
        ),
        _stored(agent_id, 2, role="user", content="again"),
    ]

    async def write(tr: Any) -> None:
        for m in history:
            set_blob(tr, history_key(agent_id, m.seq), convert.encode_record(m))

    await store.transact(write)
    path = f"/v1/agents/{agent_id}/messages"
    everything = await (await client.get(path)).get_json()
    assert len(everything) == 4  # the assistant message is two items
    for limit in (1, 2, 3):
        page = await (await client.get(f"{path}?limit={limit}")).get_json()
        assert len(page) <= limit
    # The one exception: a message that alone shows as more items than the page holds comes
    # whole, or the next page (after its id) would lose the rest of it.
    after_user = f"{path}?limit=1&after={everything[0]['id']}"
    assert len(await (await client.get(after_user)).get_json()) == 2
    # Paging by the last item's id walks the whole history, each item once.
    seen: list[dict[str, Any]] = []
    after = ""
    while True:
        page = await (await client.get(f"{path}?limit=2{after}")).get_json()
        if not page:
            break
        seen += page
        after = f"&after={page[-1]['id']}"
    assert seen == everything


async def test_options_and_405_name_only_methods_really_served(
    app: tuple[QuartClient, MemoryStore],
) -> None:
    client, _ = app
    # /v1/tools/search is POST only, though GET /v1/tools/{tool_id} matches its shape.
    options = await client.options("/v1/tools/search")
    assert set(options.headers["allow"].split(", ")) == {"OPTIONS", "POST"}
    get = await client.get("/v1/tools/search")
    assert get.status_code == 405 and get.headers["allow"] == "OPTIONS, POST"


async def test_a_wrong_type_nested_in_a_list_of_models_is_a_422(
    app: tuple[QuartClient, MemoryStore],
) -> None:
    client, _ = app
    blocks = [{"label": "human", "value": "Ada", "tags": {}}]  # an object where a list goes
    response = await client.post("/v1/agents/", json={"memory_blocks": blocks})
    assert response.status_code == 422
    detail = (await response.get_json())["detail"]
    assert detail[0]["loc"] == ["body", "memory_blocks", 0, "tags"]
    assert await _count_agents(client) == 0


# Tags are names, not ids: any `after` is a cursor there.
_PAGING_CASES = [
    (path, query)
    for path in ("/v1/blocks/", "/v1/tools/", "/v1/runs/", "/v1/tags/")
    for query in ("limit=-1", "limit=0", "limit=", "order=", "after=garbage")
    if (path, query) != ("/v1/tags/", "after=garbage")
]


@pytest.mark.parametrize(("path", "query"), _PAGING_CASES)
async def test_every_listing_checks_its_paging_arguments(
    app: tuple[QuartClient, MemoryStore], path: str, query: str
) -> None:
    client, _ = app
    assert (await client.get(f"{path}?{query}")).status_code == 422


_UNKNOWN_AGENT = "agent-00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/blocks/"),
        ("PATCH", "/v1/blocks/block-00000000-0000-4000-8000-000000000000"),
        ("POST", "/v1/tools/"),
        ("PUT", "/v1/tools/"),
        ("POST", "/v1/tools/search"),
        ("PATCH", f"/v1/agents/{_UNKNOWN_AGENT}"),
        ("POST", f"/v1/agents/{_UNKNOWN_AGENT}/archival-memory"),
        ("POST", f"/v1/agents/{_UNKNOWN_AGENT}/messages"),
        ("POST", f"/v1/agents/{_UNKNOWN_AGENT}/messages/cancel"),
    ],
)
async def test_a_null_body_where_an_object_goes_is_a_422(
    app: tuple[QuartClient, MemoryStore], method: str, path: str
) -> None:
    client, _ = app
    headers = {"content-type": "application/json"}
    response = await client.open(path, method=method, data=b"null", headers=headers)
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["loc"] == ["body"]


async def test_the_route_that_fits_a_path_best_decides_its_methods(
    app: tuple[QuartClient, MemoryStore],
) -> None:
    client, _ = app
    # A malformed id still reaches its route (a 422), and OPTIONS names that route's methods.
    options = await client.options("/v1/agents/0")
    assert set(options.headers["allow"].split(", ")) == {
        "DELETE",
        "GET",
        "HEAD",
        "OPTIONS",
        "PATCH",
    }
    assert (await client.get("/v1/agents/0")).status_code == 422
    # DELETE .../archival-memory/{memory_id} matches with memory_id="search", but the search
    # route fits better (one malformed id, not two): this path is GET only.
    deleted = await client.delete("/v1/agents/0/archival-memory/search")
    assert deleted.status_code == 405 and deleted.headers["allow"] == "GET, HEAD, OPTIONS"
