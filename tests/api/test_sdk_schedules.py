"""letta-client on a real server: client.agents.schedule (create, list, retrieve, delete) and a
one-time message that fires once, as an ordinary run of the agent (the sim model). Timing
under faults is the DST's (tests/dst/test_dst_schedules.py); here the wait is a bounded
poll, as a client would make it."""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from collections.abc import Callable
from typing import TypeVar

import letta_client
import pytest
from letta_client import Letta

T = TypeVar("T")

MISSING_AGENT = "agent-00000000-0000-4000-8000-000000000000"


def poll(check: Callable[[], T], seconds: float = 30.0) -> T:
    """A client's bounded poll: `check` until it is truthy, or its last answer at the end."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_sdk_a_one_time_message_fires_once_as_a_run_of_the_agent(letta: Letta) -> None:
    agent = letta.agents.create(name="reminded")
    at = int((time.time() + 1.5) * 1000)
    created = letta.agents.schedule.create(
        agent.id,
        schedule={"type": "one-time", "scheduled_at": at},
        messages=[{"role": "user", "content": "time to stretch"}],
        max_steps=3,
    )
    assert created.id.startswith("scheduled_message-")
    assert created.next_scheduled_at is not None
    due = dt.datetime.fromisoformat(created.next_scheduled_at).timestamp()
    assert abs(due * 1000 - at) < 1
    got = letta.agents.schedule.retrieve(created.id, agent_id=agent.id)
    assert got.schedule.scheduled_at == at and got.message.max_steps == 3
    assert got.message.messages[0].content == "time to stretch"

    [run] = poll(lambda: list(letta.runs.list(agent_id=agent.id)))
    assert poll(lambda: letta.runs.retrieve(run.id).status == "completed")
    users = [m for m in letta.agents.messages.list(agent.id) if m.message_type == "user_message"]
    assert [m.content for m in users] == ["time to stretch"]
    assert [r.id for r in letta.runs.list(agent_id=agent.id)] == [run.id]
    # A one-time schedule is done once it fired.
    assert letta.agents.schedule.list(agent.id).scheduled_messages == []
    with pytest.raises(letta_client.NotFoundError):
        letta.agents.schedule.retrieve(created.id, agent_id=agent.id)


def test_sdk_cron_schedules_are_listed_retrieved_and_deleted(letta: Letta) -> None:
    agent = letta.agents.create(name="daily")
    paris = letta.agents.schedule.create(
        agent.id,
        schedule={"type": "recurring", "cron_expression": "0 9 * * 1-5",
                  "timezone": "Europe/Paris"},  # type: ignore[typeddict-unknown-key]
        messages=[{"role": "user", "content": "morning briefing"}],
    )  # fmt: skip
    utc = letta.agents.schedule.create(
        agent.id,
        schedule={"type": "recurring", "cron_expression": "*/30 * * * *"},
        messages=[{"role": "user", "content": "check in"}],
    )
    local = dt.datetime.fromisoformat(paris.next_scheduled_at or "").astimezone(
        zoneinfo.ZoneInfo("Europe/Paris")
    )
    assert (local.hour, local.minute, local.weekday() < 5) == (9, 0, True)
    listed = letta.agents.schedule.list(agent.id)
    assert [s.id for s in listed.scheduled_messages] == [paris.id, utc.id]
    assert listed.has_next_page is False
    got = letta.agents.schedule.retrieve(paris.id, agent_id=agent.id)
    assert got.schedule.type == "recurring" and got.schedule.cron_expression == "0 9 * * 1-5"
    assert got.agent_id == agent.id and got.next_scheduled_time == paris.next_scheduled_at
    page = letta.agents.schedule.list(agent.id, limit="1")
    assert [s.id for s in page.scheduled_messages] == [paris.id] and page.has_next_page
    assert letta.agents.schedule.delete(paris.id, agent_id=agent.id).success is True
    with pytest.raises(letta_client.NotFoundError):
        letta.agents.schedule.retrieve(paris.id, agent_id=agent.id)
    assert [s.id for s in letta.agents.schedule.list(agent.id).scheduled_messages] == [utc.id]


def test_sdk_bad_schedules_are_client_errors(letta: Letta) -> None:
    agent = letta.agents.create(name="refused")
    hello = [{"role": "user", "content": "hi"}]
    with pytest.raises(letta_client.UnprocessableEntityError):
        letta.agents.schedule.create(
            agent.id, messages=hello,  # type: ignore[arg-type]
            schedule={"type": "recurring", "cron_expression": "every day"},
        )  # fmt: skip
    with pytest.raises(letta_client.UnprocessableEntityError):
        letta.agents.schedule.create(
            agent.id, messages=hello,  # type: ignore[arg-type]
            schedule={"type": "recurring", "cron_expression": "0 9 * * *",
                      "timezone": "Nowhere/Special"},  # type: ignore[typeddict-unknown-key]
        )  # fmt: skip
    with pytest.raises(letta_client.BadRequestError):
        letta.agents.schedule.create(
            agent.id, messages=hello,  # type: ignore[arg-type]
            schedule={"type": "one-time", "scheduled_at": int(time.time() * 1000) - 60_000},
        )  # fmt: skip
    with pytest.raises(letta_client.NotFoundError):
        letta.agents.schedule.create(
            MISSING_AGENT, messages=hello,  # type: ignore[arg-type]
            schedule={"type": "one-time", "scheduled_at": int(time.time() * 1000) + 60_000},
        )  # fmt: skip
    assert letta.agents.schedule.list(agent.id).scheduled_messages == []
