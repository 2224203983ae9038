"""/v1/agents/{agent_id}/schedule through the app's test client: shapes and errors (firing
is the DST's: tests/dst/test_dst_schedules.py)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from quart.testing import QuartClient

from kelpie_trio.service import schedules
from kelpie_trio.service.schedules import BY_AGENT, DUE, SCHEDULE

MISSING_AGENT = "agent-00000000-0000-4000-8000-000000000000"
MISSING_SCHEDULE = "scheduled_message-00000000-0000-4000-8000-000000000000"
HELLO = [{"role": "user", "content": "wake up"}]


def in_ms(seconds: float) -> int:
    return int((time.time() + seconds) * 1000)


async def new_agent(client: QuartClient) -> str:
    response = await client.post("/v1/agents/", json={"name": "scheduled"})
    assert response.status_code == 200, await response.get_data()
    return (await response.get_json())["id"]


async def create(client: QuartClient, agent: str, schedule: dict, **fields) -> dict:
    body = {"messages": HELLO, "schedule": schedule, **fields}
    response = await client.post(f"/v1/agents/{agent}/schedule", json=body)
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


async def refused(client: QuartClient, agent: str, body: dict, status: int) -> object:
    response = await client.post(f"/v1/agents/{agent}/schedule", json=body)
    assert response.status_code == status, await response.get_data()
    return (await response.get_json())["detail"]


async def test_a_one_time_schedule_is_created_read_listed_and_deleted(client: QuartClient) -> None:
    agent = await new_agent(client)
    at = in_ms(3600)
    created = await create(client, agent, {"type": "one-time", "scheduled_at": at}, max_steps=3)
    assert created["id"].startswith("scheduled_message-")
    due = dt.datetime.fromisoformat(created["next_scheduled_at"])
    assert abs(due.timestamp() * 1000 - at) < 1
    got = await (await client.get(f"/v1/agents/{agent}/schedule/{created['id']}")).get_json()
    assert got == {
        "id": created["id"],
        "agent_id": agent,
        "message": {"messages": HELLO, "callback_url": None,
                    "include_return_message_types": None, "max_steps": 3},
        "next_scheduled_time": created["next_scheduled_at"],
        "schedule": {"type": "one-time", "scheduled_at": at},
    }  # fmt: skip
    listed = await (await client.get(f"/v1/agents/{agent}/schedule")).get_json()
    assert listed == {"has_next_page": False, "scheduled_messages": [got]}
    response = await client.delete(f"/v1/agents/{agent}/schedule/{created['id']}")
    assert response.status_code == 200 and await response.get_json() == {"success": True}
    response = await client.get(f"/v1/agents/{agent}/schedule/{created['id']}")
    assert response.status_code == 404
    assert "not found" in (await response.get_json())["detail"]


async def test_a_cron_schedule_is_due_at_its_next_time_in_its_time_zone(
    client: QuartClient,
) -> None:
    agent = await new_agent(client)
    created = await create(
        client, agent,
        {"type": "recurring", "cron_expression": "30  9 * * *", "timezone": "Asia/Kolkata"},
    )  # fmt: skip
    due = dt.datetime.fromisoformat(created["next_scheduled_at"])
    local = due.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
    assert (local.hour, local.minute, local.second) == (9, 30, 0)
    assert dt.timedelta(0) < due - dt.datetime.now(dt.UTC) <= dt.timedelta(days=1)
    got = await (await client.get(f"/v1/agents/{agent}/schedule/{created['id']}")).get_json()
    assert got["schedule"] == {"type": "recurring", "cron_expression": "30 9 * * *",
                               "timezone": "Asia/Kolkata"}  # fmt: skip
    utc = await create(client, agent, {"type": "recurring", "cron_expression": "0 * * * *"})
    got = await (await client.get(f"/v1/agents/{agent}/schedule/{utc['id']}")).get_json()
    assert got["schedule"]["timezone"] == "UTC"
    assert dt.datetime.fromisoformat(utc["next_scheduled_at"]).minute == 0


async def test_listing_pages_in_creation_order(client: QuartClient) -> None:
    agent = await new_agent(client)
    ids = [(await create(client, agent, {"scheduled_at": in_ms(60 + i)}))["id"] for i in range(5)]
    first = await (await client.get(f"/v1/agents/{agent}/schedule?limit=2")).get_json()
    assert first["has_next_page"] is True
    assert [s["id"] for s in first["scheduled_messages"]] == ids[:2]
    path = f"/v1/agents/{agent}/schedule?after={ids[1]}&limit=3"
    rest = await (await client.get(path)).get_json()
    assert rest["has_next_page"] is False
    assert [s["id"] for s in rest["scheduled_messages"]] == ids[2:]


async def test_bad_schedules_are_refused_with_letta_shaped_errors(client: QuartClient) -> None:
    agent = await new_agent(client)
    cron = {"type": "recurring", "cron_expression": "61 * * * *"}
    detail = await refused(client, agent, {"messages": HELLO, "schedule": cron}, 422)
    assert detail[0]["loc"] == ["body", "schedule", "cron_expression"]
    for expression in ("@daily", "0 0 30 2 *", "* * * *", "0 0 * * * *"):
        schedule = {"type": "recurring", "cron_expression": expression}
        await refused(client, agent, {"messages": HELLO, "schedule": schedule}, 422)
    zone = {"type": "recurring", "cron_expression": "0 9 * * *", "timezone": "Mars/Olympus"}
    detail = await refused(client, agent, {"messages": HELLO, "schedule": zone}, 422)
    assert detail[0]["loc"] == ["body", "schedule", "timezone"]
    past = {"type": "one-time", "scheduled_at": in_ms(-60)}
    assert "past" in await refused(client, agent, {"messages": HELLO, "schedule": past}, 400)
    seconds = {"type": "one-time", "scheduled_at": time.time() + 60}  # seconds, not ms
    assert "past" in await refused(client, agent, {"messages": HELLO, "schedule": seconds}, 400)
    soon = {"type": "one-time", "scheduled_at": in_ms(60)}
    await refused(client, agent, {"messages": HELLO, "schedule": {"type": "weekly"}}, 422)
    await refused(client, agent, {"messages": HELLO}, 422)
    await refused(client, agent, {"messages": [], "schedule": soon}, 422)
    assistant = [{"role": "assistant", "content": "hi"}]
    await refused(client, agent, {"messages": assistant, "schedule": soon}, 422)
    await refused(client, agent, {"messages": HELLO, "schedule": soon, "max_steps": 0}, 422)
    hook = {"messages": HELLO, "schedule": soon, "callback_url": "https://example.com/done"}
    await refused(client, agent, hook, 422)
    detail = await refused(client, MISSING_AGENT, {"messages": HELLO, "schedule": soon}, 404)
    assert detail == f"Agent with id '{MISSING_AGENT}' not found"
    await refused(client, "agent-nope", {"messages": HELLO, "schedule": soon}, 422)
    listed = await (await client.get(f"/v1/agents/{agent}/schedule")).get_json()
    assert listed["scheduled_messages"] == []  # nothing refused was stored


async def test_an_agent_has_at_most_max_per_agent_schedules(
    client: QuartClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedules, "MAX_PER_AGENT", 2)
    agent = await new_agent(client)
    first = await create(client, agent, {"scheduled_at": in_ms(60)})
    await create(client, agent, {"type": "recurring", "cron_expression": "0 * * * *"})
    body = {"messages": HELLO, "schedule": {"scheduled_at": in_ms(90)}}
    assert "the most one agent may have" in await refused(client, agent, body, 409)
    await client.delete(f"/v1/agents/{agent}/schedule/{first['id']}")
    await create(client, agent, {"scheduled_at": in_ms(90)})  # room again


async def test_unknown_and_malformed_ids(client: QuartClient) -> None:
    agent = await new_agent(client)
    other = await new_agent(client)
    mine = await create(client, agent, {"scheduled_at": in_ms(60)})
    for path, status in (
        (f"/v1/agents/{agent}/schedule/{MISSING_SCHEDULE}", 404),
        (f"/v1/agents/{other}/schedule/{mine['id']}", 404),  # another agent's
        (f"/v1/agents/{agent}/schedule/nope", 422),
        (f"/v1/agents/{MISSING_AGENT}/schedule", 404),
    ):
        assert (await client.get(path)).status_code == status, path
    response = await client.delete(f"/v1/agents/{other}/schedule/{mine['id']}")
    assert response.status_code == 404


async def test_deleting_the_agent_deletes_its_schedules(client: QuartClient) -> None:
    agent = await new_agent(client)
    await create(client, agent, {"scheduled_at": in_ms(60)})
    await create(client, agent, {"type": "recurring", "cron_expression": "* * * * *"})
    assert (await client.delete(f"/v1/agents/{agent}")).status_code == 200
    store = client.app.config["KELPIE_STORE"]

    async def left(tr) -> list:
        found = []
        for space in (SCHEDULE, BY_AGENT, DUE):
            found += await tr.get_range(space.range().start, space.range().stop)
        return found

    assert await store.transact(left) == []
