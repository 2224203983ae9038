"""One agent step as plain functions: the prompt, the request, and what the reply means.

Given the agent (system text, blocks, tools) and its history, `build_request`
makes the LLM request; `interpret` turns the LLM's reply into the assistant
message to store, the tool calls to run, and whether the turn goes on. No I/O
here: the actor awaits the LLM and the store around these.

Continuation follows the agent type: memgpt-style agents go on only when a
tool call asks for it (`request_heartbeat`) or a tool failed; letta_v1_agent
goes on after any tool call and ends on a reply of plain text. Either way the
turn ends at `max_steps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import orjson

from kelpie_trio.agent.messages import Message, StoredToolCall
from kelpie_trio.llm.types import ChatMessage, LlmRequest, LlmResponse, ToolCall, ToolSchema

__all__ = [
    "Interpretation",
    "build_request",
    "compile_system",
    "interpret",
    "parse_calls",
    "tool_schemas",
]

HEARTBEAT_TYPES = frozenset({"memgpt_agent", "memgpt_v2_agent", "sleeptime_agent"})
HEARTBEAT_PARAM = {
    "type": "boolean",
    "description": "Request an immediate follow-up step after this tool runs.",
}


def compile_system(system: str, blocks: list[Any]) -> str:
    """The system prompt: the agent's system text, then its core memory, block by block."""
    parts = [system.rstrip(), "", "<memory_blocks>"]
    for block in blocks:
        parts.append(f"<{block.label}>")
        if block.description:
            parts.append(f"<description>{block.description}</description>")
        parts.append(
            f"<metadata>chars_current={len(block.value)} chars_limit={block.limit}</metadata>"
        )
        parts.append(f"<value>\n{block.value}\n</value>")
        parts.append(f"</{block.label}>")
    parts.append("</memory_blocks>")
    return "\n".join(parts)


def tool_schemas(tools: list[Any], agent_type: str) -> tuple[ToolSchema, ...]:
    out = []
    for tool in tools:
        schema = tool.json_schema or {}
        parameters = dict(schema.get("parameters") or {"type": "object", "properties": {}})
        if agent_type in HEARTBEAT_TYPES:
            properties = dict(parameters.get("properties") or {})
            properties["request_heartbeat"] = HEARTBEAT_PARAM
            parameters["properties"] = properties
        out.append(ToolSchema(tool.name, tool.description or "", parameters))
    return tuple(out)


def _chat(message: Message) -> ChatMessage:
    if message.role == "tool":
        return ChatMessage("tool", message.content, tool_call_id=message.tool_call_id)
    if message.role == "assistant":
        calls = tuple(ToolCall(c.id, c.name, c.arguments) for c in message.tool_calls)
        return ChatMessage("assistant", message.content or message.reasoning, tool_calls=calls)
    return ChatMessage(message.role, message.content)  # type: ignore[arg-type]


def build_request(
    *,
    model: str,
    system: str,
    blocks: list[Any],
    tools: list[Any],
    agent_type: str,
    history: list[Message],
    max_tokens: int | None = None,
    summary: ChatMessage | None = None,
) -> LlmRequest:
    """The request for one step: the system prompt with core memory, the summary of
    evicted history if there is one (context.py), then the in-context history."""
    head = (ChatMessage("system", compile_system(system, blocks)),)
    if summary is not None:
        head += (summary,)
    messages = (*head, *map(_chat, history))
    return LlmRequest(
        model=model,
        messages=messages,
        tools=tool_schemas(tools, agent_type),
        max_tokens=max_tokens,
    )


@attrs.frozen
class Interpretation:
    assistant: Message  # what to store for the reply
    calls: list[tuple[StoredToolCall, dict[str, Any] | None]]  # parsed arguments, None if bad
    wants_heartbeat: bool  # some call asked for a follow-up step


def parse_calls(
    calls: Sequence[StoredToolCall],
) -> tuple[list[tuple[StoredToolCall, dict[str, Any] | None]], bool]:
    """Each call with its parsed arguments (None if not a JSON object), and whether
    any asked for a heartbeat (the `request_heartbeat` argument is taken out)."""
    parsed = []
    heartbeat = False
    for call in calls:
        try:
            args = orjson.loads(call.arguments or "{}")
            if not isinstance(args, dict):
                args = None
        except orjson.JSONDecodeError:
            args = None
        if args is not None and args.pop("request_heartbeat", False) is True:
            heartbeat = True
        parsed.append((call, args))
    return parsed, heartbeat


def interpret(reply: LlmResponse, *, message_id: str, agent_id: str, seq: int, step: int,
              created_at: float, run_id: str | None) -> Interpretation:  # fmt: skip
    stored = [
        StoredToolCall(id=call.id, name=call.name, arguments=call.arguments)
        for call in reply.message.tool_calls
    ]
    calls, heartbeat = parse_calls(stored)
    text = reply.message.content
    assistant = Message(
        id=message_id,
        agent_id=agent_id,
        seq=seq,
        role="assistant",
        content=None if stored else text,
        reasoning=text if stored else None,
        tool_calls=stored,
        run_id=run_id,
        step=step,
        created_at=created_at,
    )
    return Interpretation(assistant, calls, heartbeat)


def continues(
    interpretation: Interpretation, *, agent_type: str, any_tool_failed: bool, terminal: bool
) -> bool:
    """Whether the turn takes another step (before the max_steps bound)."""
    if not interpretation.calls:
        return False
    if agent_type in HEARTBEAT_TYPES:
        return interpretation.wants_heartbeat or any_tool_failed
    return not terminal  # letta_v1: on after tools, unless the tool ends the turn
