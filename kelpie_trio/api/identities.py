"""/v1/identities/ and client.agents.identities: users and organisations tied to agents."""

from __future__ import annotations

from quart import Blueprint, Response, request

from kelpie_trio.api.common import body, check_id, json_response, page_args, render, service
from kelpie_trio.api.spec import documented
from kelpie_trio.errors import Invalid
from kelpie_trio.models import convert
from kelpie_trio.models.identities import (
    CreateIdentity,
    Identity,
    IdentityProperty,
    UpdateIdentity,
)

PAGING = ("after", "before", "limit", "order")
IDENTITY_TYPES = ("org", "user", "other")

identities = Blueprint("identities", __name__)


def _identity_id(value: str) -> str:
    return check_id(value, "identity", "identity_id")


@identities.post("/v1/identities/")
@identities.post("/v1/identities")
@documented("Create an identity", request=CreateIdentity, response=Identity)
async def create_identity() -> Response:
    return json_response(render(await service().create_identity(await body())))


@identities.put("/v1/identities/")
@identities.put("/v1/identities")
@documented(
    "Create an identity, or replace the one with this identifier_key and project_id",
    request=CreateIdentity,
    response=Identity,
)
async def upsert_identity() -> Response:
    return json_response(render(await service().upsert_identity(await body())))


@identities.get("/v1/identities/")
@identities.get("/v1/identities")
@documented(
    "List identities, newest first",
    response=Identity,
    many=True,
    query=(*PAGING, "name", "identifier_key", "identity_type", "project_id"),
    cursor="identity",
)
async def list_identities() -> Response:
    kind = request.args.get("identity_type")
    if kind is not None and kind not in IDENTITY_TYPES:
        raise Invalid.field(
            ["query", "identity_type"], "identity_type must be org, user or other", "enum"
        )
    found = await service().list_identities(
        page_args("identity", order="desc"),
        name=request.args.get("name"),
        identifier_key=request.args.get("identifier_key"),
        identity_type=kind,
        project_id=request.args.get("project_id"),
    )
    return json_response([render(i) for i in found])


@identities.get("/v1/identities/count")
@documented("How many identities there are", response=int)
async def count_identities() -> Response:
    return json_response(await service().count_identities())


@identities.get("/v1/identities/<identity_id>")
@documented("Retrieve an identity", response=Identity)
async def retrieve_identity(identity_id: str) -> Response:
    return json_response(render(await service().get_identity(_identity_id(identity_id))))


@identities.patch("/v1/identities/<identity_id>")
@documented(
    "Modify an identity: the fields given change; properties merge by key, agents and "
    "blocks named are added",
    request=UpdateIdentity,
    response=Identity,
)
async def modify_identity(identity_id: str) -> Response:
    identity_id = _identity_id(identity_id)
    return json_response(render(await service().update_identity(identity_id, await body())))


@identities.put("/v1/identities/<identity_id>/properties")
@documented("Replace an identity's properties", request=list[IdentityProperty], response=Identity)
async def set_properties(identity_id: str) -> Response:
    identity_id = _identity_id(identity_id)
    raw = await request.get_data()
    payload = convert.parse_body(raw) if raw else None
    if payload is None:
        raise Invalid.field(["body"], "Field required", "missing")
    return json_response(render(await service().set_identity_properties(identity_id, payload)))


@identities.delete("/v1/identities/<identity_id>")
@documented("Delete an identity (its agents and blocks stay)")
async def delete_identity(identity_id: str) -> Response:
    await service().delete_identity(_identity_id(identity_id))
    return json_response(None)


@identities.patch("/v1/agents/<agent_id>/identities/attach/<identity_id>")
@documented("Attach an identity to an agent")
async def attach_identity(agent_id: str, identity_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    await service().attach_identity(agent_id, _identity_id(identity_id), attach=True)
    return json_response(None)


@identities.patch("/v1/agents/<agent_id>/identities/detach/<identity_id>")
@documented("Detach an identity from an agent")
async def detach_identity(agent_id: str, identity_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    await service().attach_identity(agent_id, _identity_id(identity_id), attach=False)
    return json_response(None)
