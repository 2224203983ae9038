"""/v1/groups: the sleeptime groups made by `enable_sleeptime` (agent/sleeptime.py).

Served: list, count, retrieve, delete, and PATCH of the description and the sleeptime
manager's frequency; an agent's groups. Groups of the other managers (round robin,
supervisor, dynamic) are not made here: POST /v1/groups is a 404 that says so, as are the
group message routes (a sleeptime group's messages are its agents').
"""

from __future__ import annotations

from typing import Any

import attrs
from quart import Blueprint, Response, request

from kelpie_trio.agent.sleeptime import SleeptimeGroup, render_group
from kelpie_trio.api.common import body, check_id, int_arg, json_response, service
from kelpie_trio.api.spec import documented
from kelpie_trio.errors import Invalid, ServiceError

groups = Blueprint("groups", __name__)


@attrs.define
class UpdateGroup:
    """What PATCH /v1/groups/{id} takes (Letta's GroupUpdate, what is served of it)."""

    description: str | None = None
    # {"manager_type": "sleeptime", "sleeptime_agent_frequency": n}
    manager_config: dict[str, Any] | None = None


def _listed(found: list[SleeptimeGroup]) -> list[SleeptimeGroup]:
    """Letta's filters and paging for a list of groups (oldest first)."""
    kind = request.args.get("manager_type")
    if kind is not None and kind != "sleeptime":
        return []
    project = request.args.get("project_id")
    if project is not None:
        found = [g for g in found if g.project_id == project]
    ids = [g.id for g in found]
    after, before = request.args.get("after"), request.args.get("before")
    if after in ids:
        found = found[ids.index(after) + 1 :]
    if before is not None and before in [g.id for g in found]:
        found = found[: [g.id for g in found].index(before)]
    order = request.args.get("order", "asc")
    if order not in ("asc", "desc"):
        raise Invalid.field(["query", "order"], "order must be 'asc' or 'desc'", "enum")
    if order == "desc":
        found = found[::-1]
    limit = int_arg("limit", low=1, high=1000)
    return found[:limit] if limit else found


@groups.get("/v1/groups/")
@groups.get("/v1/groups")
@documented("List groups (here: the sleeptime groups)",
            query=("manager_type", "project_id", "after", "before", "limit", "order"))  # fmt: skip
async def list_groups() -> Response:
    return json_response([render_group(g) for g in _listed(await service().list_groups())])


@groups.get("/v1/groups/count")
@documented("Count groups")
async def count_groups() -> Response:
    return json_response(len(await service().list_groups()))


class _NotServed(ServiceError):
    status = 404


@groups.post("/v1/groups/")
@groups.post("/v1/groups")
@documented("Not served: a group is made by an agent's enable_sleeptime")
async def create_group() -> Response:
    raise _NotServed(
        "creating groups is not served by this server: the only groups here are the "
        "sleeptime groups made by creating (or updating) an agent with enable_sleeptime"
    )


@groups.delete("/v1/groups/<group_id>")
@documented("Delete a group (its agents stay)")
async def delete_group(group_id: str) -> Response:
    group_id = check_id(group_id, "group", "group_id")
    await service().delete_group(group_id)
    return json_response(None)


@groups.get("/v1/groups/<group_id>")
@documented("A group")
async def retrieve_group(group_id: str) -> Response:
    group_id = check_id(group_id, "group", "group_id")
    return json_response(render_group(await service().get_group(group_id)))


@groups.patch("/v1/groups/<group_id>")
@documented(
    "Change a group's description or its sleeptime_agent_frequency (manager_config)",
    request=UpdateGroup,
    partial=True,
)
async def modify_group(group_id: str) -> Response:
    group_id = check_id(group_id, "group", "group_id")
    return json_response(render_group(await service().update_group(group_id, await body())))


@groups.get("/v1/agents/<agent_id>/groups")
@documented("The groups an agent is in", query=("manager_type",))
async def agent_groups(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    await service().get_agent(agent_id)  # 404 for an unknown agent
    found = await service().list_groups()
    mine = [g for g in found if agent_id == g.manager_agent_id or agent_id in g.agent_ids]
    return json_response([render_group(g) for g in _listed(mine)])
