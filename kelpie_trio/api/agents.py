"""/v1/agents/: agents, their core memory blocks, and /v1/tags/ (Letta's client.agents)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from quart import Blueprint, Response, request

from kelpie_trio.agent.sleeptime import render_group
from kelpie_trio.api.common import (
    body,
    bool_arg,
    check_id,
    json_response,
    page_args,
    render,
    service,
)
from kelpie_trio.api.folders import render_file_block, render_folder
from kelpie_trio.api.spec import STOP_REASONS, documented
from kelpie_trio.errors import Invalid
from kelpie_trio.models.agents import (
    SECRET_MASK,
    UPDATABLE_AGENT_FIELDS,
    Agent,
    AgentView,
    CreateAgent,
)
from kelpie_trio.models.blocks import Block
from kelpie_trio.models.convert import iso
from kelpie_trio.service import window
from kelpie_trio.service.agent_filters import AgentFilter

agents = Blueprint("agents", __name__)

PAGING = ("after", "before", "limit", "order")

# What a PATCH changes besides the plain fields: the model, through its handle or configs.
_MODEL_FIELDS = frozenset(
    {"model", "embedding", "llm_config", "embedding_config", "model_settings"}
)

# Relations the record holds as ids; the AgentState carries the records themselves.
_RECORD_ONLY = ("block_ids", "tool_ids", "created_at", "updated_at", "group_id")


def render_agent(view: AgentView) -> dict[str, Any]:
    """Letta's AgentState: every field the SDK requires, relations filled in."""
    state = render(view.agent)
    shown_secrets = masked_secrets(view.agent)
    for name in _RECORD_ONLY:
        state.pop(name, None)
    blocks = [render(b) for b in view.blocks]
    group = render_group(view.group) if view.group is not None else None
    state.update(
        created_at=iso(view.agent.created_at),
        updated_at=iso(view.agent.updated_at),
        blocks=blocks,
        memory={
            "agent_type": view.agent.agent_type,
            "git_enabled": False,
            "blocks": blocks,
            "file_blocks": [render_file_block(f, view.agent) for f in view.file_blocks],
            "prompt_template": "",
        },
        tools=[render(t) for t in view.tools],
        sources=[render_folder(f) for f in view.folders],
        identities=[render(i) for i in view.identities],
        identity_ids=[i.id for i in view.identities],
        secrets=shown_secrets,
        tool_exec_environment_variables=shown_secrets,
        message_ids=[],
        pending_approval=None,
        multi_agent_group=group,
        managed_group=group,
        last_run_completion=None,
        last_run_duration_ms=None,
        last_stop_reason=None,
    )
    return state


def masked_secrets(agent: Agent) -> list[dict[str, Any]]:
    """Letta's AgentEnvironmentVariable records, the value never shown once set."""
    return [
        {
            # A stable id from (agent, name), in Letta's agent-env-<uuid> form.
            "id": "agent-env-" + str(uuid.UUID(bytes=hashlib.sha256(
                f"{agent.id}\0{name}".encode()).digest()[:16])),
            "key": name,
            "value": SECRET_MASK,
            "description": None,
            "organization_id": None,
            "value_enc": None,
            "agent_id": agent.id,
        }
        for name in sorted(agent.secrets)
    ]  # fmt: skip


@agents.post("/v1/agents/")
@agents.post("/v1/agents")
@documented("Create an agent", request=CreateAgent)
async def create_agent() -> Response:
    return json_response(render_agent(await service().create_agent(await body())))


_FILTERS = ("name", "tags", "match_all_tags", "query_text", "project_id", "template_id",
            "base_template_id", "identity_id", "identifier_keys", "last_stop_reason",
            "created_by_id", "show_hidden_agents")  # fmt: skip


async def _agent_filter() -> AgentFilter:
    """Letta's agent filters from the query, as the list and the count both take them."""
    args = request.args
    identity_id = args.get("identity_id")
    if identity_id is not None:
        check_id(identity_id, "identity", "identity_id", "query")
    stop_reason = args.get("last_stop_reason")
    if stop_reason is not None and stop_reason not in STOP_REASONS:
        raise Invalid.field(
            ["query", "last_stop_reason"], f"unknown stop reason {stop_reason!r}", "enum"
        )
    keys = args.getlist("identifier_keys") or None
    # The identity filters name the agents an identity holds (service/identities.py).
    only_ids = (
        await service().identity_agent_ids(identity_id, keys)
        if identity_id is not None or keys
        else None
    )
    return AgentFilter(
        name=args.get("name"),
        tags=frozenset(args.getlist("tags")),
        match_all_tags=bool_arg("match_all_tags", False),
        query_text=args.get("query_text"),
        only_ids=None if only_ids is None else frozenset(only_ids),
        project_id=args.get("project_id"),
        template_id=args.get("template_id"),
        base_template_id=args.get("base_template_id"),
        show_hidden=bool_arg("show_hidden_agents", False),
        last_stop_reason=stop_reason,
        created_by_id=args.get("created_by_id"),
    )


