"""An agent's context window: Letta's overview of it (`GET /v1/agents/{agent_id}/context`,
deprecated in Letta but what its CLI calls) and compaction on demand (`POST
/v1/agents/{agent_id}/summarize`, the SDK's `agents.messages.compact`)."""

from __future__ import annotations

from quart import Blueprint, Response, request

from kelpie_trio.api.common import check_id, json_response, optional_body, service
from kelpie_trio.api.spec import documented
from kelpie_trio.service.context_overview import CompactionRequest, CompactionResponse

context = Blueprint("context", __name__)


@context.get("/v1/agents/<agent_id>/context")
@documented("The agent's context window: what its next step sends, counted by section",
            query=("conversation_id",))  # fmt: skip
async def retrieve_context_window(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    conversation = request.args.get("conversation_id")
    return json_response(await service().context_overview(agent_id, conversation))


@context.post("/v1/agents/<agent_id>/summarize")
@documented(
    "Summarize the oldest in-context messages now, as an overflow would",
    request=CompactionRequest,
    response=CompactionResponse,
    body_optional=True,
)
async def summarize_messages(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    # The body may be left out (Letta's is an optional CompactionRequest); JSON null is
    # refused as on the other routes whose body is optional, as /openapi.json says.
    return json_response(await service().compact_messages(agent_id, await optional_body()))
