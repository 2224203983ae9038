"""The actor's window (agent/history_window.py) against a model of it: whatever order
messages come in (a step appends; a result fills a place reserved before an approval; a
message is stored again at its place), whatever leaves the context, what a prompt is shown
is exactly what building it from the stored messages would give: the messages in order
without approvals, each one's chat form and token estimate as made from it now; and the
request body a provider encodes from it (keeping what it encoded of the window's log) is
the one built afresh, for every snapshot taken, whenever it is sent."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from kelpie_trio.agent.context import estimate_tokens
from kelpie_trio.agent.history_window import HistoryWindow, Shown
from kelpie_trio.agent.messages import Message
from kelpie_trio.agent.step import chat_message
from kelpie_trio.llm.chat_log import ChatRun, Prompt
from kelpie_trio.llm.openai_compat import _encoded_body, _request_body
from kelpie_trio.llm.types import ChatMessage, LlmRequest

ROLES = ("user", "assistant", "tool", "approval")

# (kind, seq, role, text): "put" stores a message at seq (again, if it is there), "drop"
# makes seq the context's start, "keep" keeps the newest seq messages, "read" looks.
_op = st.tuples(
    st.sampled_from(("put", "put", "put", "drop", "keep", "read")),
    st.integers(min_value=0, max_value=30),
    st.sampled_from(ROLES),
    st.text(alphabet="ab c", max_size=12),
)


def _message(seq: int, role: str, text: str) -> Message:
    return Message(id=f"message-{seq}-{text}", agent_id="agent-1", seq=seq, role=role,
                   content=text, tool_call_id="call-1" if role == "tool" else None)  # fmt: skip


def _body_of(chats: ChatRun) -> tuple[Any, Any]:
    """(what the encoder sends, what building the body afresh gives) for a prompt showing
    `chats` after a system prompt."""
    request = LlmRequest(model="m", messages=Prompt((ChatMessage("system", "s"),), chats))
    sent = _encoded_body(request, stream=False, max_tokens_field="max_tokens")
    return orjson.loads(sent), _request_body(request, stream=False)


def _check(window: HistoryWindow, model: dict[int, Message]) -> None:
    ordered = [model[seq] for seq in sorted(model)]
    assert window.messages() == ordered
    assert len(window) == len(model)
    expected = [m for m in ordered if m.role != "approval"]
    shown = window.shown()
    assert [m is e for m, e in zip(shown.messages, expected, strict=True)] == [True] * len(expected)
    chats = [chat_message(m) for m in expected]
    assert list(shown.chats) == chats
    assert list(shown.tokens) == [estimate_tokens([c]) for c in chats]
    assert list(shown.roles) == [m.role for m in expected]
    for cut in range(len(expected) + 1):
        after = shown.after(cut)
        assert list(after.chats) == chats[cut:] and list(after.tokens) == list(shown.tokens)[cut:]
    sent, built = _body_of(shown.chats)
    assert sent == built and len(sent["messages"]) == 1 + len(chats)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=60))
def test_the_window_shows_what_building_from_the_stored_messages_would(ops: list) -> None:
    model: dict[int, Message] = {}
    window = HistoryWindow()
    window.compact_after = 2  # its columns made again often, not once in 64 drops
    snapshots: list[tuple[Shown, list[ChatMessage]]] = []  # each, with what it showed
    for kind, seq, role, text in ops:
        if kind == "put":
            model[seq] = window_message = _message(seq, role, text)
            window[seq] = window_message
        elif kind == "drop":
            model = {s: m for s, m in model.items() if s >= seq}
            window.drop_before(seq)
        elif kind == "keep":
            limit = max(1, seq)
            model = {s: model[s] for s in sorted(model)[-limit:]}
            window.keep_last(limit)
        else:
            _check(window, model)
            shown = window.shown()
            snapshots.append((shown, list(shown.chats)))
        assert (seq in window) == (seq in model)
    _check(window, model)
    for shown, chats in snapshots:  # later changes to the window reached none of them
        assert list(shown.chats) == chats
        sent, built = _body_of(shown.chats)
        assert sent == built


def test_a_snapshot_does_not_change_when_the_window_does() -> None:
    window = HistoryWindow([_message(0, "user", "hi"), _message(1, "assistant", "hello")])
    before = window.shown()
    window[2] = _message(2, "user", "more")
    window.drop_before(1)
    assert [m.seq for m in before.messages] == [0, 1] and len(before.chats) == 2
    assert [m.seq for m in window.shown().messages] == [1, 2]


def test_a_message_stored_again_at_its_place_is_shown_as_stored_now() -> None:
    window = HistoryWindow([_message(0, "user", "first"), _message(1, "assistant", "a")])
    window.shown()  # made once for the first versions
    window[0] = _message(0, "user", "second text")
    shown = window.shown()
    assert shown.chats[0].content == "second text"
    assert shown.tokens[0] == estimate_tokens([chat_message(_message(0, "user", "second text"))])
