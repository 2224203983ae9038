"""/v1/runs: turns as runs (Letta's client.runs): status, messages, usage."""

from __future__ import annotations

from quart import Blueprint, Response, request

from kelpie_trio.api.common import (
    body,
    bool_arg,
    check_id,
    is_id,
    json_response,
    optional_body,
    page_args,
    service,
)
from kelpie_trio.api.messages import sse_response
from kelpie_trio.api.spec import RUN_STATUSES, documented
from kelpie_trio.errors import Invalid
from kelpie_trio.service.messages import TransferRequest
from kelpie_trio.service.run_stream import RetrieveStreamRequest

runs = Blueprint("runs", __name__)

PAGING = ("after", "before", "limit", "order")
STATUSES = frozenset(RUN_STATUSES)


def _run_id(value: str) -> str:
    return check_id(value, "run", "run_id")


@runs.get("/v1/runs/")
@runs.get("/v1/runs")
@documented(
    "List runs, oldest first",
    query=(*PAGING, "agent_id", "conversation_id", "statuses", "active"),
    cursor="run",
)
async def list_runs() -> Response:
    agent_id = request.args.get("agent_id")
    if agent_id is not None:
        check_id(agent_id, "agent", "agent_id")
    statuses = [s for raw in request.args.getlist("statuses") for s in raw.split(",") if s]
    unknown = sorted(set(statuses) - STATUSES)
    if unknown:
        raise Invalid.field(["query", "statuses"], f"unknown run status {unknown[0]!r}")
    active = bool_arg("active", False)
    # A conversation's runs; `default` (with agent_id) the agent's default conversation's.
    conversation_id = request.args.get("conversation_id")
    found = await service().list_runs(
        page_args("run"), agent_id=agent_id, statuses=statuses or None, active=active,
        conversation_id=conversation_id,
    )  # fmt: skip
    return json_response(found)


@runs.get("/v1/runs/<run_id>")
@documented("A run: its status and stop reason")
async def get_run(run_id: str) -> Response:
    return json_response(await service().get_run(_run_id(run_id)))


@runs.delete("/v1/runs/<run_id>")
@documented("Delete a finished run's record (its messages stay in the history)")
async def delete_run(run_id: str) -> Response:
    await service().delete_run(_run_id(run_id))
    return json_response(None)


@runs.get("/v1/runs/<run_id>/messages")
@documented("The messages a run produced, its input first", query=PAGING, cursor="message")
async def run_messages(run_id: str) -> Response:
    return json_response(await service().run_messages(_run_id(run_id), page_args("message")))


@runs.post("/v1/runs/<run_id>/stream")
@documented(
    "A background run's events as SSE, from after position `starting_after` (a `seq_id` "
    "it sent) to its end, on any node",
    request=RetrieveStreamRequest,
    body_optional=True,
)
async def retrieve_stream(run_id: str) -> Response:
    events = await service().retrieve_run_stream(_run_id(run_id), await optional_body())
    return await sse_response(events)


@runs.get("/v1/runs/<run_id>/usage")
@documented("A run's token usage")
async def run_usage(run_id: str) -> Response:
    return json_response(await service().run_usage(_run_id(run_id)))


@runs.get("/v1/agents/<agent_id>/sessions")
@runs.get("/v1/agents/<agent_id>/sessions/")
@documented("An agent's sessions (its runs) with their checkpoints", query=PAGING, cursor="run")
async def list_sessions(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    return json_response(await service().list_sessions(agent_id, page_args("run")))


@runs.get("/v1/agents/<agent_id>/sessions/<session_id>")
@documented("One session: its status and checkpoint")
async def get_session(agent_id: str, session_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    session_id = check_id(session_id, "run", "session_id")
    return json_response(await service().get_session(agent_id, session_id))


@runs.post("/v1/agents/<agent_id>/sessions/<session_id>/transfer")
@documented(
    "Move an unfinished session to another agent, which goes on from its checkpoint",
    request=TransferRequest,
)
async def transfer_session(agent_id: str, session_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    session_id = check_id(session_id, "run", "session_id")
    payload = await body()
    target = payload.get("target_agent_id") if isinstance(payload, dict) else None
    if isinstance(target, str) and not is_id(target, "agent"):
        raise Invalid.field(["body", "target_agent_id"], "expected an id of the form agent-<uuid4>")
    return json_response(await service().transfer_session(agent_id, session_id, payload))
