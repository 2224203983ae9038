"""Sleeptime agents: the companion that tends a primary agent's memory between turns.

An agent created (or updated) with `enable_sleeptime` gets a companion of type
`sleeptime_agent` and a group (Letta's `manager_type: "sleeptime"`) whose manager is the
primary. The companion holds the primary's own blocks (attached, not copied) and one of its
own (`memory_persona`); it has the memory tools and `memory_finish_edits`, which ends its turn.

After every `sleeptime_agent_frequency`-th finished turn of the primary (in any of its
conversations, counted together, as Letta counts them), the companion gets one ordinary
background run whose input is the part of the primary's transcripts it has not seen yet:
the new part of each conversation that moved, the one whose turn was due last. This module
holds the record, the texts and the decisions (sans-IO); the transactions are in
service/sleeptime.py, and the primary's actor only calls `after_turn`.

Exactly once: the turns are counted from the primary's finished runs as its history holds
them (a cursor in the group record), not from an in-memory event, so a turn whose end a
crash cut off is counted by the next look. A companion run is created in the same
transaction that moves the cursor and the transcript position, with an idempotency key made
from the primary's run: a look retried after an unknown commit finds the run its key
started.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from kelpie_trio.agent.messages import Message
from kelpie_trio.storage import keys

__all__ = [
    "DEFAULT_FREQUENCY",
    "GROUPS",
    "MEMORY_PERSONA",
    "SLEEPTIME_SYSTEM",
    "TRANSCRIPT_LIMIT",
    "SleeptimeGroup",
    "after_turn",
    "count_turns",
    "counted_place",
    "processed_place",
    "render_group",
    "set_counted_place",
    "set_processed_place",
    "transcript",
    "trigger_key",
]

GROUPS = keys.ROOT["groups"]  # (group_id,) -> SleeptimeGroup

# Letta 0.16.8 creates the group with a frequency of 5 turns.
DEFAULT_FREQUENCY = 5

# Our own words: what the companion is for and how it should work.
SLEEPTIME_SYSTEM = """\
You are a memory keeper working in the background for another agent, served by kelpie-trio.

You do not talk to anyone. From time to time you are shown the part of a conversation
between that agent and its user that you have not seen yet. Read it, and keep the memory
blocks you share with that agent accurate and useful: add what is new and lasting, fix
what has changed, remove what is no longer true, with memory_insert, memory_replace and
memory_rethink. Leave out small talk and passing details. Your own memory_persona block
says how you work. When the blocks say what they should, call memory_finish_edits."""

MEMORY_PERSONA = """\
I keep the memory of the agent I serve. I record facts about its user and their
preferences, the decisions and commitments made in the conversation, and anything the
agent will need later, in the block where it belongs, concisely and without duplicates."""

# What the companion is told before the transcript (our own words; Letta sends a reminder
# of the same kind: it is not the primary, and the roles below are the primary's).
_PREAMBLE = (
    "You are reviewing part of a conversation that already happened between the agent "
    "you serve and its user. Lines from 'assistant' are that agent's, lines from 'user' "
    "its user's; you are neither. Update the shared memory blocks with what is worth "
    "keeping, then call memory_finish_edits."
)


@attrs.define
class SleeptimeGroup:
    """Letta's Group of manager_type "sleeptime", with what the trigger needs."""

    id: str
    manager_agent_id: str
    agent_ids: list[str]
    sleeptime_agent_frequency: int | None = DEFAULT_FREQUENCY
    description: str = ""
    project_id: str | None = None
    hidden: bool | None = None
    created_at: float = 0.0
    turns_counter: int = 0
    # Where the count stands: the place in the primary's history of the last message of
    # the last turn counted (places, unlike clocks, only go up, whichever node wrote them);
    # turns whose messages come after it are counted by the next look.
    counted_seq: int = -1
    # The last place in the primary's history the companion was given (-1: none yet).
    last_processed_seq: int = -1
    last_processed_message_id: str | None = None
    # The same two places in each of the primary's other conversations (by conversation id;
    # the ones above are its default conversation's): as in Letta, a turn in any of them
    # counts, and the companion reads the new part of every conversation that moved.
    counted_in: dict[str, int] = attrs.Factory(dict)
    processed_in: dict[str, int] = attrs.Factory(dict)


