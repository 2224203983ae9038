"""Positions in a background run's stream (pure): which `seq_id` each event gets, what a
reader shows of the stored messages above a position, and where token deltas fit.

A position is one integer, compared as one, built from four fields (high to low):

    place (the history place of the stored message, counted from the run's first)
    slot (which of the Letta messages it shows as: 6 bits)
    offset (how many characters of that message's text are shown: 18 bits)
    tag (which message the text was of: 10 bits)

A Letta message given whole is at offset WHOLE with tag 0: its position says "all of
this one". A token delta is at the offset its text reaches, with the tag of its
message: its position says "this message, up to here". So a stream from
`starting_after=N` continues exactly after what the client saw: with the rest of a
message it saw the start of (the same message: its tag), then whole messages.

Slots are fixed per kind, so a delta, made before its message is stored, lands where
the stored message will show: HIDDEN (hidden reasoning), THINKING (the model's own
reasoning), TEXT (what the model wrote: shown as reasoning beside tool calls, as the
assistant message without), then one per tool call, then APPROVAL (the calls that wait
for the client). The ending (error, stop reason, usage) takes the top slots of the place
after the run's last message, above any delta of a reply that was never stored.

The tag is 9 bits of a digest of the message's id and one bit for how its text was
shown live (assistant_message or reasoning_message, by the agent's type): the rest of a
text is shown as its start was, so the client's line gets exactly the rest. Digests of
two ids may be equal (1 in 512): a reply asked again after a crash (the one that can
share its place with a lost reply a reader saw the start of) is stored as not streamed
and always given whole.
"""

from __future__ import annotations

import zlib
from typing import Any

import attrs

from kelpie_trio.agent.messages import Message, to_letta_messages
from kelpie_trio.agent.runs import Run

__all__ = [
    "WHOLE",
    "Cursor",
    "Partial",
    "ending",
    "frontier",
    "place_delta",
    "position",
    "shown_items",
    "stop_reason_of",
]

SLOT_BITS, OFFSET_BITS, TAG_BITS = 6, 18, 10
SLOTS = 1 << SLOT_BITS
WHOLE = (1 << OFFSET_BITS) - 1  # the offset of a message given whole
HIDDEN, THINKING, TEXT, FIRST_CALL = 0, 1, 2, 3
APPROVAL = SLOTS - 1
ERROR, STOP, USAGE = SLOTS - 3, SLOTS - 2, SLOTS - 1  # the ending's slots, at its own place
_BASE = ("id", "date", "name", "otid", "sender_id", "step_id", "is_err", "run_id")

# (place, slot) -> (tag, offset): how much of a message's text a reader has shown
Partial = dict[tuple[int, int], tuple[int, int]]


def position(place: int, slot: int, offset: int = WHOLE, tag: int = 0) -> int:
    if not (0 <= slot < SLOTS and 0 <= offset <= WHOLE and 0 <= tag < 1 << TAG_BITS):
        raise ValueError("a position field out of its range")
    return ((((place << SLOT_BITS) | slot) << OFFSET_BITS | offset) << TAG_BITS) | tag


@attrs.frozen
class Cursor:
    place: int
    slot: int
    offset: int
    tag: int

    @classmethod
    def of(cls, value: int) -> Cursor:
        tag = value & ((1 << TAG_BITS) - 1)
        offset = (value >> TAG_BITS) & WHOLE
        slot = (value >> (TAG_BITS + OFFSET_BITS)) & (SLOTS - 1)
        return cls(value >> (TAG_BITS + OFFSET_BITS + SLOT_BITS), slot, offset, tag)

    def partial(self) -> Partial:
        """What a client that stopped here holds of a message it did not see whole."""
        if self.slot in (THINKING, TEXT) and 0 < self.offset < WHOLE:
            return {(self.place, self.slot): (self.tag, self.offset)}
        return {}


def id_tag(message_id: str, shown_as: str) -> int:
    digest = zlib.crc32(message_id.encode()) & ((1 << (TAG_BITS - 1)) - 1)
    return digest << 1 | (shown_as == "assistant_message")


def _may_be_of(message: Message, tag: int) -> bool:
    """Whether text a reader holds under `tag` may be the start of `message`'s. A tag is a
    digest, so two messages may share it: a reply asked again after a crash, which may
    share its place with a lost reply whose start a stream showed, is never streamed
    (agent/actor.py), and so never taken for the rest of that one."""
    if message.streamed is False:
        return False
    return tag >> 1 == id_tag(message.id, "") >> 1


def _slots(message: Message, shown: list[dict[str, Any]]) -> list[int]:
    """The slot of each Letta message a stored message shows as (to_letta_messages)."""
    if message.role != "assistant":
        return list(range(len(shown)))
    calls = [i for i, c in enumerate(message.tool_calls) if c.waits_for is None]
    slots = []
    for event in shown:
        kind = event["message_type"]
        if kind == "hidden_reasoning_message":
            slots.append(HIDDEN)
        elif kind == "reasoning_message":
            slots.append(THINKING if event.get("source") == "reasoner_model" else TEXT)
        elif kind == "approval_request_message":
            slots.append(APPROVAL)
        elif kind == "assistant_message" and not message.tool_calls:
            slots.append(TEXT)
        else:  # a call (a tool_call_message, or send_message's assistant_message)
            slots.append(min(FIRST_CALL + calls.pop(0), APPROVAL - 1))
    return slots


