"""client.folders, client.folders.files, client.folders.agents, client.agents.folders and
client.agents.files: folders of files that agents open and search (service/folders.py,
service/agent_files.py)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from kelpie_trio.api.common import (
    body,
    bool_arg,
    check_id,
    cursor_arg,
    json_response,
    page_args,
    service,
)
from kelpie_trio.api.passages import render_passage
from kelpie_trio.api.spec import documented
from kelpie_trio.errors import Invalid
from kelpie_trio.models.agents import Agent
from kelpie_trio.models.archives import DEFAULT_ORGANIZATION_ID
from kelpie_trio.models.convert import iso
from kelpie_trio.models.folders import CreateFolder, FileAgent, FileRecord, Folder, UpdateFolder
from kelpie_trio.service.agent_files import check_is_open, limits_of

folders = Blueprint("folders", __name__)

PAGING = ("after", "before", "limit", "order")


def render_folder(folder: Folder) -> dict[str, Any]:
    """Letta's Folder (and Source, which agents.folders.list returns)."""
    return {
        "id": folder.id,
        "name": folder.name,
        "description": folder.description,
        "instructions": folder.instructions,
        "metadata": folder.metadata,
        "embedding_config": folder.embedding_config,
        "organization_id": DEFAULT_ORGANIZATION_ID,
        "created_by_id": None,
        "last_updated_by_id": None,
        "created_at": iso(folder.created_at),
        "updated_at": iso(folder.updated_at),
    }


def render_file(record: FileRecord, content: str | None = None) -> dict[str, Any]:
    """Letta's FileMetadata."""
    return {
        "id": record.id,
        "source_id": record.folder_id,
        "file_name": record.file_name,
        "original_file_name": record.original_file_name,
        "file_path": None,
        "file_type": record.file_type,
        "file_size": record.file_size,
        "file_creation_date": None,
        "file_last_modified_date": None,
        "processing_status": record.processing_status,
        "error_message": record.error_message,
        "total_chunks": record.total_chunks,
        "chunks_embedded": record.chunks_embedded,
        "content": content,
        "organization_id": DEFAULT_ORGANIZATION_ID,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
    }


def render_attachment(held: FileAgent, folder_name: str) -> dict[str, Any]:
    """Letta's AgentFileAttachment."""
    return {
        "id": held.id,
        "file_id": held.file_id,
        "file_name": held.file_name,
        "folder_id": held.folder_id,
        "folder_name": folder_name,
        "is_open": held.is_open,
        "last_accessed_at": iso(held.last_accessed) if held.last_accessed else None,
        "visible_content": held.view if held.is_open else None,
        "start_line": held.start_line,
        "end_line": held.end_line,
    }


def render_file_block(held: FileAgent, agent: Agent) -> dict[str, Any]:
    """Letta's FileBlock: one file as the agent's memory holds it (`memory.file_blocks`)."""
    _, chars = limits_of(agent)
    return {
        "id": held.id,
        "label": held.file_name,
        "value": held.view if held.is_open and held.view else "",
        "limit": chars,
        "read_only": True,
        "description": None,
        "metadata": {},
        "file_id": held.file_id,
        "source_id": held.folder_id,
        "is_open": held.is_open,
        "last_accessed_at": iso(held.last_accessed) if held.last_accessed else None,
    }


def _folder_id(value: str) -> str:
    return check_id(value, "source", "folder_id")


def _file_id(value: str) -> str:
    return check_id(value, "file", "file_id")


def _agent_id(value: str) -> str:
    return check_id(value, "agent", "agent_id")


@folders.post("/v1/folders/")
@folders.post("/v1/folders")
@documented("Create a folder", request=CreateFolder)
async def create_folder() -> Response:
    return json_response(render_folder(await service().create_folder(await body())))


@folders.get("/v1/folders/")
@folders.get("/v1/folders")
@documented("List folders, oldest first", query=(*PAGING, "name"), cursor="source")
async def list_folders() -> Response:
    found = await service().list_folders(page_args("source"), name=request.args.get("name"))
    return json_response([render_folder(f) for f in found])


@folders.get("/v1/folders/count")
@documented("How many folders there are")
async def count_folders() -> Response:
    return json_response(await service().count_folders())


@folders.get("/v1/folders/name/<folder_name>")
@documented("The id of the folder of this name")
async def folder_by_name(folder_name: str) -> Response:
    return json_response(await service().folder_id_by_name(folder_name))


@folders.get("/v1/folders/metadata")
@documented(
    "How many folders, files and bytes there are, per folder (and per file, if asked)",
    query=("include_detailed_per_source_metadata",),
)
async def folders_metadata() -> Response:
    detailed = bool_arg("include_detailed_per_source_metadata", False)
    return json_response(await service().folders_metadata(detailed))


@folders.get("/v1/folders/<folder_id>/passages")
@documented("The chunks of a folder's files, as passages", query=PAGING, cursor="passage")
async def folder_passages(folder_id: str) -> Response:
    page = page_args("passage", limit=100, order="desc")
    found = await service().folder_passages(_folder_id(folder_id), page)
    return json_response([render_passage(p) for p in found])


@folders.get("/v1/folders/<folder_id>")
@documented("Retrieve a folder")
async def retrieve_folder(folder_id: str) -> Response:
    return json_response(render_folder(await service().get_folder(_folder_id(folder_id))))


@folders.patch("/v1/folders/<folder_id>")
@documented("Modify a folder", request=UpdateFolder, partial=True)
async def modify_folder(folder_id: str) -> Response:
    folder = await service().update_folder(_folder_id(folder_id), await body())
    return json_response(render_folder(folder))


