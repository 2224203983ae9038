"""Access control and the per-request log line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import trio
from quart.testing import QuartClient

from kelpie_trio.api.app import create_app
from kelpie_trio.storage import MemoryStore


@pytest.fixture
async def guarded(nursery: trio.Nursery) -> AsyncIterator[QuartClient]:
    store = MemoryStore()
    await nursery.start(store.run)
    async with create_app(store, password="hunter2").test_app() as test_app:
        yield test_app.test_client()


async def test_with_a_password_every_route_but_health_needs_it(guarded: QuartClient) -> None:
    assert (await guarded.get("/v1/health/")).status_code == 200
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "hunter2"}):
        response = await guarded.get("/v1/blocks/", headers=headers)
        assert response.status_code == 401
        assert await response.get_json() == {"detail": "Unauthorized"}
    ok = await guarded.get("/v1/blocks/", headers={"authorization": "Bearer hunter2"})
    assert ok.status_code == 200


async def test_a_refused_request_changes_nothing(guarded: QuartClient) -> None:
    denied = await guarded.post("/v1/blocks/", json={"label": "l", "value": "v"})
    assert denied.status_code == 401
    listed = await guarded.get("/v1/blocks/", headers={"authorization": "Bearer hunter2"})
    assert await listed.get_json() == []


async def test_the_internal_route_takes_the_password_when_no_cluster_token_is_set(
    guarded: QuartClient,
) -> None:
    path = "/internal/v1/agents/agent-1/invoke"
    # No dispatcher in this app: past the check it would answer 503, before it 401.
    assert (await guarded.post(path, json={"message": {}})).status_code == 401
    authorized = await guarded.post(
        path, json={"message": {}}, headers={"authorization": "Bearer hunter2"}
    )
    assert authorized.status_code == 503


async def test_without_a_password_routes_are_open(client: QuartClient) -> None:
    assert (await client.get("/v1/blocks/")).status_code == 200


async def test_each_request_is_logged_once_with_its_id(
    client: QuartClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="kelpie_trio.requests"):
        response = await client.get("/v1/blocks/", headers={"x-request-id": "req-abc"})
    assert response.headers["x-request-id"] == "req-abc"
    lines = [r.getMessage() for r in caplog.records if r.name == "kelpie_trio.requests"]
    assert len(lines) == 1
    assert '"method":"GET"' in lines[0] and '"status":200' in lines[0]
    assert '"request_id":"req-abc"' in lines[0] and '"path":"/v1/blocks/"' in lines[0]
