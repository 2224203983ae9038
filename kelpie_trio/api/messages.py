"""/v1/agents/{id}/messages: talk to an agent, read its history (Letta's client.agents.messages)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import orjson
from quart import Blueprint, Response, make_response, request

from kelpie_trio.api.agents import render_agent
from kelpie_trio.api.common import (
    body,
    bool_arg,
    check_id,
    json_response,
    optional_body,
    page_args,
    service,
)
from kelpie_trio.api.spec import documented
from kelpie_trio.errors import Invalid, NotFound
from kelpie_trio.service.send_request import CancelRequest, SendRequest

messages = Blueprint("messages", __name__)


def idempotency_key() -> str | None:
    """The client's key for a send: a retry with the same key joins the first turn."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise Invalid.field(["header", "Idempotency-Key"], "must be 1 to 255 characters")
    return key


@messages.post("/v1/agents/<agent_id>/messages")
@documented(
    "Send messages to an agent: a LettaResponse, or SSE with `streaming: true`",
    request=SendRequest,
)
async def send_message(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    payload = await body()
    key = idempotency_key()
    if isinstance(payload, dict) and payload.get("streaming") is True:
        return await sse_response(
            await service().open_stream(agent_id, payload, idempotency_key=key)
        )
    return json_response(await service().send_message(agent_id, payload, idempotency_key=key))


@messages.post("/v1/agents/<agent_id>/messages/stream")
@documented("Send messages and read the reply as server-sent events", request=SendRequest)
async def stream_message(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    key = idempotency_key()
    return await sse_response(
        await service().open_stream(agent_id, await body(), idempotency_key=key)
    )


@messages.post("/v1/agents/<agent_id>/messages/async")
@documented("Start a turn as a run and answer at once with the run", request=SendRequest)
async def send_async(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    key = idempotency_key()
    return json_response(await service().send_async(agent_id, await body(), idempotency_key=key))


@messages.post("/v1/agents/<agent_id>/messages/cancel")
@documented(
    "Cancel the agent's running turns (all, or the `run_ids` given)",
    request=CancelRequest,
    body_optional=True,
)
async def cancel(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    return json_response(await service().cancel_runs(agent_id, await optional_body()))


async def sse_response(events: AsyncIterator[dict]) -> Response:
    """The turn's events as SSE, then [DONE]. The turn itself runs in the background
    (see `MessageCases.open_stream`), so a client that hangs up cancels nothing. An
    event at a position of its run's stream (service/run_stream.py) carries it in an
    `id:` line too, as SSE means it."""

    async def sse() -> AsyncIterator[bytes]:
        async with aclosing(events):
            async for event in events:
                seq = event.get("seq_id")
                head = b""
                if isinstance(seq, int) and event.get("message_type") != "ping":
                    head = b"id: %d\n" % seq
                yield head + b"data: " + orjson.dumps(event) + b"\n\n"
        yield b"data: [DONE]\n\n"

    response = await make_response(
        sse(), 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    response.timeout = None  # Quart would cut a stream at 60 s otherwise
    return response


@messages.get("/v1/agents/<agent_id>/messages")
@documented(
    "List an agent's messages: at most `limit` items, stored messages kept whole",
    query=("after", "before", "limit", "order", "use_assistant_message", "include_err",
           "conversation_id"),
    cursor="message",
)  # fmt: skip
async def list_messages(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    use_assistant = bool_arg("use_assistant_message", True)
    bool_arg("include_err", False)  # no stored message is an error one: nothing to filter
    # As Letta: every conversation of the agent when none is named, its default one for
    # "default" (or the agent's id), else the one named.
    thread = agent_id
    conversation_id = request.args.get("conversation_id")
    if conversation_id not in (None, "default", agent_id):
        named = await service().resolve(conversation_id)
        if named.agent_id != agent_id:
            raise NotFound("Conversation", conversation_id)
        thread = named.key
    found = await service().list_messages(
        agent_id, page_args("message", limit=100, order="desc"),  # Letta's defaults
        use_assistant_message=use_assistant, thread=thread,
        every_thread=conversation_id is None,
    )  # fmt: skip
    return json_response(found)


@messages.patch("/v1/agents/<agent_id>/reset-messages")
@documented("Forget an agent's message history (its memory stays)")
async def reset_messages(agent_id: str) -> Response:
    agent_id = check_id(agent_id, "agent", "agent_id")
    await service().reset_messages(agent_id)
    return json_response(render_agent(await service().get_agent(agent_id)))
