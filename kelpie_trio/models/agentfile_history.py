"""An agent file's history and archival memory: stored records <-> Letta's file shapes (pure).

Messages: Letta's MessageSchema (letta/schemas/agent_file.py) carries a message's role,
its content as a list of parts, OpenAI-shaped `tool_calls`, `tool_call_id`, `tool_returns`
and `created_at`; the agent's `in_context_message_ids` name the messages in its context
window, the first being its system prompt. Here the system prompt is compiled afresh at
every step and the window is "the history from `AgentContext.start_seq` on", so:

- export writes the compiled system prompt as the first message (what a Letta server
  reading the file expects at the head of the window), then the default conversation's
  whole history; the window is that prompt and the messages from `start_seq` on;
- import leaves out the system prompt heading the window (it is compiled here) and keeps
  every other message in the file's order; the window starts at the earliest message the
  file names in it (a window Letta assembled with gaps comes back whole from there).

An assistant message's text is its inner thoughts when it calls tools and its reply when
it does not, as both servers show it; native reasoning travels as a `reasoning` part.

Passages and archives are not in Letta 0.16.8's format: they travel as `passages` of an
agent (its own archival memory) and a top-level `archives` list (each with its passages,
named by the agents in their `archive_ids`), which Letta's reader ignores. Nor are an agent's
other conversations (Letta exports one conversation at a time, as the agent's messages):
they travel as the agent's `conversations`, each with its messages and window in the same
shapes as the default conversation's, which Letta's reader ignores too.

Message ids are numbered across the whole file (`message-0`, `message-1`, ...), as Letta
numbers every kind of id, so two agents or conversations never share one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import orjson

from kelpie_trio.agent.content import letta_content
from kelpie_trio.agent.context import AgentContext
from kelpie_trio.agent.messages import Message, StoredToolCall
from kelpie_trio.agent.runs import Answer
from kelpie_trio.models.convert import iso
from kelpie_trio.models.passages import Passage

__all__ = [
    "ArchiveSchema",
    "ConversationSchema",
    "MessageSchema",
    "PassageSchema",
    "export_history",
    "export_passage",
    "import_history",
    "import_passage",
    "parse_file_time",
]


@attrs.define(kw_only=True)
class MessageSchema:
    """A message in an agent file (Letta's MessageSchema; fields this server keeps)."""

    id: str
    role: str
    content: Any = None  # a string, or a list of content parts
    type: str | None = "message"
    name: str | None = None
    otid: str | None = None
    sender_id: str | None = None
    batch_item_id: str | None = None
    group_id: str | None = None
    model: str | None = None
    agent_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    tool_returns: list[dict[str, Any]] | None = None
    created_at: str | None = None
    approve: bool | None = None
    approval_request_id: str | None = None
    denial_reason: str | None = None
    approvals: list[dict[str, Any]] | None = None


@attrs.define(kw_only=True)
class PassageSchema:
    """A passage in an agent file: its text and what describes it, not its vector (the
    index embeds it again)."""

    id: str
    text: str
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    created_at: str | None = None


@attrs.define(kw_only=True)
class ArchiveSchema:
    """An archive in an agent file, with its passages; agents name it in `archive_ids`."""

    id: str
    name: str
    description: str | None = None
    embedding_config: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    passages: list[PassageSchema] = attrs.Factory(list)


@attrs.define(kw_only=True)
class ConversationSchema:
    """One of an agent's other conversations (not in Letta's format): its history and
    window, as the agent's `messages` and `in_context_message_ids` carry the default one's."""

    id: str
    summary: str | None = None
    created_at: str | None = None
    messages: list[MessageSchema] = attrs.Factory(list)
    in_context_message_ids: list[str] = attrs.Factory(list)


def _text(text: str | None) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text or "", "signature": None}]


