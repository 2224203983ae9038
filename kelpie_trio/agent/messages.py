"""An agent's history: the stored Message, and the Letta message shapes the API shows.

One stored message can show as several Letta messages (an assistant reply with
inner thoughts and a tool call is a reasoning_message and a tool_call_message),
all sharing the stored message's id, as Letta does.
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.agent.content import ContentPart, letta_content
from kelpie_trio.agent.runs import Answer
from kelpie_trio.models.convert import iso

__all__ = ["Message", "StoredToolCall", "iso", "to_letta_messages"]


@attrs.define(kw_only=True)
class StoredToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it
    # "approval" | "client": the call waited for the client (an approval, or a client-side
    # tool's return); shown in Letta's approval_request_message.
    waits_for: str | None = None


@attrs.define(kw_only=True)
class Message:
    id: str
    agent_id: str
    seq: int  # position in its thread's history
    role: str  # "user" | "assistant" | "tool" | "system" | "approval" (a client's answers)
    content: str | None = None  # user text, assistant text, or a tool's return
    reasoning: str | None = None  # an assistant's inner thoughts beside its tool calls
    # The model reasoned and its API did not show it (OpenAI's reasoning models).
    reasoning_hidden: bool = False
    # Its native reasoning (Anthropic's thinking) and signature, sent back as given.
    thinking: str | None = None
    thinking_signature: str | None = None
    tool_calls: list[StoredToolCall] = attrs.Factory(list)
    tool_call_id: str | None = None  # role "tool": the call this answers
    tool_name: str | None = None
    tool_status: str | None = None  # role "tool": "success" | "error"
    tool_stdout: list[str] | None = None  # role "tool", a custom tool's: its prints
    tool_stderr: list[str] | None = None
    otid: str | None = None
    run_id: str | None = None
    step: int = 0
    created_at: float = 0.0
    approvals: list[Answer] | None = None  # role "approval": the answers, per call
    approval_request_id: str | None = None  # role "approval": Letta's legacy field, as sent
    # role "user" with images: the content as sent, text and images in order (`content`
    # keeps its text, for the window, search and summaries).
    parts: list[ContentPart] | None = None
    conversation_id: str | None = None  # None: the agent's default conversation
    # role "assistant": whether its text went out as token deltas before it was stored
    # (None: stored before this was recorded). A reply that did not can never be the
    # one whose start a stream showed (service/run_positions.py).
    streamed: bool | None = None

    @property
    def thread(self) -> str:
        """The history it is in (agent/conversations.py)."""
        return self.conversation_id or self.agent_id


def to_letta_messages(
    message: Message,
    *,
    use_assistant_message: bool = True,
    assistant_tool: str = "send_message",
    assistant_kwarg: str = "message",
) -> list[dict[str, Any]]:
    """The Letta messages one stored message shows as (LettaMessage union members)."""
    base = {
        "id": message.id,
        "date": iso(message.created_at),
        "name": None,
        "otid": message.otid,
        "sender_id": None,
        "step_id": None,
        "is_err": None,
        "seq_id": message.seq,
        "run_id": message.run_id,
    }
    if message.role == "user":
        content = letta_content(message.parts) if message.parts else message.content or ""
        return [{**base, "message_type": "user_message", "content": content}]
    if message.role == "system":
        return [{**base, "message_type": "system_message", "content": message.content or ""}]
    if message.role == "approval":
        return [_approval_response(message, base)]
    if message.role == "tool":
        returned = {
            "tool_return": message.content or "",
            "status": message.tool_status or "success",
            "tool_call_id": message.tool_call_id or "",
            "stdout": message.tool_stdout,
            "stderr": message.tool_stderr,
        }
        return [
            {
                **base,
                "message_type": "tool_return_message",
                **returned,
                "tool_returns": [{"type": "tool", **returned}],
            }
        ]
    shown: list[dict[str, Any]] = []
    waiting = [c for c in message.tool_calls if c.waits_for is not None]
    if message.thinking:
        shown.append({**base, "message_type": "reasoning_message", "source": "reasoner_model",
                      "reasoning": message.thinking,
                      "signature": message.thinking_signature})  # fmt: skip
    if message.reasoning_hidden:
        shown.append({**base, "message_type": "hidden_reasoning_message", "state": "omitted",
                      "hidden_reasoning": None})  # fmt: skip
    if message.reasoning:
        shown.append(
            {
                **base,
                "message_type": "reasoning_message",
                "source": "non_reasoner_model",
                "reasoning": message.reasoning,
                "signature": None,
            }
        )
    for call in message.tool_calls:
        if call.waits_for is not None:
            continue  # in the approval request below
        if use_assistant_message and call.name == assistant_tool:
            shown.append(
                {
                    **base,
                    "message_type": "assistant_message",
                    "content": _kwarg(call.arguments, assistant_kwarg),
                }
            )
            continue
        wire = {"name": call.name, "arguments": call.arguments, "tool_call_id": call.id}
        shown.append(
            {**base, "message_type": "tool_call_message", "tool_call": wire, "tool_calls": [wire]}
        )
    if message.content and not message.tool_calls:
        shown.append({**base, "message_type": "assistant_message", "content": message.content})
    if waiting:
        wires = [{"name": c.name, "arguments": c.arguments, "tool_call_id": c.id} for c in waiting]
        shown.append(
            {**base, "message_type": "approval_request_message", "tool_call": wires[0],
             "tool_calls": wires}
        )  # fmt: skip
    return shown


def _approval_response(message: Message, base: dict[str, Any]) -> dict[str, Any]:
    """Letta's approval_response_message: the answers, and the first approval's fields
    again in the legacy places."""
    answers = []
    for a in message.approvals or []:
        if a.kind == "tool":
            answers.append({"type": "tool", "tool_call_id": a.tool_call_id, "status": a.status,
                            "tool_return": a.tool_return or "", "stdout": a.stdout,
                            "stderr": a.stderr})  # fmt: skip
        else:
            answers.append({"type": "approval", "tool_call_id": a.tool_call_id,
                            "approve": a.approve, "reason": a.reason})  # fmt: skip
    first = next((a for a in message.approvals or [] if a.kind == "approval"), None)
    return {
        **base,
        "message_type": "approval_response_message",
        "approvals": answers,
        "approve": first.approve if first else None,
        "approval_request_id": first.tool_call_id if first else message.approval_request_id,
        "reason": first.reason if first else None,
    }


def _kwarg(arguments: str, name: str) -> str:
    import orjson

    try:
        value = orjson.loads(arguments).get(name, "")
    except (orjson.JSONDecodeError, AttributeError):
        return arguments
    return value if isinstance(value, str) else str(value)
