"""The sans-IO parts of sleeptime agents (agent/sleeptime.py): which turns start the
companion, and what it reads."""

from __future__ import annotations

import json

from kelpie_trio.agent.messages import Message, StoredToolCall
from kelpie_trio.agent.sleeptime import TRANSCRIPT_LIMIT, count_turns, transcript


def _message(seq: int, role: str, content: str | None = None, **kw: object) -> Message:
    return Message(id=f"message-{seq}", agent_id="agent-1", seq=seq, role=role,
                   content=content, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_every_frequency_th_turn_is_due_counting_on_from_the_counter() -> None:
    assert count_turns(0, 6, 2) == [1, 3, 5]
    assert count_turns(1, 3, 2) == [0, 2]  # turns 2 and 4
    assert count_turns(4, 1, 5) == [0]  # the fifth
    assert count_turns(0, 4, 5) == []


def test_without_a_frequency_every_turn_is_due() -> None:
    assert count_turns(7, 3, None) == [0, 1, 2]


def test_the_transcript_shows_what_user_and_assistant_said() -> None:
    said = StoredToolCall(id="c", name="send_message", arguments=json.dumps({"message": "Hi!"}))
    edit = StoredToolCall(id="d", name="memory_insert", arguments="{}")
    text = transcript([
        _message(0, "user", "Hello"),
        _message(1, "assistant", None, tool_calls=[said, edit], reasoning="thinking"),
        _message(2, "tool", "ok"),
        _message(3, "user", '{"type": "heartbeat", "reason": "x"}'),
        _message(4, "assistant", "Plain text."),
    ])  # fmt: skip
    assert text.endswith(
        "Messages:\nuser: Hello\nassistant: Hi!\nassistant: called memory_insert\n"
        "assistant: Plain text."
    )
    assert text.startswith("You are reviewing part of a conversation")


def test_a_long_transcript_keeps_its_newest_lines_whole() -> None:
    messages = [_message(i, "user", f"line {i} " + "x" * 100) for i in range(1000)]
    text = transcript(messages).split("Messages:\n", 1)[1]
    assert len(text) <= TRANSCRIPT_LIMIT
    assert text.splitlines()[-1].startswith("user: line 999 ")
    assert text.splitlines()[0].startswith("user: line ")
