"""The context window: what of the history the model sees, and the summary of the rest.

Plain functions, no I/O. An agent's in-context history starts at a stored sequence
number; everything before it is summarized in one text the prompt carries right
after the system message (as Letta does). When a step's prompt would not fit the
agent's context window (less room for the reply), the oldest messages are evicted
until the prompt takes at most `TARGET` of the window, so eviction happens now and
then, not at every step. A tool's result is never separated from the call that
asked for it, and the newest message is never evicted: a turn never fails for lack
of room. The actor asks the model for the new summary and, if the model fails,
falls back to `recap`, a mechanical one.

Tokens are estimated at four characters each, plus a small overhead per message:
close enough for budgeting, and the same on every provider. The context-window overview
(service/context_overview.py) reports with this same counter, so its numbers are the
ones eviction decides by.

A client may also ask for a compaction now (`plan_compaction`): it evicts a share of the
in-context messages (by default the `1 - TARGET` an overflow leaves room for) even when
the prompt fits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import orjson

from kelpie_trio.agent.messages import Message
from kelpie_trio.llm.types import ChatMessage, ImagePart, LlmRequest, ToolSchema
from kelpie_trio.models.convert import iso

__all__ = [
    "AgentContext",
    "Compaction",
    "CompactionAnswer",
    "compaction_messages",
    "count_text",
    "estimate_tokens",
    "plan_compaction",
    "plan_eviction",
    "recap",
    "summary_message",
    "summary_request",
]

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # role and framing tokens per message
TARGET = 0.7  # after an eviction the prompt takes at most this share of the window
SUMMARY_CHARS = 4_000  # a summary is kept to about 1,000 tokens
DEFAULT_CONTEXT_WINDOW = 32_000
DEFAULT_REPLY_TOKENS = 4_096
# What an image costs in the prompt, whatever its size: the providers scale images down
# (Anthropic to ~1,600 tokens at most, OpenAI's high detail ~1,100 for a typical photo).
IMAGE_TOKENS = 1_500


@attrs.frozen(kw_only=True)
class CompactionAnswer:
    """What a compaction a client asked for answered (Letta's CompactionResponse), kept
    with the context it made: a request delivered twice (a forward retried) is answered
    from here instead of compacting again."""

    request_id: str
    summary: str
    num_messages_before: int
    num_messages_after: int


@attrs.define(kw_only=True)
class AgentContext:
    """Stored per agent: where the in-context history starts, and what came before."""

    start_seq: int = 0
    summary: str | None = None
    evicted: int = 0  # messages evicted so far, for the summary's header
    last_compaction: CompactionAnswer | None = None  # the last one a client asked for


@attrs.frozen
class Compaction:
    """What one eviction did, for Letta's event_message and summary_message."""

    trigger: str
    context_window: int
    tokens_before: int
    tokens_after: int
    messages_before: int
    messages_after: int
    summary: str


def _chars(message: ChatMessage) -> int:
    size = len(message.content or "")
    size += sum(IMAGE_TOKENS * CHARS_PER_TOKEN for p in message.parts if isinstance(p, ImagePart))
    for call in message.tool_calls:
        size += len(call.name) + len(call.arguments)
    return size


def count_text(text: str) -> int:
    """The counter on a bare text, a section of a message (no per-message framing)."""
    return len(text) // CHARS_PER_TOKEN


def estimate_tokens(messages: Sequence[ChatMessage], tools: Sequence[ToolSchema] = ()) -> int:
    chars = sum(_chars(m) for m in messages)
    chars += sum(len(t.name) + len(t.description) + len(orjson.dumps(t.parameters)) for t in tools)
    return chars // CHARS_PER_TOKEN + MESSAGE_OVERHEAD * len(messages)


def plan_eviction(
    fixed_tokens: int, history_tokens: Sequence[int], roles: Sequence[str], budget: int
) -> int:
    """How many of the oldest history messages to evict (0: the prompt fits).

    `fixed_tokens` is what stays whatever happens (system prompt, memory, tools, the
    summary); `history_tokens[i]` and `roles[i]` describe history message i, oldest
    first. A cut never leaves a tool result first (it goes with its call) and never
    takes the newest message."""
    total = fixed_tokens + sum(history_tokens)
    if total <= budget or not history_tokens:
        return 0
    goal = int(budget * TARGET)
    cut = 0
    while cut < len(history_tokens) - 1 and total > goal:
        total -= history_tokens[cut]
        cut += 1
    while 0 < cut < len(roles) and roles[cut] == "tool":  # keep a result with its call
        cut -= 1
    while cut < len(roles) - 1 and roles[cut] == "tool":  # or evict both
        cut += 1
    return cut


def plan_compaction(
    fixed_tokens: int,
    history_tokens: Sequence[int],
    roles: Sequence[str],
    budget: int,
    *,
    share: float = 1 - TARGET,
    keep_from: int | None = None,
) -> int:
    """How many of the oldest history messages a compaction asked for now evicts: at
    least the oldest `share` of them (rounded up), and more until the prompt takes at
    most `1 - share` of the budget (Letta's sliding window; `share` 1 is its "all").
    Never the newest message, never a tool result without its call, and nothing from
    `keep_from` on (a reply whose calls still wait for results: those would reach the
    model without their call)."""
    count = len(history_tokens)
    stop = count - 1 if keep_from is None else min(keep_from, count - 1)
    if stop <= 0:
        return 0
    cut = min(math.ceil(round(share * count, 9)), stop)
    total = fixed_tokens + sum(history_tokens[cut:])
    while cut < stop and total > (1 - share) * budget:
        total -= history_tokens[cut]
        cut += 1
    while cut > 0 and roles[cut] == "tool":  # keep a result with its call
        cut -= 1
    return cut


def _line(message: Message) -> str:
    if message.role == "tool":
        return f"[tool {message.tool_name} returned] {message.content or ''}"
    if message.role == "assistant":
        parts = [message.reasoning or message.content or ""]
        parts += [f"(called {c.name} {c.arguments})" for c in message.tool_calls]
        return "[assistant] " + " ".join(p for p in parts if p)
    images = sum(1 for p in message.parts or () if p.type == "image")
    shown = f" [{images} image{'s' if images > 1 else ''} omitted]" if images else ""
    return f"[{message.role}] {message.content or ''}{shown}"


def transcript(messages: Sequence[Message], limit: int) -> str:
    """The evicted messages as text, newest kept when it must be cut to `limit`."""
    text = "\n".join(_line(m) for m in messages)
    return text if len(text) <= limit else "…" + text[-limit:]


def summary_request(
    model: str, previous: str | None, evicted: Sequence[Message], budget_tokens: int
) -> LlmRequest:
    """Ask the model to fold the evicted messages into the running summary."""
    room = max(1_000, budget_tokens * CHARS_PER_TOKEN // 2)
    instructions = (
        "You maintain the memory of a conversation whose oldest messages no longer fit in "
        "the context window. Write a concise summary (at most 150 words) of the previous "
        "summary and the messages below: facts about the user, decisions, open tasks. "
        "Reply with the summary only."
    )
    body = f"Previous summary:\n{previous or '(none)'}\n\nMessages:\n{transcript(evicted, room)}"
    return LlmRequest(
        model=model,
        messages=(ChatMessage("system", instructions), ChatMessage("user", body)),
        tools=(),
        max_tokens=SUMMARY_CHARS // CHARS_PER_TOKEN,
    )


def recap(previous: str | None, evicted: Sequence[Message]) -> str:
    """A summary without the model: the previous one and the newest evicted lines."""
    head = f"{previous}\n" if previous else ""
    return (head + transcript(evicted, SUMMARY_CHARS))[-SUMMARY_CHARS:]


def summary_message(context: AgentContext) -> ChatMessage | None:
    if not context.summary:
        return None
    return ChatMessage(
        "user",
        f"Note: {context.evicted} earlier messages of this conversation were evicted from "
        f"the context window. Summary of them:\n{context.summary}",
    )


def compaction_messages(
    compaction: Compaction, *, ids: tuple[str, str], at: float, run_id: str, seq: int
) -> list[dict[str, Any]]:
    """Letta's event_message (a compaction happened) and summary_message (what the evicted
    history was folded into), shown when a send asks for include_compaction_messages."""
    base = {"date": iso(at), "name": None, "otid": None, "sender_id": None, "step_id": None,
            "is_err": None, "seq_id": seq, "run_id": run_id}  # fmt: skip
    event_data = {"trigger": compaction.trigger,
                  "context_token_estimate": compaction.tokens_before,
                  "context_window": compaction.context_window}  # fmt: skip
    stats = {"trigger": compaction.trigger, "context_tokens_before": compaction.tokens_before,
             "context_tokens_after": compaction.tokens_after,
             "context_window": compaction.context_window,
             "messages_count_before": compaction.messages_before,
             "messages_count_after": compaction.messages_after}  # fmt: skip
    return [
        {**base, "id": ids[0], "message_type": "event_message", "event_type": "compaction",
         "event_data": event_data},
        {**base, "id": ids[1], "message_type": "summary_message", "summary": compaction.summary,
         "compaction_stats": stats},
    ]  # fmt: skip
