"""The history of an agent file, stored messages <-> Letta's MessageSchema (pure functions)."""

from __future__ import annotations

import itertools

import orjson

from kelpie_trio.agent.context import AgentContext
from kelpie_trio.agent.messages import Message, StoredToolCall
from kelpie_trio.agent.runs import Answer
from kelpie_trio.models import convert
from kelpie_trio.models.agentfile_history import MessageSchema, export_history, import_history

AGENT = "agent-00000000-0000-4000-8000-000000000001"
COPY = "agent-00000000-0000-4000-8000-000000000002"


def history() -> list[Message]:
    base = {"agent_id": AGENT}
    call = StoredToolCall(id="call_1", name="lookup", arguments='{"q": "kelp"}')
    said = StoredToolCall(id="call_2", name="send_message", arguments='{"message": "hi"}')
    return [
        Message(id="m0", seq=0, role="user", content="what grows fast?", created_at=10.0, **base),
        Message(id="m1", seq=1, role="assistant", reasoning="Look it up.", thinking="hmm",
                thinking_signature="sig", tool_calls=[call], created_at=11.0, **base),
        Message(id="m2", seq=2, role="tool", content="kelp", tool_call_id="call_1",
                tool_name="lookup", tool_status="success", tool_stdout=["out"],
                created_at=12.0, **base),
        Message(id="m3", seq=3, role="assistant", tool_calls=[said], created_at=13.0, **base),
        Message(id="m4", seq=4, role="approval", created_at=14.0,
                approvals=[Answer(tool_call_id="call_9", kind="approval", approve=False,
                                  reason="no"),
                           Answer(tool_call_id="call_8", kind="tool", status="error",
                                  tool_return="failed")], **base),
        Message(id="m5", seq=5, role="assistant", content="Plain reply.", created_at=15.0, **base),
        Message(id="m6", seq=6, role="system", content="a system note", created_at=16.0, **base),
    ]  # fmt: skip


def through_json(entries: list[MessageSchema]) -> list[MessageSchema]:
    """As a file carries them: JSON out and back in."""
    raw = orjson.loads(orjson.dumps(convert.api.unstructure(entries)))
    return [convert.structure_api(e, MessageSchema) for e in raw]


def test_a_history_comes_back_as_it_was_but_for_ids() -> None:
    stored = history()
    entries, window = export_history(stored, AgentContext(start_seq=2), 50, "SYSTEM", now=20.0)
    assert [e.id for e in entries] == [f"message-{i}" for i in range(8)]
    assert entries[0].role == "system" and entries[0].content[0]["text"] == "SYSTEM"
    assert window == ["message-0", *(f"message-{i}" for i in range(3, 8))]
    ids = (f"new-{i}" for i in itertools.count())
    back, context = import_history(
        through_json(entries), window, agent_id=COPY, new_id=lambda: next(ids), now=99.0
    )
    assert context.start_seq == 2
    assert [m.id for m in back] == [f"new-{i}" for i in range(7)]
    for old, new in zip(stored, back, strict=True):
        assert new.agent_id == COPY
        assert convert.api.unstructure(old) | {"id": new.id, "agent_id": COPY} == (
            convert.api.unstructure(new)
        )


def test_the_window_is_bounded_as_the_agent_bounds_it() -> None:
    entries, window = export_history(history(), AgentContext(), 3, "S", now=0.0)
    assert window == ["message-0", "message-5", "message-6", "message-7"]
    assert len(entries) == 8


def test_a_letta_assistant_text_is_thoughts_beside_calls_and_a_reply_alone() -> None:
    entries = [
        MessageSchema(id="message-0", role="system", content="prompt"),
        MessageSchema(id="message-1", role="assistant", content=[{"type": "text", "text": "t"}],
                      tool_calls=[{"id": "c", "type": "function",
                                   "function": {"name": "f", "arguments": {"a": 1}}}]),
        MessageSchema(id="message-2", role="assistant", content="reply"),
        MessageSchema(id="message-3", role="function", content="an old role"),
    ]  # fmt: skip
    back, context = import_history(
        entries, ["message-0", "message-2"], agent_id=COPY, new_id=lambda: "x", now=5.0
    )
    assert [(m.role, m.content, m.reasoning) for m in back] == [
        ("assistant", None, "t"),
        ("assistant", "reply", None),
    ]
    assert back[0].tool_calls[0].arguments == '{"a":1}'
    assert back[0].created_at == 5.0  # no time in the file: the import's
    assert context.start_seq == 1
