"""A reply asked with its token deltas published as the model writes them.

The deltas are Letta's message events (reasoning, assistant text, tool calls and
approval requests), each carrying the id and history place the reply will be stored
at, so a stream can put them where the stored message will show
(service/run_positions.py).
"""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from kelpie_trio.agent.step import HEARTBEAT_TYPES
from kelpie_trio.llm.model_traits import hides_reasoning
from kelpie_trio.llm.types import (
    Completed,
    ContentDelta,
    LlmClient,
    LlmFailure,
    LlmResponse,
    ReasoningDelta,
    ToolCallDelta,
)

if TYPE_CHECKING:
    from kelpie_trio.agent.events import RunEvents
    from kelpie_trio.agent.runs import Run
    from kelpie_trio.models.agents import Agent

__all__ = ["stream_reply"]


async def stream_reply(
    llm: LlmClient,
    request: Any,
    run: Run,
    agent: Agent,
    waits: frozenset[str],
    base: dict[str, Any],
    events: RunEvents,
) -> LlmResponse:
    """The model's reply to `request`, streamed; each delta published on `run`'s events
    with the fields of `base` (id, date, run_id, seq_id). `waits`: the tools whose calls
    wait for the client (shown as approval requests)."""
    content_type = (
        "reasoning_message" if agent.agent_type in HEARTBEAT_TYPES else "assistant_message"
    )
    # A call's id and name come on its first delta only; a client gathers the argument
    # deltas by id (Letta's CLI does), so every delta carries the call's id.
    names: dict[int, str] = {}
    ids: dict[int, str] = {}
    if hides_reasoning(agent.llm_config or {}):  # first, as the stored reply shows it
        hidden = {**base, "message_type": "hidden_reasoning_message", "state": "omitted",
                  "hidden_reasoning": None}  # fmt: skip
        events.publish(run.id, hidden, token=True)
    async with aclosing(llm.stream(request)) as stream:
        async for event in stream:
            if isinstance(event, Completed):
                return event.response
            if isinstance(event, ReasoningDelta) and event.text:
                delta = {**base, "message_type": "reasoning_message",
                         "source": "reasoner_model", "reasoning": event.text}  # fmt: skip
                events.publish(run.id, delta, token=True)
            elif isinstance(event, ContentDelta) and event.text:
                field = "reasoning" if content_type == "reasoning_message" else "content"
                delta = {**base, "message_type": content_type, field: event.text}
                events.publish(run.id, delta, token=True)
            elif isinstance(event, ToolCallDelta):
                if event.name:
                    names[event.index] = event.name
                if event.id:
                    ids[event.index] = event.id
                name = names.get(event.index, "")
                if run.use_assistant_message and name == run.assistant_message_tool_name:
                    continue  # shown whole, as the assistant message, once stored
                call_id = ids.get(event.index)
                if call_id is None:
                    continue  # nothing a client could file it under; the stored call shows
                wire = {"name": event.name, "arguments": event.arguments,
                        "tool_call_id": call_id}  # fmt: skip
                kind = "approval_request_message" if name in waits else "tool_call_message"
                delta = {**base, "message_type": kind, "tool_call": wire, "tool_calls": [wire]}
                events.publish(run.id, delta, token=True)
    raise LlmFailure("the stream ended without a reply")
