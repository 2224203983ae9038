"""Every route, fed the wrong things: a clear 4xx, never a 500, and the store unchanged.

The routes and their bodies come from /openapi.json, so a new route is covered
the day it is added.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import trio
from quart.testing import QuartClient

from kelpie_trio.agent.actor import AgentActor
from kelpie_trio.agent.llms import llm_factory
from kelpie_trio.api.app import create_app
from kelpie_trio.env import RealEnv
from kelpie_trio.nursery.dispatcher import Dispatcher
from kelpie_trio.nursery.transport import HttpTransport
from kelpie_trio.service import AgentService
from kelpie_trio.storage import MemoryStore

UNKNOWN = {
    "agent": "agent-00000000-0000-4000-8000-000000000000",
    "block": "block-00000000-0000-4000-8000-000000000000",
    "tool": "tool-00000000-0000-4000-8000-000000000000",
    "passage": "passage-00000000-0000-4000-8000-000000000000",
    "memory": "passage-00000000-0000-4000-8000-000000000000",
    "run": "run-00000000-0000-4000-8000-000000000000",
    "session": "run-00000000-0000-4000-8000-000000000000",
    "mcp_server": "mcp_server-00000000-0000-4000-8000-000000000000",
    "identity": "identity-00000000-0000-4000-8000-000000000000",
    "message": "message-00000000-0000-4000-8000-000000000000",
    "step": "step-00000000-0000-4000-8000-000000000000",
    "archive": "archive-00000000-0000-4000-8000-000000000000",
    "conversation": "conv-00000000-0000-4000-8000-000000000000",
    "scheduled_message": "scheduled_message-00000000-0000-4000-8000-000000000000",
    "group": "group-00000000-0000-4000-8000-000000000000",
    "folder": "source-00000000-0000-4000-8000-000000000000",
    "file": "file-00000000-0000-4000-8000-000000000000",
}

WRONG_VALUES: list[Any] = [12345, None, ["a", "list"], {"an": "object"}, True, "text"]


@pytest.fixture
async def app_and_store(nursery: trio.Nursery) -> AsyncIterator[tuple[QuartClient, MemoryStore]]:
    """The whole app with its agent runtime (one node, the offline sim model)."""
    env = RealEnv()
    store = MemoryStore(env)
    await nursery.start(store.run)
    service = AgentService(store, env)
    llm_for = llm_factory(env)
    dispatcher = Dispatcher(
        node_id="node-test",
        address="http://127.0.0.1:9",  # one node: never forwards
        env=env,
        store=store,
        factory=lambda ctx: AgentActor(ctx, service, llm_for),
        transport=HttpTransport(),
    )
    await nursery.start(dispatcher.run)
    async with create_app(store, dispatcher, service=service).test_app() as test_app:
        yield test_app.test_client(), store


async def call(client: QuartClient, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """One request, its response read chunk by chunk: the test client's `open()` deadlocks
    on a response of ten chunks or more, which an SSE reply can be. JSON bodies parsed."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": "application/json"}
    async with client.request(url, method=method.upper(), headers=headers) as connection:
        await connection.send(raw)
        await connection.send_complete()
        data = b""
        while True:
            try:
                data += await connection.receive()
            except trio.EndOfChannel:
                break
    status = connection.status_code or 0
    try:
        return status, orjson.loads(data)
    except orjson.JSONDecodeError:
        return status, data


def fill(path: str, agent_id: str | None = None) -> str:
    """A path with each {x_id} replaced by a well-formed id nobody has."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "agent_id" and agent_id:
            return agent_id
        kind = name.removesuffix("_id")
        return UNKNOWN.get(kind, "human")  # labels and tool names: any word

    return re.sub(r"\{([a-z_]+)\}", one, path)


async def operations(client: QuartClient) -> list[tuple[str, str, dict]]:
    spec = await (await client.get("/openapi.json")).get_json()
    return [
        (path, method, op)
        for path, methods in spec["paths"].items()
        if not path.startswith("/internal/")
        for method, op in methods.items()
    ]


async def test_no_route_answers_500_to_a_malformed_or_mistyped_body(
    app_and_store: tuple[QuartClient, MemoryStore],
) -> None:
    client, _ = app_and_store
    agent = await (await client.post("/v1/agents/", json={"name": "probe"})).get_json()
    checked = 0
    spec = await (await client.get("/openapi.json")).get_json()
    schemas = spec["components"]["schemas"]
    for path, method, op in await operations(client):
        if method not in ("post", "put", "patch"):
            continue
        url = fill(path, agent["id"])
        bodies: list[Any] = [b"{not json", b"[1, 2]", b'"a string"']
        ref = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        name = ref.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
        for prop in schemas.get(name, {}).get("properties", {}):
            for wrong in WRONG_VALUES:
                bodies.append({prop: wrong})
        for body in bodies:
            status, answer = await call(client, method, url, body)
            assert status < 500, (method, url, body, answer)
            if status >= 400:
                assert "detail" in answer, (method, url, body)
            checked += 1
    # (A mistyped field may be a valid value elsewhere, e.g. "text" as a name: some of
    # these succeed. The store check is the next test, with bodies that never can.)
    assert checked > 100


async def test_refused_requests_leave_the_store_unchanged(
    app_and_store: tuple[QuartClient, MemoryStore],
) -> None:
    client, store = app_and_store
    agent = await (await client.post("/v1/agents/", json={"name": "probe"})).get_json()
    before = store.engine.snapshot()
    for path, method, op in await operations(client):
        if method not in ("post", "put", "patch") or "requestBody" not in op:
            continue  # a route that takes no body (attach, reset) ignores one
        for body in (b"{not json", b"[1, 2]"):
            status, _ = await call(client, method, fill(path, agent["id"]), body)
            assert 400 <= status < 500, (method, path)
    assert store.engine.snapshot() == before


async def test_unknown_ids_are_404_and_malformed_ids_422_on_every_route(
    app_and_store: tuple[QuartClient, MemoryStore],
) -> None:
    client, _ = app_and_store
    for path, method, _ in await operations(client):
        if "_id}" not in path:
            continue
        status, answer = await call(client, method, fill(path), {})
        assert status in (404, 422), (method, path, status)
        if status == 422 and method in ("get", "delete"):
            # Reads and deletes have no body to refuse first: a 422 must be about
            # a missing query parameter (search's `query`), not about the id.
            assert answer["detail"][0]["loc"][0] == "query", (method, path, answer)
        malformed = re.sub(r"\{[a-z_]+_id\}", "not-an-id", path)
        status, _ = await call(client, method, malformed, {})
        assert status in (404, 422), (method, malformed)
