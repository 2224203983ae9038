"""/v1/agents/{agent_id}/schedule: scheduled messages (Letta's client.agents.schedule).

Letta serves these in its cloud only; here they are stored and fired by every node
(service/schedules.py).
"""

from __future__ import annotations

from quart import Blueprint, Response

from kelpie_trio.api.common import body, check_id, cursor_arg, int_arg, json_response, service
from kelpie_trio.api.spec import documented
from kelpie_trio.service.schedules import ScheduleCreate

schedules = Blueprint("schedules", __name__)


def _ids(agent_id: str, scheduled_message_id: str | None = None) -> tuple[str, str | None]:
    agent_id = check_id(agent_id, "agent", "agent_id")
    if scheduled_message_id is not None:
        check_id(scheduled_message_id, "scheduled_message", "scheduled_message_id")
    return agent_id, scheduled_message_id


@schedules.post("/v1/agents/<agent_id>/schedule")
@documented(
    "Schedule a message to the agent: once at a time (scheduled_at, Unix ms) or on a cron "
    "expression (read in UTC, or in the schedule's IANA timezone)",
    request=ScheduleCreate,
)
async def create_schedule(agent_id: str) -> Response:
    agent_id, _ = _ids(agent_id)
    return json_response(await service().create_schedule(agent_id, await body()))


@schedules.get("/v1/agents/<agent_id>/schedule")
@documented(
    "The agent's scheduled messages, oldest first",
    query=("after", "limit"),
    cursor="scheduled_message",
)
async def list_schedules(agent_id: str) -> Response:
    agent_id, _ = _ids(agent_id)
    after = cursor_arg("after", "scheduled_message")
    limit = int_arg("limit", low=1, high=1000) or 50
    return json_response(await service().list_schedules(agent_id, after=after, limit=limit))


@schedules.get("/v1/agents/<agent_id>/schedule/<scheduled_message_id>")
@documented("A scheduled message")
async def retrieve_schedule(agent_id: str, scheduled_message_id: str) -> Response:
    agent_id, schedule_id = _ids(agent_id, scheduled_message_id)
    assert schedule_id is not None
    return json_response(await service().get_schedule(agent_id, schedule_id))


@schedules.delete("/v1/agents/<agent_id>/schedule/<scheduled_message_id>")
@documented("Delete a scheduled message (a firing already due is still sent)")
async def delete_schedule(agent_id: str, scheduled_message_id: str) -> Response:
    agent_id, schedule_id = _ids(agent_id, scheduled_message_id)
    assert schedule_id is not None
    return json_response(await service().delete_schedule(agent_id, schedule_id))
