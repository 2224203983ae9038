"""/v1/agents/{id}/messages: talk to an agent, read its history (Letta's client.agents.messages)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from quart import Blueprint, Response, make_response, request

from kelpie_trio.api.agents import render_agent
from kelpie_trio.api.common import body, check_id, json_response, page_args, service
from kelpie_trio.api.spec import documented
from kelpie_trio.service.messages import SendRequest

messages = Blueprint("messages", __name__)


@messages.post("/v1/agents/<agent_id>/messages")
@documented(
    "Send messages to an agent: a LettaResponse, or SSE with `streaming: true`",
    request=SendRequest,
)
async def send_message(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    payload = await body()
    reply = await service().send_message(agent_id, payload)
    if isinstance(payload, dict) and payload.get("streaming"):
        return await _stream(reply)
    return json_response(reply)


@messages.post("/v1/agents/<agent_id>/messages/stream")
@documented("Send messages and read the reply as server-sent events", request=SendRequest)
async def stream_message(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    return await _stream(await service().send_message(agent_id, await body()))


async def _stream(reply: dict) -> Response:
    """The turn's messages as SSE events, then its stop reason, usage and [DONE].

    The turn runs in the agent's actor and is complete (and stored) before the
    first event, so a client that hangs up cancels nothing; events carry whole
    messages, not token deltas (`stream_tokens` is accepted and reads the same).
    """

    async def events() -> AsyncIterator[bytes]:
        for message in [*reply["messages"], reply["stop_reason"], reply["usage"]]:
            yield b"data: " + orjson.dumps(message) + b"\n\n"
        yield b"data: [DONE]\n\n"

    response = await make_response(
        events(), 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    response.timeout = None  # Quart would cut a stream at 60 s otherwise
    return response


@messages.get("/v1/agents/<agent_id>/messages")
@documented("List an agent's messages", query=("after", "before", "limit", "order"))
async def list_messages(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    use_assistant = request.args.get("use_assistant_message", "true").lower() != "false"
    found = await service().list_messages(
        agent_id, page_args(), use_assistant_message=use_assistant
    )
    return json_response(found)


@messages.patch("/v1/agents/<agent_id>/reset-messages")
@documented("Forget an agent's message history (its memory stays)")
async def reset_messages(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    await service().reset_messages(agent_id)
    return json_response(render_agent(await service().get_agent(agent_id)))