def _export_message(m: Message, file_id: str, agent_file_id: str) -> MessageSchema:
    entry = MessageSchema(
        id=file_id, role=m.role, agent_id=agent_file_id, created_at=iso(m.created_at)
    )
    if m.role == "user" and m.parts:
        entry.content = letta_content(m.parts)
    elif m.role == "assistant":
        parts: list[dict[str, Any]] = []
        if m.thinking:
            parts.append({"type": "reasoning", "is_native": True, "reasoning": m.thinking,
                          "signature": m.thinking_signature})  # fmt: skip
        said = m.reasoning if m.tool_calls else m.content
        if said:
            parts += _text(said)
        entry.content = parts
        entry.tool_calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ] or None
    elif m.role == "tool":
        entry.content = _text(m.content)
        entry.name = m.tool_name
        entry.tool_call_id = m.tool_call_id
        entry.tool_returns = [
            {"tool_call_id": m.tool_call_id, "status": m.tool_status or "success",
             "stdout": m.tool_stdout, "stderr": m.tool_stderr, "func_response": m.content}
        ]  # fmt: skip
    elif m.role == "approval":
        entry.content = []
        entry.approval_request_id = m.approval_request_id
        entry.approvals = [_export_answer(a) for a in m.approvals or []]
    else:
        entry.content = _text(m.content)
    return entry


def _export_answer(answer: Answer) -> dict[str, Any]:
    if answer.kind == "tool":
        # Letta's file keeps a client's tool return as its ToolReturn (`func_response`);
        # `tool_return` is the same text in the API's shape.
        return {"type": "tool", "tool_call_id": answer.tool_call_id,
                "status": answer.status or "success", "tool_return": answer.tool_return or "",
                "func_response": answer.tool_return or "", "stdout": answer.stdout,
                "stderr": answer.stderr}  # fmt: skip
    return {"type": "approval", "tool_call_id": answer.tool_call_id,
            "approve": bool(answer.approve), "reason": answer.reason}  # fmt: skip


def export_history(
    history: list[Message],
    context: AgentContext,
    window: int,
    system_prompt: str,
    *,
    now: float,
    agent_file_id: str = "agent-0",
    first: int = 0,
) -> tuple[list[MessageSchema], list[str]]:
    """The file's `messages` and `in_context_message_ids` for one of an agent's
    conversations: `history` whole, in order; `window` bounds the in-context tail as the
    agent's steps bound it. Ids are numbered from `message-{first}`."""
    system = MessageSchema(
        id=f"message-{first}", role="system", content=_text(system_prompt),
        agent_id=agent_file_id, created_at=iso(now),
    )  # fmt: skip
    entries = [system]
    in_context = [system.id]
    in_window = [m for m in history if m.seq >= context.start_seq][-window:] if window else []
    window_seqs = {m.seq for m in in_window}
    for i, message in enumerate(history, start=1):
        entry = _export_message(message, f"message-{first + i}", agent_file_id)
        entries.append(entry)
        if message.seq in window_seqs:
            in_context.append(entry.id)
    return entries, in_context


# -- import ------------------------------------------------------------------------


def parse_file_time(value: str | None, default: float) -> float:
    """A file's ISO time in epoch seconds (UTC when it names no zone); `default` if none."""
    return _parse_time(value, default)


def _parse_time(value: str | None, default: float) -> float:
    if not value:
        return default
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return default
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [p for p in content if isinstance(p, dict)]
    return []


def _joined(parts: list[dict[str, Any]], kind: str = "text", field: str = "text") -> str | None:
    texts = [str(p.get(field) or "") for p in parts if p.get("type") == kind]
    return "\n".join(texts) if texts else None


def _import_answer(raw: dict[str, Any]) -> Answer | None:
    call_id = raw.get("tool_call_id")
    if not isinstance(call_id, str):
        return None
    if raw.get("type") == "tool" or ("status" in raw and "approve" not in raw):
        return Answer(tool_call_id=call_id, kind="tool", status=raw.get("status") or "success",
                      tool_return=raw.get("tool_return") or raw.get("func_response"),
                      stdout=raw.get("stdout"), stderr=raw.get("stderr"))  # fmt: skip
    return Answer(tool_call_id=call_id, kind="approval", approve=raw.get("approve"),
                  reason=raw.get("reason"))  # fmt: skip