@agents.get("/v1/agents/")
@agents.get("/v1/agents")
@documented("List agents", query=(*PAGING, *_FILTERS), cursor="agent")
async def list_agents() -> Response:
    wanted = await _agent_filter()
    found = await service().list_agents(page_args("agent"), wanted=wanted)
    return json_response([render_agent(v) for v in found])


@agents.get("/v1/agents/count")
@agents.get("/v1/agents/count/")
@documented("How many agents the filters keep", query=_FILTERS, response=int)
async def count_agents() -> Response:
    return json_response(await service().count_agents(await _agent_filter()))


@agents.get("/v1/agents/<agent_id>")
@documented("Retrieve an agent")
async def retrieve_agent(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    view = await service().get_agent(agent_id)
    state = render_agent(view)
    # The call waiting for the client, as Letta shows it (a client resumes from it).
    state["pending_approval"] = await service().pending_approval(agent_id)
    return json_response(state)


@agents.patch("/v1/agents/<agent_id>")
@documented(
    "Modify an agent: only the fields given change",
    request=CreateAgent,
    partial=True,
    fields=UPDATABLE_AGENT_FIELDS | _MODEL_FIELDS,
)
async def modify_agent(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    return json_response(render_agent(await service().update_agent(agent_id, await body())))


@agents.delete("/v1/agents/<agent_id>")
@documented("Delete an agent (its blocks stay)")
async def delete_agent(agent_id: str) -> Response:
    await service().delete_agent(check_id(agent_id, "agent", "agent_id"))
    return json_response(None)


@agents.get("/v1/agents/<agent_id>/core-memory/blocks")
@agents.get("/v1/agents/<agent_id>/core-memory/blocks/")
@documented(
    "List an agent's core memory blocks", response=Block, many=True, query=PAGING, cursor="block"
)
async def list_agent_blocks(agent_id: str) -> Response:
    view = await service().get_agent(check_id(agent_id, "agent", "agent_id"))
    by_id = {b.id: b for b in view.blocks}
    ids = window([b.id for b in view.blocks], page_args("block"))
    return json_response([render(by_id[i]) for i in ids])


@agents.get("/v1/agents/<agent_id>/core-memory/blocks/<label>")
@documented("Retrieve a core memory block by label", response=Block)
async def retrieve_agent_block(agent_id: str, label: str) -> Response:
    block = await service().agent_block(check_id(agent_id, "agent", "agent_id"), label)
    return json_response(render(block))


@agents.patch("/v1/agents/<agent_id>/core-memory/blocks/<label>")
@documented("Modify a core memory block by label", request=Block, response=Block, partial=True)
async def modify_agent_block(agent_id: str, label: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    return json_response(render(await service().update_agent_block(agent_id, label, await body())))


@agents.patch("/v1/agents/<agent_id>/core-memory/blocks/attach/<block_id>")
@documented("Attach a block to an agent's core memory")
async def attach_block(agent_id: str, block_id: str) -> Response:
    view = await service().attach_block(
        check_id(agent_id, "agent", "agent_id"), check_id(block_id, "block", "block_id"), True
    )
    return json_response(render_agent(view))


@agents.patch("/v1/agents/<agent_id>/core-memory/blocks/detach/<block_id>")
@documented("Detach a block from an agent's core memory")
async def detach_block(agent_id: str, block_id: str) -> Response:
    view = await service().attach_block(
        check_id(agent_id, "agent", "agent_id"), check_id(block_id, "block", "block_id"), False
    )
    return json_response(render_agent(view))


@agents.get("/v1/blocks/<block_id>/agents")
@documented("List the agents that hold a block", query=PAGING, cursor="agent")
async def agents_of_block(block_id: str) -> Response:
    found = await service().agents_of_block(
        check_id(block_id, "block", "block_id"), page_args("agent")
    )
    return json_response([render_agent(v) for v in found])


@agents.get("/v1/tags/")
@agents.get("/v1/tags")
@documented("List the tags in use", query=(*PAGING, "query_text"))
async def list_tags() -> Response:
    found = await service().list_tags(page_args(None), query_text=request.args.get("query_text"))
    return json_response(found)
