"""/v1/conversations: an agent's threads (Letta's client.conversations and
client.conversations.messages). The use cases: service/conversations.py; sending goes
through the same service calls as /v1/agents/{id}/messages, into the thread's actor."""

from __future__ import annotations

from quart import Blueprint, Response, request

from kelpie_trio.api.common import (
    body,
    bool_arg,
    check_id,
    int_arg,
    is_id,
    json_response,
    optional_body,
    page_args,
    service,
)
from kelpie_trio.api.messages import idempotency_key, sse_response
from kelpie_trio.api.spec import documented
from kelpie_trio.errors import Invalid
from kelpie_trio.service import MAX_PAGE, send_options
from kelpie_trio.service.context_overview import CompactionRequest, CompactionResponse
from kelpie_trio.service.conversations import CreateConversation, UpdateConversation
from kelpie_trio.service.run_stream import RetrieveStreamRequest
from kelpie_trio.service.send_request import SendRequest

conversations = Blueprint("conversations", __name__)

ORDER_BY = ("created_at", "last_run_completion", "last_message_at")


def _conversation_id(value: str) -> str:
    """`conv-<uuid>`, `default` (with the agent's id beside it) or an agent's id."""
    if value == "default" or is_id(value, "conv") or is_id(value, "agent"):
        return value
    raise Invalid.field(
        ["path", "conversation_id"],
        "expected 'default', a conversation id (conv-<uuid4>) or an agent id (agent-<uuid4>)",
    )


def _agent_arg() -> str | None:
    agent_id = request.args.get("agent_id")
    return None if agent_id is None else check_id(agent_id, "agent", "agent_id")


@conversations.post("/v1/conversations/")
@conversations.post("/v1/conversations")
@documented(
    "Create a conversation for an agent",
    request=CreateConversation,
    query=("agent_id!",),
    body_optional=True,
)
async def create_conversation() -> Response:
    agent_id = _agent_arg()
    return json_response(await service().create_conversation(agent_id, await optional_body()))


@conversations.get("/v1/conversations/")
@conversations.get("/v1/conversations")
@documented(
    "List conversations (of one agent, or all), newest first",
    query=("agent_id", "limit", "after", "summary_search", "order", "order_by"),
)
async def list_conversations() -> Response:
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise Invalid.field(["query", "order"], "order must be 'asc' or 'desc'", "enum")
    order_by = request.args.get("order_by", "created_at")
    if order_by not in ORDER_BY:
        raise Invalid.field(["query", "order_by"], f"order_by is one of {ORDER_BY}", "enum")
    after = request.args.get("after")
    found = await service().list_conversations(
        agent_id=_agent_arg(),
        limit=int_arg("limit", low=1, high=MAX_PAGE) or 50,
        after=after,
        summary_search=request.args.get("summary_search"),
        order=order,  # type: ignore[arg-type]
        order_by=order_by,
    )
    return json_response(found)


@conversations.get("/v1/conversations/<conversation_id>")
@documented("Retrieve a conversation")
async def retrieve_conversation(conversation_id: str) -> Response:
    return json_response(await service().get_conversation(_conversation_id(conversation_id)))


@conversations.patch("/v1/conversations/<conversation_id>")
@documented("Update a conversation", request=UpdateConversation, partial=True)
async def update_conversation(conversation_id: str) -> Response:
    conversation_id = _conversation_id(conversation_id)
    return json_response(await service().update_conversation(conversation_id, await body()))


@conversations.delete("/v1/conversations/<conversation_id>")
@documented("Delete a conversation with its history")
async def delete_conversation(conversation_id: str) -> Response:
    await service().delete_conversation(_conversation_id(conversation_id))
    return json_response(None)


@conversations.post("/v1/conversations/<conversation_id>/fork")
@documented("Fork a conversation (or the agent's default one) into a new one", query=("agent_id",))
async def fork_conversation(conversation_id: str) -> Response:
    conversation_id = _conversation_id(conversation_id)
    return json_response(await service().fork_conversation(conversation_id, _agent_arg()))


@conversations.post("/v1/conversations/<conversation_id>/cancel")
@documented("Cancel a conversation's unfinished runs", query=("agent_id",))
async def cancel_conversation(conversation_id: str) -> Response:
    conversation_id = _conversation_id(conversation_id)
    return json_response(await service().cancel_conversation(conversation_id, _agent_arg()))


