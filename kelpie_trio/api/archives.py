"""/v1/archives/, client.agents.archives and /v1/passages/search: archives agents share."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from kelpie_trio.api.agents import render_agent
from kelpie_trio.api.common import body, check_id, json_response, page_args, service
from kelpie_trio.api.passages import render_passage
from kelpie_trio.api.spec import documented
from kelpie_trio.models.archives import (
    DEFAULT_ORGANIZATION_ID,
    Archive,
    CreateArchive,
    CreateArchivePassage,
    CreateArchivePassages,
    PassageSearchRequest,
    UpdateArchive,
)
from kelpie_trio.models.convert import iso

archives = Blueprint("archives", __name__)

PAGING = ("after", "before", "limit", "order")


def render_archive(archive: Archive) -> dict[str, Any]:
    return {
        "id": archive.id,
        "name": archive.name,
        "description": archive.description,
        "organization_id": DEFAULT_ORGANIZATION_ID,
        "vector_db_provider": archive.vector_db_provider,
        "embedding_config": archive.embedding_config,
        "metadata": archive.metadata,
        "created_at": iso(archive.created_at),
        "updated_at": iso(archive.updated_at),
        "created_by_id": None,
        "last_updated_by_id": None,
    }


def _archive_id(value: str) -> str:
    return check_id(value, "archive", "archive_id")


@archives.post("/v1/archives/")
@archives.post("/v1/archives")
@documented("Create an archive", request=CreateArchive)
async def create_archive() -> Response:
    return json_response(render_archive(await service().create_archive(await body())))


@archives.get("/v1/archives/")
@archives.get("/v1/archives")
@documented(
    "List archives, newest first",
    query=(*PAGING, "name", "agent_id"),
    cursor="archive",
)
async def list_archives() -> Response:
    agent_id = request.args.get("agent_id")
    found = await service().list_archives(
        page_args("archive", order="desc"),
        name=request.args.get("name"),
        agent_id=None if agent_id is None else check_id(agent_id, "agent", "agent_id"),
    )
    return json_response([render_archive(a) for a in found])


@archives.get("/v1/archives/<archive_id>")
@documented("Retrieve an archive")
async def retrieve_archive(archive_id: str) -> Response:
    return json_response(render_archive(await service().get_archive(_archive_id(archive_id))))


@archives.patch("/v1/archives/<archive_id>")
@documented("Modify an archive's name or description", request=UpdateArchive)
async def modify_archive(archive_id: str) -> Response:
    archive = await service().update_archive(_archive_id(archive_id), await body())
    return json_response(render_archive(archive))


@archives.delete("/v1/archives/<archive_id>")
@documented("Delete an archive with its passages (the agents it was attached to stay)")
async def delete_archive(archive_id: str) -> Response:
    await service().delete_archive(_archive_id(archive_id))
    return Response(b"", status=204)


@archives.get("/v1/archives/<archive_id>/agents")
@documented("The agents an archive is attached to")
async def archive_agents(archive_id: str) -> Response:
    ids = await service().agents_of_archive(_archive_id(archive_id))
    views = [await service().get_agent(agent_id) for agent_id in ids]
    return json_response([render_agent(v) for v in views])


@archives.post("/v1/archives/<archive_id>/passages")
@documented("Create a passage in an archive", request=CreateArchivePassage)
async def create_archive_passage(archive_id: str) -> Response:
    made = await service().create_archive_passages(
        _archive_id(archive_id), await body(), batch=False
    )
    return json_response(render_passage(made[0]))


@archives.post("/v1/archives/<archive_id>/passages/batch")
@documented("Create several passages in an archive, all or none", request=CreateArchivePassages)
async def create_archive_passages(archive_id: str) -> Response:
    made = await service().create_archive_passages(
        _archive_id(archive_id), await body(), batch=True
    )
    return json_response([render_passage(p) for p in made])


@archives.delete("/v1/archives/<archive_id>/passages/<passage_id>")
@documented("Delete a passage of an archive")
async def delete_archive_passage(archive_id: str, passage_id: str) -> Response:
    passage_id = check_id(passage_id, "passage", "passage_id")
    await service().delete_archive_passage(_archive_id(archive_id), passage_id)
    return Response(b"", status=204)


@archives.patch("/v1/agents/<agent_id>/archives/attach/<archive_id>")
@documented("Attach an archive to an agent")
async def attach_archive(agent_id: str, archive_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    await service().attach_archive(agent_id, _archive_id(archive_id), attach=True)
    return json_response(None)


@archives.patch("/v1/agents/<agent_id>/archives/detach/<archive_id>")
@documented("Detach an archive from an agent")
async def detach_archive(agent_id: str, archive_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    await service().attach_archive(agent_id, _archive_id(archive_id), attach=False)
    return json_response(None)


@archives.post("/v1/passages/search")
@documented(
    "Search passages of an agent (its own and its archives'), of an archive, or of all",
    request=PassageSearchRequest,
)
async def search_passages() -> Response:
    found = await service().search_all_passages(await body())
    return json_response(
        [{"passage": render_passage(p), "score": score, "metadata": {}} for p, score in found]
    )
