"""Positions in a background run's stream, without trio: what a reader shows of stored
messages above a position, and where a live token delta goes (service/run_positions.py)."""

from __future__ import annotations

from kelpie_trio.agent.messages import Message, StoredToolCall
from kelpie_trio.agent.runs import Run, SessionCheckpoint
from kelpie_trio.service.run_positions import (
    TEXT,
    THINKING,
    WHOLE,
    Cursor,
    ending,
    id_tag,
    place_delta,
    position,
    shown_items,
)

RUN = Run(id="run-1", agent_id="agent-1", created_at=0.0, inputs=[], first_seq=10,
          checkpoint=SessionCheckpoint(session_id="run-1", agent_id="agent-1"))  # fmt: skip


def reply(seq: int = 11, *, content: str | None = None, reasoning: str | None = None,
          calls: int = 0, id: str = "message-a") -> Message:  # fmt: skip
    tool_calls = [StoredToolCall(id=f"c{i}", name="memory_insert", arguments="{}")
                  for i in range(calls)]  # fmt: skip
    return Message(id=id, agent_id="agent-1", seq=seq, role="assistant", content=content,
                   reasoning=reasoning, tool_calls=tool_calls, run_id="run-1")  # fmt: skip


def test_positions_order_by_place_then_slot_then_offset() -> None:
    assert position(0, TEXT, 5, 3) < position(0, TEXT) < position(0, TEXT + 1, 1) < position(1, 0)
    at = Cursor.of(position(7, THINKING, 42, 9))
    assert (at.place, at.slot, at.offset, at.tag) == (7, THINKING, 42, 9)


def test_a_message_shows_in_slot_order_and_only_above_the_position() -> None:
    message = reply(reasoning="Let me note it.", calls=2)
    items = shown_items(RUN, [message], 0, {})
    kinds = [e["message_type"] for _, e in items]
    assert kinds == ["reasoning_message", "tool_call_message", "tool_call_message"]
    assert [at for at, _ in items] == sorted(at for at, _ in items)
    later = shown_items(RUN, [message], items[1][0], {})
    assert [at for at, _ in later] == [items[2][0]]


def test_a_resume_inside_a_text_gives_its_rest_as_its_start_showed() -> None:
    partial: dict = {}
    delta = {"id": "message-a", "message_type": "assistant_message", "content": "Hel",
             "seq_id": 11, "run_id": "run-1", "offset_end": 3}  # fmt: skip
    at, shown = place_delta(delta, 10, 0, partial)
    assert shown["seq_id"] == at and Cursor.of(at).offset == 3 and "offset_end" not in shown
    # The text showed beside a tool call is stored as reasoning: its rest stays an
    # assistant message, the type the client's line has.
    stored = reply(reasoning="Hello there", calls=1)
    [(rest_at, rest), call] = shown_items(RUN, [stored], at, Cursor.of(at).partial())
    assert rest["message_type"] == "assistant_message" and rest["content"] == "lo there"
    assert rest_at == position(1, TEXT) and call[1]["message_type"] == "tool_call_message"


def test_a_text_shown_whole_as_deltas_is_passed_over_once_stored() -> None:
    partial: dict = {}
    delta = {"id": "message-a", "message_type": "assistant_message", "content": "Hi.",
             "seq_id": 11, "offset_end": 3}  # fmt: skip
    at, _ = place_delta(delta, 10, 0, partial)
    assert shown_items(RUN, [reply(content="Hi.")], at, partial) == [(position(1, TEXT), None)]


def test_a_reply_stored_in_place_of_one_whose_start_was_shown_is_given_whole() -> None:
    partial: dict = {}
    lost = {"id": "message-lost", "message_type": "assistant_message", "content": "Hel",
            "seq_id": 11, "offset_end": 3}  # fmt: skip
    at, _ = place_delta(lost, 10, 0, partial)
    [(_, whole)] = shown_items(RUN, [reply(content="Goodbye", id="message-b")], at, partial)
    assert whole["content"] == "Goodbye" and Cursor.of(whole["seq_id"]).offset == WHOLE
    other = {"id": "message-b", "message_type": "assistant_message", "content": "Go",
             "seq_id": 11, "offset_end": 2}  # fmt: skip
    assert place_delta(other, 10, at, partial) is None  # its start cannot go on the other's


def _id_sharing_the_tag_of(message_id: str) -> str:
    """Another id whose 9-bit digest is `message_id`'s (1 in 512 ids is one)."""
    want = id_tag(message_id, "") >> 1
    candidates = (f"message-{n}" for n in range(100_000))
    return next(c for c in candidates if c != message_id and id_tag(c, "") >> 1 == want)


def test_a_reply_asked_again_is_given_whole_even_when_its_tag_is_the_lost_ones() -> None:
    """The deep run's seed 522 of the dropped-stream DST: the reply asked again after the
    crash had an id whose digest was the lost reply's, and its 14 characters were taken
    for the rest of the lost reply's first 14: the client never saw it."""
    partial: dict = {}
    lost = {"id": "message-lost", "message_type": "assistant_message",
            "content": "Worth keeping.", "seq_id": 11, "offset_end": 14}  # fmt: skip
    at, _ = place_delta(lost, 10, 0, partial)
    twin = _id_sharing_the_tag_of("message-lost")
    asked_again = reply(content="Worth keeping.", id=twin)
    asked_again.streamed = False  # what the actor stores for a reply asked after a recovery
    [(_, whole)] = shown_items(RUN, [asked_again], at, partial)
    assert whole["content"] == "Worth keeping." and Cursor.of(whole["seq_id"]).offset == WHOLE
    # A reply whose deltas went out is the one a reader with its tag saw the start of.
    streamed = reply(content="Worth keeping.", id="message-lost")
    streamed.streamed = True
    [(_, nothing)] = shown_items(RUN, [streamed], at, partial)
    assert nothing is None  # it saw all of it: the reader moves past it


def test_a_reader_that_missed_deltas_shows_none_until_the_store_has_the_rest() -> None:
    def delta(text: str, end: int) -> dict:
        return {"id": "message-a", "message_type": "reasoning_message", "reasoning": text,
                "seq_id": 11, "offset_end": end}  # fmt: skip

    tag = id_tag("message-a", "reasoning_message")
    held = position(1, TEXT, 4, tag)
    partial = Cursor.of(held).partial()  # a resume: the client holds 4 characters
    assert place_delta(delta(" day", 12), 10, held, partial) is None  # " mor" was missed
    assert place_delta(delta("Good", 4), 10, held, partial) is None  # held already
    at, shown = place_delta(delta("od m", 6), 10, held, partial)  # overlaps: the new part
    assert shown["reasoning"] == " m" and Cursor.of(at).offset == 6


def test_tool_call_deltas_are_not_placed_and_the_ending_comes_above_a_lost_reply() -> None:
    call = {"id": "message-a", "message_type": "tool_call_message", "seq_id": 11,
            "tool_call": {"name": "x", "arguments": "{", "tool_call_id": "c0"}}  # fmt: skip
    assert place_delta(call, 10, 0, {}) is None
    run = Run(id="run-1", agent_id="agent-1", created_at=0.0, inputs=[], first_seq=10,
              checkpoint=SessionCheckpoint(session_id="run-1", agent_id="agent-1",
                                           stop_reason="llm_api_error"))  # fmt: skip
    lost = position(1, TEXT, 3, 8)
    events = ending(run, 1, lost)
    assert [e["message_type"] for e in events] == [
        "error_message", "stop_reason", "usage_statistics",
    ]  # fmt: skip
    assert all(e["seq_id"] > lost for e in events)
