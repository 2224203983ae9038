"""/v1/agents/{id}/archival-memory: an agent's archival passages (Letta's client.agents.passages).

Insert answers a list (long text becomes several passages), list answers a
plain list (the SDK does not page it, but `after`/`before`/`limit`/`ascending`
are honoured), search answers `{count, results}`.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from kelpie_trio.api.common import (
    body,
    bool_arg,
    check_id,
    cursor_arg,
    int_arg,
    json_response,
    service,
)
from kelpie_trio.api.spec import documented
from kelpie_trio.errors import Invalid
from kelpie_trio.models.convert import iso
from kelpie_trio.models.passages import CreateArchivalMemory, Passage, SearchResult
from kelpie_trio.service import MAX_PAGE, Page

passages = Blueprint("passages", __name__)

_DEFAULT_LIMIT = 100  # Letta's default for this route


def render_passage(passage: Passage) -> dict[str, Any]:
    """Letta's Passage: its schema forbids other fields, so the owning agent stays internal."""
    return {
        "id": passage.id,
        "text": passage.text,
        "archive_id": passage.archive_id,
        "tags": passage.tags,
        "metadata": passage.metadata,
        "embedding": passage.embedding,
        "embedding_config": passage.embedding_config,
        "created_at": iso(passage.created_at),
        "updated_at": iso(passage.updated_at),
        "is_deleted": False,
        "organization_id": None,
        "source_id": passage.source_id,
        "file_id": passage.file_id,
        "file_name": passage.file_name,
        "created_by_id": None,
        "last_updated_by_id": None,
    }


def render_result(result: SearchResult) -> dict[str, Any]:
    passage = result.passage
    return {
        "id": passage.id,
        "content": passage.text,
        "timestamp": result.timestamp,
        "tags": passage.tags,
    }


def _agent_id(agent_id: str) -> str:
    return check_id(agent_id, "agent", "agent_id")


@passages.post("/v1/agents/<agent_id>/archival-memory")
@passages.post("/v1/agents/<agent_id>/archival-memory/")
@documented("Insert into archival memory: the passages made", request=CreateArchivalMemory)
async def create_passage(agent_id: str) -> Response:
    created = await service().create_passages(_agent_id(agent_id), await body())
    return json_response([render_passage(p) for p in created])


@passages.get("/v1/agents/<agent_id>/archival-memory")
@passages.get("/v1/agents/<agent_id>/archival-memory/")
@documented(
    "List archival passages",
    query=("after", "before", "limit", "ascending", "search"),
    cursor="passage",
)
async def list_passages(agent_id: str) -> Response:
    agent_id = _agent_id(agent_id)
    args = request.args
    page = Page(
        after=cursor_arg("after", "passage"),
        before=cursor_arg("before", "passage"),
        limit=int_arg("limit", low=1, high=MAX_PAGE) or _DEFAULT_LIMIT,
        order="asc" if bool_arg("ascending", True) else "desc",
    )
    found = await service().list_passages(agent_id, page, search=args.get("search") or None)
    return json_response([render_passage(p) for p in found])


@passages.get("/v1/agents/<agent_id>/archival-memory/search")
@documented(
    "Search archival memory: {count, results}",
    query=("query", "tags", "tag_match_mode", "top_k", "start_datetime", "end_datetime"),
)
async def search_passages(agent_id: str) -> Response:
    agent_id = _agent_id(agent_id)
    args = request.args
    query = args.get("query")
    if query is None:
        raise Invalid.field(["query", "query"], "Field required", "missing")
    results = await service().search_passages(
        agent_id,
        query,
        tags=args.getlist("tags") or None,
        tag_match_mode=args.get("tag_match_mode", "any"),
        top_k=int_arg("top_k", low=1),
        start_datetime=args.get("start_datetime"),
        end_datetime=args.get("end_datetime"),
    )
    return json_response({"count": len(results), "results": [render_result(r) for r in results]})


@passages.delete("/v1/agents/<agent_id>/archival-memory/<memory_id>")
@documented("Delete an archival passage")
async def delete_passage(agent_id: str, memory_id: str) -> Response:
    agent_id = _agent_id(agent_id)
    memory_id = check_id(memory_id, "passage", "memory_id")
    await service().delete_passage(agent_id, memory_id)
    return json_response({"message": f"Memory id={memory_id} successfully deleted"})
