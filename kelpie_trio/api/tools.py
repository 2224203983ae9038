"""/v1/tools/ and an agent's tools (Letta's client.tools and client.agents.tools)."""

from __future__ import annotations

import attrs
from quart import Blueprint, Response, request

from kelpie_trio.api.agents import render_agent
from kelpie_trio.api.common import (
    body,
    bool_arg,
    check_id,
    json_response,
    optional_body,
    page_args,
    render,
    service,
)
from kelpie_trio.api.spec import documented
from kelpie_trio.errors import Invalid
from kelpie_trio.models import convert
from kelpie_trio.models.tools import CreateTool, Tool
from kelpie_trio.service import window
from kelpie_trio.service.send_request import ToolRunRequest
from kelpie_trio.service.tools import ToolFilter, ToolSearch
from kelpie_trio.tools.base import BASE_TOOLS

PAGING = ("after", "before", "limit", "order")
FILTERS = ("name", "names", "tool_ids", "search", "tool_types", "exclude_tool_types",
           "return_only_letta_tools")  # fmt: skip

tools = Blueprint("tools", __name__)


def _many(name: str) -> frozenset[str] | None:
    """A list query parameter, repeated (`?a=x&a=y`, the SDK's way) or comma-separated."""
    values = [v for raw in request.args.getlist(name) for v in raw.split(",") if v]
    return frozenset(values) if values else None


@tools.post("/v1/tools/")
@tools.post("/v1/tools")
@documented("Create a tool from Python source", request=CreateTool, response=Tool)
async def create_tool() -> Response:
    return json_response(render(await service().create_tool(await body())))


@tools.put("/v1/tools/")
@tools.put("/v1/tools")
@documented(
    "Create a tool, or replace the one with the same name (keeping its id)",
    request=CreateTool,
    response=Tool,
)
async def upsert_tool() -> Response:
    return json_response(render(await service().upsert_tool(await body())))


@tools.get("/v1/tools/")
@tools.get("/v1/tools")
@documented(
    "List tools: the base tools first, then custom tools in creation order",
    response=Tool,
    many=True,
    query=(*PAGING, *FILTERS),
    cursor="tool",
)
async def list_tools() -> Response:
    where = ToolFilter(
        name=request.args.get("name"),
        names=_many("names"),
        tool_ids=_many("tool_ids"),
        search=request.args.get("search") or None,
        tool_types=_many("tool_types"),
        exclude_tool_types=_many("exclude_tool_types") or frozenset(),
        only_letta_tools=bool_arg("return_only_letta_tools", False),
    )
    found = await service().list_tools(page_args("tool"), where)
    return json_response([render(t) for t in found])


@tools.post("/v1/tools/search")
@documented("Search tools by words of their name and description", request=ToolSearch)
async def search_tools() -> Response:
    hits = await service().search_tools(await body())
    return json_response(
        [
            {
                "tool": render(hit.tool),
                "embedded_text": hit.embedded_text,
                "fts_rank": hit.fts_rank,
                "vector_rank": None,
                "combined_score": hit.combined_score,
            }
            for hit in hits
        ]
    )


@tools.post("/v1/tools/add-base-tools")
@tools.post("/v1/tools/add-base-tools/")
@documented(
    "Upsert the base tools: they are built in, so this answers them", response=Tool, many=True
)
async def add_base_tools() -> Response:
    # Letta's CLI calls this at every start. The base tools here are part of the server,
    # present from its first start and never changed by a client: nothing to write.
    return json_response([render(t) for t in BASE_TOOLS])


@tools.get("/v1/tools/<tool_id>")
@documented("Retrieve a tool", response=Tool)
async def retrieve_tool(tool_id: str) -> Response:
    return json_response(render(await service().get_tool(check_id(tool_id, "tool", "tool_id"))))


@tools.patch("/v1/tools/<tool_id>")
@documented(
    "Modify a custom tool: only the fields given change",
    request=Tool,
    response=Tool,
    partial=True,
)
async def modify_tool(tool_id: str) -> Response:
    tool_id = check_id(tool_id, "tool", "tool_id")
    return json_response(render(await service().update_tool(tool_id, await body())))


@tools.delete("/v1/tools/<tool_id>")
@documented("Delete a custom tool (and detach it from its agents)")
async def delete_tool(tool_id: str) -> Response:
    await service().delete_tool(check_id(tool_id, "tool", "tool_id"))
    return json_response(None)


@tools.get("/v1/agents/<agent_id>/tools")
@tools.get("/v1/agents/<agent_id>/tools/")
@documented("List an agent's tools", response=Tool, many=True, query=PAGING, cursor="tool")
async def list_agent_tools(agent_id: str) -> Response:
    view = await service().get_agent(check_id(agent_id, "agent", "agent_id"))
    by_id = {t.id: t for t in view.tools}
    return json_response([render(by_id[i]) for i in window(list(by_id), page_args("tool"))])


@tools.patch("/v1/agents/<agent_id>/tools/attach/<tool_id>")
@documented("Attach a tool to an agent")
async def attach_tool(agent_id: str, tool_id: str) -> Response:
    view = await service().attach_tool(
        check_id(agent_id, "agent", "agent_id"), check_id(tool_id, "tool", "tool_id"), True
    )
    return json_response(render_agent(view))


@tools.patch("/v1/agents/<agent_id>/tools/detach/<tool_id>")
@documented("Detach a tool from an agent")
async def detach_tool(agent_id: str, tool_id: str) -> Response:
    view = await service().attach_tool(
        check_id(agent_id, "agent", "agent_id"), check_id(tool_id, "tool", "tool_id"), False
    )
    return json_response(render_agent(view))


@attrs.define
class ModifyApproval:
    """Letta's ModifyApprovalRequest."""

    requires_approval: bool


@tools.patch("/v1/agents/<agent_id>/tools/approval/<tool_name>")
@documented(
    "Require (or no longer require) approval before the agent's calls to a tool run: "
    "`requires_approval` in the body (or, deprecated, the query)",
    request=ModifyApproval,
    body_optional=True,
    query=("requires_approval",),
)
async def modify_approval(agent_id: str, tool_name: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    payload = await optional_body()
    if payload is not None:
        wanted = convert.structure_api(payload, ModifyApproval).requires_approval
    elif "requires_approval" in request.args:
        wanted = bool_arg("requires_approval", False)
    else:
        raise Invalid.field(
            ["body", "requires_approval"],
            "requires_approval must be given in the body (or as a query parameter)",
            "missing",
        )
    view = await service().set_tool_approval(agent_id, tool_name, wanted)
    return json_response(render_agent(view))


@tools.post("/v1/agents/<agent_id>/tools/<tool_name>/run")
@documented(
    "Run one of the agent's tools directly, outside a turn",
    request=ToolRunRequest,
    body_optional=True,
)
async def run_agent_tool(agent_id: str, tool_name: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    return json_response(await service().run_tool(agent_id, tool_name, await optional_body()))