@conversations.post("/v1/conversations/<conversation_id>/recompile")
@documented(
    "The system prompt as the conversation's next step compiles it",
    query=("dry_run",),
    body_optional=True,
)
async def recompile_conversation(conversation_id: str) -> Response:
    conversation_id = _conversation_id(conversation_id)
    bool_arg("dry_run", False)  # nothing is stored either way: every step compiles it
    given = await optional_body() or {}
    agent_id = given.get("agent_id")
    if given.get("compaction_settings") is not None:
        raise Invalid.field(
            ["body", "compaction_settings"], "compaction settings are not taken by recompile"
        )
    return json_response(await service().recompile_conversation(conversation_id, agent_id))


@conversations.post("/v1/conversations/<conversation_id>/compact")
@documented(
    "Summarize the conversation's oldest in-context messages now, as an overflow would",
    request=CompactionRequest,
    response=CompactionResponse,
    body_optional=True,
)
async def compact_conversation(conversation_id: str) -> Response:
    conversation_id = _conversation_id(conversation_id)
    given = await optional_body()
    agent_id = (given or {}).get("agent_id")
    if agent_id is not None and not isinstance(agent_id, str):
        raise Invalid.field(["body", "agent_id"], "agent_id is a string")
    thread = await service().resolve(conversation_id, agent_id)
    compacted = await service().compact_messages(thread.agent_id, given, actor_key=thread.key)
    return json_response(compacted)


@conversations.get("/v1/conversations/<conversation_id>/messages")
@documented(
    "List a conversation's messages, newest first",
    query=("agent_id", "after", "before", "limit", "order", "order_by", "include_err",
           "include_return_message_types"),
    cursor="message",
)  # fmt: skip
async def list_conversation_messages(conversation_id: str) -> Response:
    conversation_id = _conversation_id(conversation_id)
    if request.args.get("order_by", "created_at") not in ORDER_BY:  # a message's one time
        raise Invalid.field(["query", "order_by"], f"order_by is one of {ORDER_BY}", "enum")
    if request.args.get("group_id") is not None:  # Letta's; not in our API document
        raise Invalid.field(["query", "group_id"], "agent groups are not supported")
    bool_arg("include_err", False)  # no stored message is an error one: nothing to filter
    types = request.args.getlist("include_return_message_types") or None
    shown = send_options.check_return_types(types)
    thread = await service().resolve(conversation_id, _agent_arg())
    found = await service().list_messages(
        thread.agent_id,
        page_args("message", limit=100, order="desc"),
        thread=thread.key,
        types=shown,
    )
    return json_response(found)


@conversations.post("/v1/conversations/<conversation_id>/stream")
@documented(
    "Resume the stream of a conversation's background run (by run_id, otid, or its latest)",
    request=RetrieveStreamRequest,
    body_optional=True,
)
async def resume_conversation_stream(conversation_id: str) -> Response:
    conversation_id = _conversation_id(conversation_id)
    body = await optional_body()
    return await sse_response(await service().conversation_stream(conversation_id, body))


@conversations.post("/v1/conversations/<conversation_id>/messages")
@documented(
    "Send messages into a conversation: SSE by default, a LettaResponse with `streaming: false`",
    request=SendRequest,
)
async def send_conversation_message(conversation_id: str) -> Response:
    conversation_id = _conversation_id(conversation_id)
    payload = await body()
    agent_id = payload.get("agent_id")
    if agent_id is not None and not isinstance(agent_id, str):
        raise Invalid.field(["body", "agent_id"], "agent_id is a string")
    if not payload.get("messages") and payload.get("input") is None:
        raise Invalid.field(["body", "messages"], "Messages must not be empty")
    thread = await service().resolve(conversation_id, agent_id)
    key = idempotency_key()
    send = {"idempotency_key": key, "conversation": thread.conversation}
    if payload.get("streaming", True) is not False:  # Letta streams unless told not to
        events = await service().open_stream(thread.agent_id, payload, **send)
        return await sse_response(events)
    return json_response(await service().send_message(thread.agent_id, payload, **send))
