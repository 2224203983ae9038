"""Messages: send one to an agent (through the dispatcher, to its one activation), list them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from kelpie_trio.agent.actor import read_history
from kelpie_trio.agent.messages import to_letta_messages
from kelpie_trio.errors import Invalid, NotFound, Unavailable
from kelpie_trio.models import convert
from kelpie_trio.service.common import MAX_PAGE, Page, ServiceBase
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import get_blob

if TYPE_CHECKING:
    from kelpie_trio.nursery.dispatcher import Dispatcher

__all__ = ["MessageCases", "SendRequest"]


@attrs.define
class MessageIn:
    """Letta's MessageCreate (what we use of it)."""

    content: Any
    role: str = "user"
    otid: str | None = None
    type: str | None = "message"


@attrs.define
class SendRequest:
    """Letta's LettaRequest / LettaStreamingRequest (what we use of it)."""

    messages: list[MessageIn] | None = None
    input: Any = None
    max_steps: int = 50
    use_assistant_message: bool = True
    streaming: bool = False
    stream_tokens: bool = False


def _text(content: Any, where: list[str | int]) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise Invalid.field([*where, i], "only text content is supported")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise Invalid.field(where, "content must be a string or a list of text parts")


class MessageCases(ServiceBase):
    dispatcher: Dispatcher | None = None

    async def send_message(self, agent_id: str, body: Any) -> dict[str, Any]:
        async def exists(tr: Transaction) -> bool:
            return await get_blob(tr, keys.AGENTS.pack((agent_id,))) is not None

        if not await self.store.transact(exists):
            raise NotFound("Agent", agent_id)
        request = convert.structure_api(body, SendRequest)
        inputs: list[tuple[str, str | None]] = []
        for i, message in enumerate(request.messages or []):
            if message.role != "user":
                raise Invalid.field(["body", "messages", i, "role"], "only user messages")
            inputs.append(
                (_text(message.content, ["body", "messages", i, "content"]), message.otid)
            )
        if request.input is not None:
            inputs.append((_text(request.input, ["body", "input"]), None))
        if not inputs:
            raise Invalid.field(["body", "messages"], "give at least one message (or input)")
        if not 1 <= request.max_steps <= 1000:
            raise Invalid.field(["body", "max_steps"], "max_steps must be between 1 and 1000")

        if self.dispatcher is None:
            raise Unavailable("this server runs no agents")
        return await self.dispatcher.invoke(
            agent_id,
            {
                "kind": "send",
                "inputs": inputs,
                "max_steps": request.max_steps,
                "use_assistant_message": request.use_assistant_message,
            },
        )

    async def reset_messages(self, agent_id: str) -> None:
        async def exists(tr: Transaction) -> bool:
            return await get_blob(tr, keys.AGENTS.pack((agent_id,))) is not None

        if not await self.store.transact(exists):
            raise NotFound("Agent", agent_id)
        if self.dispatcher is None:
            raise Unavailable("this server runs no agents")
        await self.dispatcher.invoke(agent_id, {"kind": "reset"})

    async def list_messages(
        self, agent_id: str, page: Page, *, use_assistant_message: bool = True
    ) -> list[dict[str, Any]]:
        async def read(tr: Transaction) -> list[Any]:
            if await get_blob(tr, keys.AGENTS.pack((agent_id,))) is None:
                raise NotFound("Agent", agent_id)
            return await read_history(tr, agent_id)

        history = await self.store.transact(read)
        # Paged by stored message, as Letta does: a message that shows as several
        # Letta messages (thoughts and a tool call) sharing its id stays whole.
        if page.order == "desc":
            history.reverse()
        ids = [m.id for m in history]
        if page.after is not None:
            history = history[ids.index(page.after) + 1 :] if page.after in ids else []
        if page.before is not None:
            ids = [m.id for m in history]
            history = history[: ids.index(page.before)] if page.before in ids else []
        return [
            shown
            for stored in history[: min(page.limit or MAX_PAGE, MAX_PAGE)]
            for shown in to_letta_messages(stored, use_assistant_message=use_assistant_message)
        ]
