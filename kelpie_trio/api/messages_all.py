"""/v1/messages/: messages across every agent (Letta's client.messages list and retrieve).

`POST /v1/messages/search` is Letta Cloud's (api/cloud.py), as Letta's own server says.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from kelpie_trio.api.common import check_id, json_response, page_args, service
from kelpie_trio.api.spec import MESSAGE_TYPES, documented
from kelpie_trio.errors import Invalid

PAGING = ("after", "before", "limit", "order")

messages_all = Blueprint("messages_all", __name__)


@messages_all.get("/v1/messages/")
@messages_all.get("/v1/messages")
@documented(
    "Messages of every agent, newest first; `limit` counts stored messages",
    query=(*PAGING, "conversation_id", "include_return_message_types"),
    cursor="message",
)
async def list_all_messages() -> Response:
    types = [t for raw in request.args.getlist("include_return_message_types")
             for t in raw.split(",") if t]  # fmt: skip
    unknown = sorted(set(types) - set(MESSAGE_TYPES))
    if unknown:
        raise Invalid.field(
            ["query", "include_return_message_types"],
            f"unknown message type {unknown[0]!r}",
            "enum",
        )
    # As in Letta, a conversation that does not exist has no messages: an empty page.
    conversation_id = request.args.get("conversation_id")
    found = await service().list_all_messages(
        page_args("message", limit=100, order="desc"),
        message_types=types or None,
        conversation_id=conversation_id,
    )
    return json_response(found)


@messages_all.get("/v1/messages/<message_id>")
@documented("A message, as the items it shows as")
async def retrieve_message(message_id: str) -> Response:
    message_id = check_id(message_id, "message", "message_id")
    return json_response(await service().retrieve_message(message_id))