@folders.delete("/v1/folders/<folder_id>")
@documented("Delete a folder with its files (the agents it was attached to stay)")
async def delete_folder(folder_id: str) -> Response:
    await service().delete_folder(_folder_id(folder_id))
    return json_response(None)


@folders.post("/v1/folders/<folder_id>/upload")
@documented(
    "Upload a file to a folder: stored at once, then parsed, chunked and indexed in the "
    "background (processing_status says where it is)",
    query=("duplicate_handling", "name"),
    upload=True,
)
async def upload_file(folder_id: str) -> Response:
    folder_id = _folder_id(folder_id)
    if not request.mimetype.startswith("multipart/form-data"):
        raise Invalid.field(
            ["header", "Content-Type"], f"expected multipart/form-data, not {request.mimetype}"
        )
    files = await request.files
    upload = files.get("file")
    if upload is None:
        raise Invalid.field(["body", "file"], "Field required", "missing")
    data = upload.read()
    record, skipped = await service().upload_file(
        folder_id,
        upload.filename,
        upload.content_type,
        data,
        name=request.args.get("name"),
        duplicate_handling=request.args.get("duplicate_handling", "suffix"),
    )
    response = json_response(render_file(record))
    if skipped:
        response.headers["X-Upload-Result"] = "skipped"
    return response


@folders.get("/v1/folders/<folder_id>/files")
@documented(
    "List a folder's files, newest first", query=(*PAGING, "include_content"), cursor="file"
)
async def list_files(folder_id: str) -> Response:
    folder_id = _folder_id(folder_id)
    page = page_args("file", limit=1000, order="desc")
    content = bool_arg("include_content", False)
    found = await service().list_files(folder_id, page)
    out = []
    for record in found:
        text = None
        if content:
            _, text = await service().get_file(folder_id, record.id, content=True)
        out.append(render_file(record, text))
    return json_response(out)


@folders.get("/v1/folders/<folder_id>/files/<file_id>")
@documented("Retrieve a file of a folder (with its text, if asked)", query=("include_content",))
async def retrieve_file(folder_id: str, file_id: str) -> Response:
    record, text = await service().get_file(
        _folder_id(folder_id), _file_id(file_id), content=bool_arg("include_content", False)
    )
    return json_response(render_file(record, text))


@folders.delete("/v1/folders/<folder_id>/<file_id>")
@documented("Delete a file of a folder, with its chunks")
async def delete_file(folder_id: str, file_id: str) -> Response:
    await service().delete_file(_folder_id(folder_id), _file_id(file_id))
    return Response(b"", status=204)


@folders.get("/v1/folders/<folder_id>/agents")
@documented("The ids of the agents a folder is attached to", query=PAGING, cursor="agent")
async def folder_agents(folder_id: str) -> Response:
    page = page_args("agent", order="desc")
    return json_response(await service().agents_of_folder(_folder_id(folder_id), page))


@folders.get("/v1/agents/<agent_id>/folders")
@documented("The folders attached to an agent", query=PAGING, cursor="source")
async def agent_folders(agent_id: str) -> Response:
    page = page_args("source", limit=100, order="desc")
    found = await service().folders_of_agent(_agent_id(agent_id), page)
    return json_response([render_folder(f) for f in found])


@folders.patch("/v1/agents/<agent_id>/folders/attach/<folder_id>")
@documented("Attach a folder to an agent: it gets the file tools and the folder's files")
async def attach_folder(agent_id: str, folder_id: str) -> Response:
    await service().attach_folder(_agent_id(agent_id), _folder_id(folder_id), attach=True)
    return json_response(None)


@folders.patch("/v1/agents/<agent_id>/folders/detach/<folder_id>")
@documented("Detach a folder from an agent (with the last folder go the file tools)")
async def detach_folder(agent_id: str, folder_id: str) -> Response:
    await service().attach_folder(_agent_id(agent_id), _folder_id(folder_id), attach=False)
    return json_response(None)


@folders.get("/v1/agents/<agent_id>/files")
@documented(
    "The files an agent holds, open or closed", query=(*PAGING, "cursor", "is_open"),
    cursor="file_agent",
)  # fmt: skip
async def agent_files(agent_id: str) -> Response:
    page = page_args("file_agent", limit=100, order="desc")
    cursor = cursor_arg("cursor", "file_agent")
    if cursor is not None and page.after is None:
        page = type(page)(after=cursor, before=page.before, limit=page.limit, order=page.order)
    is_open = check_is_open(request.args.get("is_open"))
    found, more = await service().agent_files(_agent_id(agent_id), page, is_open)
    files = [render_attachment(held, name) for held, name in found]
    return json_response({
        "files": files,
        "next_cursor": files[-1]["id"] if more and files else None,
        "has_more": more,
    })  # fmt: skip


@folders.patch("/v1/agents/<agent_id>/files/close-all")
@documented("Close every file an agent has open; the names closed")
async def close_all_files(agent_id: str) -> Response:
    return json_response(await service().close_all_files(_agent_id(agent_id)))


@folders.patch("/v1/agents/<agent_id>/files/<file_id>/open")
@documented("Open a whole file for an agent; the names closed to make room")
async def open_file(agent_id: str, file_id: str) -> Response:
    return json_response(await service().open_file(_agent_id(agent_id), _file_id(file_id)))


@folders.patch("/v1/agents/<agent_id>/files/<file_id>/close")
@documented("Close a file for an agent")
async def close_file(agent_id: str, file_id: str) -> Response:
    await service().close_file(_agent_id(agent_id), _file_id(file_id))
    return json_response({"message": f"File id={file_id} successfully closed"})