def counted_place(group: SleeptimeGroup, thread: str) -> int | None:
    """Where the count stands in one of the primary's threads (None: a conversation the
    group has not seen yet)."""
    if thread == group.manager_agent_id:
        return group.counted_seq
    return group.counted_in.get(thread)


def set_counted_place(group: SleeptimeGroup, thread: str, seq: int) -> None:
    if thread == group.manager_agent_id:
        group.counted_seq = seq
    else:
        group.counted_in[thread] = seq


def processed_place(group: SleeptimeGroup, thread: str) -> int:
    """The last place in one of the primary's threads the companion was given (-1: none)."""
    if thread == group.manager_agent_id:
        return group.last_processed_seq
    return group.processed_in.get(thread, -1)


def set_processed_place(group: SleeptimeGroup, thread: str, seq: int) -> None:
    if thread == group.manager_agent_id:
        group.last_processed_seq = seq
    else:
        group.processed_in[thread] = seq


def trigger_key(primary_run_id: str) -> str:
    """The idempotency key of the companion run a primary's turn starts: one per turn."""
    return f"sleeptime:{primary_run_id}"


def count_turns(counter: int, finished: int, frequency: int | None) -> list[int]:
    """Of `finished` more turns after `counter`, which (by their index in that list) make
    the companion run: every frequency-th turn; every turn without a frequency."""
    due = []
    for index in range(finished):
        number = counter + index + 1
        if not frequency or frequency <= 0 or number % frequency == 0:
            due.append(index)
    return due


def _line(message: Message) -> str | None:
    """One message of the primary's history as the companion reads it (None: skipped)."""
    if message.role == "user":
        text = message.content or ""
        if text.startswith("{") and '"type"' in text:  # heartbeats and system notes
            return None
        return f"user: {text}" if text else None
    if message.role == "assistant":
        lines = []
        if message.content:
            lines.append(f"assistant: {message.content}")
        for call in message.tool_calls:
            said = None
            if call.name == "send_message":
                try:
                    said = json.loads(call.arguments).get("message")
                except (ValueError, AttributeError):
                    said = None
            lines.append(f"assistant: {said}" if said else f"assistant: called {call.name}")
        return "\n".join(lines) or None
    return None  # tool returns and system messages: the calls above say what happened


# The most of a transcript a companion's input carries (its end, the newest part): an
# input message is one stored record, and records stay well under the store's value limit.
TRANSCRIPT_LIMIT = 40_000


def transcript(messages: list[Message]) -> str:
    """The companion's input: the preamble, then the new part of the transcript (its
    newest TRANSCRIPT_LIMIT characters, from a line's start)."""
    lines = [line for line in (_line(m) for m in messages) if line]
    text = "\n".join(lines)
    if len(text) > TRANSCRIPT_LIMIT:
        cut = text[-TRANSCRIPT_LIMIT:]
        text = cut[cut.find("\n") + 1 :] if "\n" in cut else cut
    return f"{_PREAMBLE}\n\nMessages:\n{text}"


def render_group(group: SleeptimeGroup) -> dict[str, Any]:
    """Letta's Group."""
    return {
        "id": group.id,
        "manager_type": "sleeptime",
        "agent_ids": list(group.agent_ids),
        "description": group.description,
        "project_id": group.project_id,
        "template_id": None,
        "base_template_id": None,
        "deployment_id": None,
        "shared_block_ids": [],
        "manager_agent_id": group.manager_agent_id,
        "termination_token": None,
        "max_turns": None,
        "sleeptime_agent_frequency": group.sleeptime_agent_frequency,
        "turns_counter": group.turns_counter,
        "last_processed_message_id": group.last_processed_message_id,
        "max_message_buffer_length": None,
        "min_message_buffer_length": None,
        "hidden": group.hidden,
    }


def after_turn(actor: Any) -> None:
    """The primary's actor, after a turn's end was stored (or answered again): the count
    is looked at in the background, so the turn's answer never waits for the companion.
    A turn in any of the agent's conversations counts, as in Letta."""
    if getattr(actor, "has_sleeptime_group", True) is False:  # its last step's view said so
        return
    service = actor.service
    if getattr(service, "background", None) is not None:
        service.background.start_soon(service.sleeptime_catch_up, actor.agent_id)