def _import_message(entry: MessageSchema, **fields: Any) -> Message | None:
    parts = _parts(entry.content)
    text = _joined(parts)
    if entry.role == "assistant":
        calls = []
        for raw in entry.tool_calls or []:
            function = raw.get("function") or {}
            arguments = function.get("arguments")
            if not isinstance(arguments, str):
                arguments = orjson.dumps(arguments or {}).decode()
            calls.append(StoredToolCall(id=str(raw.get("id") or ""),
                                        name=str(function.get("name") or ""),
                                        arguments=arguments))  # fmt: skip
        native = [p for p in parts if p.get("type") == "reasoning"]
        return Message(
            role="assistant",
            content=None if calls else text,
            reasoning=text if calls else None,
            thinking=_joined(native, "reasoning", "reasoning"),
            thinking_signature=native[0].get("signature") if native else None,
            tool_calls=calls,
            **fields,
        )
    if entry.role == "tool":
        returned = (entry.tool_returns or [{}])[0]
        return Message(
            role="tool",
            content=text if text is not None else returned.get("func_response"),
            tool_call_id=entry.tool_call_id or returned.get("tool_call_id"),
            tool_name=entry.name,
            tool_status=returned.get("status") or "success",
            tool_stdout=returned.get("stdout"),
            tool_stderr=returned.get("stderr"),
            **fields,
        )
    if entry.role == "approval":
        answers = [a for a in map(_import_answer, entry.approvals or []) if a is not None]
        if not answers and entry.approve is not None and entry.approval_request_id:
            return None  # Letta's legacy single approval: nothing to answer here
        return Message(role="approval", approvals=answers,
                       approval_request_id=entry.approval_request_id, **fields)  # fmt: skip
    if entry.role in ("user", "system"):
        return Message(role=entry.role, content=text or "", **fields)
    return None  # a role this server does not keep


def import_history(
    entries: list[MessageSchema],
    in_context_ids: list[str],
    *,
    agent_id: str,
    new_id: Any,
    now: float,
    conversation_id: str | None = None,
    placed: dict[str, int] | None = None,
) -> tuple[list[Message], AgentContext]:
    """The stored messages (seq 0, 1, ...) and context of an agent imported from a file, or
    of one of its other conversations (`conversation_id`).

    `new_id()` draws a message id. The system prompt heading the window is left out.
    `placed`, when given, learns the place (seq) each kept entry took, by its file id."""
    skip = set()
    if in_context_ids:
        head = next((e for e in entries if e.id == in_context_ids[0]), None)
        if head is not None and head.role == "system":
            skip.add(head.id)
    wanted = set(in_context_ids) - skip
    messages: list[Message] = []
    start: int | None = None
    for entry in entries:
        if entry.id in skip:
            continue
        seq = len(messages)
        made = _import_message(
            entry,
            id=new_id(),
            agent_id=agent_id,
            seq=seq,
            created_at=_parse_time(entry.created_at, now),
            conversation_id=conversation_id,
        )
        if made is None:
            continue
        messages.append(made)
        if placed is not None:
            placed[entry.id] = seq
        if entry.id in wanted and start is None:
            start = seq
    return messages, AgentContext(start_seq=len(messages) if start is None else start)


def export_passage(passage: Passage, file_id: str) -> PassageSchema:
    return PassageSchema(
        id=file_id,
        text=passage.text,
        tags=list(passage.tags),
        metadata=passage.metadata,
        created_at=iso(passage.created_at),
    )


def import_passage(
    entry: PassageSchema,
    *,
    passage_id: str,
    agent_id: str | None,
    archive_id: str,
    embedding_config: dict[str, Any] | None,
    now: float,
) -> Passage:
    return Passage(
        id=passage_id,
        agent_id=agent_id,
        text=entry.text,
        archive_id=archive_id,
        tags=list(dict.fromkeys(entry.tags or [])),
        metadata=dict(entry.metadata or {}),
        embedding_config=embedding_config,
        created_at=_parse_time(entry.created_at, now),
        updated_at=now,
    )