def _text(event: dict[str, Any]) -> str | None:
    field = "reasoning" if event["message_type"] == "reasoning_message" else "content"
    value = event.get(field)
    return value if isinstance(value, str) else None


def _rest(event: dict[str, Any], slot: int, tag: int, offset: int) -> dict[str, Any] | None:
    """The rest of a message's text after what the client saw, shown as its start was
    (None when it saw all of it)."""
    text = _text(event)
    if text is None:
        return event
    rest = text[offset:]
    if not rest:
        return None
    base = {k: event.get(k) for k in _BASE}
    if tag & 1:
        return {**base, "message_type": "assistant_message", "content": rest}
    source = "reasoner_model" if slot == THINKING else "non_reasoner_model"
    return {**base, "message_type": "reasoning_message", "source": source, "reasoning": rest,
            "signature": event.get("signature")}  # fmt: skip


def shown_items(
    run: Run, messages: list[Message], after: int, partial: Partial
) -> list[tuple[int, dict[str, Any] | None]]:
    """(position, event) for the Letta messages of the run's stored `messages` (of any
    runs, in history order) above position `after`, in position order. A message whose
    text the reader showed in part (`partial`) gives only the rest, or nothing (None:
    the reader moves past it) when it showed all; one whose deltas were of another
    message (a reply asked again after a crash) is given whole."""
    assert run.first_seq is not None
    placed: list[tuple[int, dict[str, Any] | None]] = []
    for message in messages:
        if message.run_id != run.id or message.seq < run.first_seq:
            continue
        place = message.seq - run.first_seq
        shown = to_letta_messages(message, **run.render_options())
        for slot, event in sorted(zip(_slots(message, shown), shown, strict=True),
                                  key=lambda pair: pair[0]):  # fmt: skip
            at = position(place, slot)
            if at <= after:
                continue
            given: dict[str, Any] | None = {**event, "run_id": run.id}
            seen = partial.get((place, slot))
            if seen is not None and _may_be_of(message, seen[0]):
                given = _rest(event, slot, *seen)
            placed.append((at, None if given is None else {**given, "seq_id": at}))
    return placed


def place_delta(
    event: dict[str, Any], first_seq: int, after: int, partial: Partial
) -> tuple[int, dict[str, Any]] | None:
    """Where a live token delta of the actor goes, or None when it cannot be shown. Its
    `seq_id` is the history place its message will be stored at; `offset_end` (from
    `RunEvents`) is where its text ends in the message's text. A delta shows the part
    of its text past what the reader holds of that message, or nothing: when it holds
    it all already, when deltas before it were missed (a reader that joined late: the
    rest comes from the store), for a tool call's delta (calls show whole, once
    stored), or for a second message at a place whose text it showed of another.
    Updates `partial` when it is shown."""
    kind = event.get("message_type")
    place = event.get("seq_id", -1) - first_seq
    shown = {k: v for k, v in event.items() if k != "offset_end"}
    if place < 0:
        return None
    if kind == "hidden_reasoning_message":
        at = position(place, HIDDEN)
        return (at, {**shown, "seq_id": at}) if at > after else None
    if kind == "reasoning_message":
        slot, field = (THINKING if event.get("source") == "reasoner_model" else TEXT), "reasoning"
    elif kind == "assistant_message":
        slot, field = TEXT, "content"
    else:
        return None
    text, end = event.get(field), event.get("offset_end")
    if not isinstance(text, str) or not isinstance(end, int) or end >= WHOLE:
        return None  # the rest comes whole, once stored
    tag = id_tag(event["id"], kind)
    seen = partial.get((place, slot))
    if seen is not None and seen[0] != tag:
        return None
    held = seen[1] if seen is not None else 0
    start = end - len(text)
    if start > held or end <= held:
        return None
    at = position(place, slot, end, tag)
    if at <= after:
        return None
    partial[(place, slot)] = (tag, end)
    return at, {**shown, field: text[held - start :], "seq_id": at}


def frontier(run: Run) -> int | None:
    """The history place up to which (exclusive) the run's stored messages are final, or
    None for all of them. A step with tools that run outside the store stores its reply
    first and its calls' results at places kept for them, as each comes; a result that
    runs in the store lands with the step's last commit, maybe below one stored before.
    So a step still open (`pending_seq`, its reply) shows up to its reply; the rest
    shows when the step is stored whole, and positions only ever grow."""
    pending = run.checkpoint.pending_seq
    if pending is None or run.first_seq is None or run.checkpoint.stop_reason is not None:
        return None
    return max(pending, run.first_seq) + 1


def stop_reason_of(run: Run) -> str | None:
    """The stop reason a stream ends with, or None while the run goes on."""
    if run.parked:
        return "requires_approval"
    return run.checkpoint.stop_reason


def ending(run: Run, end: int, after: int) -> list[dict[str, Any]]:
    """The events after the run's last message, at place `end` (above position `after`)."""
    stop = stop_reason_of(run)
    assert stop is not None
    events: list[dict[str, Any]] = []
    if stop in ("llm_api_error", "error"):
        events.append({
            "message_type": "error_message",
            "run_id": run.id,
            "error_type": stop,
            "message": "the LLM failed after its retries" if stop == "llm_api_error"
            else "the turn failed",
            "detail": run.error,
            "seq_id": position(end, ERROR),
        })  # fmt: skip
    events.append({"message_type": "stop_reason", "stop_reason": stop,
                   "seq_id": position(end, STOP)})  # fmt: skip
    events.append({**run.usage(), "seq_id": position(end, USAGE)})
    return [e for e in events if e["seq_id"] > after]
