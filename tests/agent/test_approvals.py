"""The decisions of parked runs, without trio: which calls wait, what an answer does to
each call, and which answers fit the calls that wait."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from kelpie_trio.agent.approvals import match_answers, results_at
from kelpie_trio.agent.messages import Message, StoredToolCall, to_letta_messages
from kelpie_trio.agent.runs import Answer, ClientTool, PendingToolCall
from kelpie_trio.agent.step import Interpretation, judge_calls, parse_calls
from kelpie_trio.agent.tool_rules import TurnState, offer, rules_of
from kelpie_trio.errors import ServiceError

TOOLS = [SimpleNamespace(name=n, json_schema={}, default_requires_approval=n == "wire")
         for n in ("wire", "memory_insert", "conversation_search")]  # fmt: skip
RULES = rules_of([{"type": "requires_approval", "tool_name": "memory_insert"}])


def step(*calls: tuple[str, str]) -> Interpretation:
    stored = [StoredToolCall(id=i, name=n, arguments="{}") for i, n in calls]
    parsed, _ = parse_calls(stored)
    assistant = Message(id="m", agent_id="a", seq=7, role="assistant", tool_calls=stored)
    return Interpretation(assistant, parsed, False)


def judge(interpretation: Interpretation, **kw: Any) -> Any:
    state = TurnState((), None)
    on_offer = offer(RULES, [t.name for t in TOOLS], state)
    return judge_calls(interpretation, rules=RULES, offer=on_offer, state=state, tools=TOOLS, **kw)


def test_calls_needing_approval_or_the_client_wait_and_the_others_do_not() -> None:
    judged = judge(
        step(("c1", "wire"), ("c2", "memory_insert"), ("c3", "conversation_search"),
             ("c4", "get_weather"), ("c5", "nowhere")),
        client_tools=[ClientTool(name="get_weather")],
    )  # fmt: skip
    assert judged.waiting == {"c1": "approval", "c2": "approval", "c4": "client"}
    assert set(judged.refusals) == {"c5"}  # an unknown tool is refused, never run


def test_answers_decide_each_waiting_call() -> None:
    answers = {
        "c1": Answer(tool_call_id="c1", kind="approval", approve=True),
        "c2": Answer(tool_call_id="c2", kind="approval", approve=False, reason="no"),
        "c4": Answer(tool_call_id="c4", kind="tool", status="error", tool_return="rain"),
    }
    judged = judge(
        step(("c1", "wire"), ("c2", "memory_insert"), ("c4", "get_weather")),
        client_tools=[ClientTool(name="get_weather")], answers=answers, resumed=True,
    )  # fmt: skip
    assert judged.waiting == {}
    assert "c1" not in judged.refusals  # approved: it runs
    assert "denied" in judged.refusals["c2"] and "no" in judged.refusals["c2"]
    assert judged.given == {"c4": ("error", "rain")}


def test_a_resumed_step_runs_no_call_that_starts_to_need_approval() -> None:
    judged = judge(step(("c1", "wire")), resumed=True)
    assert judged.waiting == {} and "c1" in judged.refusals


def test_answers_must_name_exactly_the_waiting_calls_once() -> None:
    calls = [PendingToolCall(id="c1", name="wire", arguments="{}", waits_for="approval"),
             PendingToolCall(id="c2", name="look", arguments="{}", waits_for="client"),
             PendingToolCall(id="c3", name="memory_insert", arguments="{}")]  # fmt: skip
    yes = Answer(tool_call_id="c1", kind="approval", approve=True)
    back = Answer(tool_call_id="c2", kind="tool", status="success", tool_return="ok")
    assert set(match_answers(calls, [yes, back], "m")) == {"c1", "c2"}
    for wrong in ([yes], [yes, back, back], [yes, back, Answer(tool_call_id="c3", kind="tool")],
                  []):  # fmt: skip
        with pytest.raises(ServiceError):
            match_answers(calls, wrong, "m")
    with pytest.raises(ServiceError, match="client-side tool"):  # never run on the server
        match_answers(calls, [yes, Answer(tool_call_id="c2", kind="approval", approve=True)], "m")


def test_letta_s_legacy_answer_names_the_request_message() -> None:
    calls = [PendingToolCall(id="c1", name="wire", arguments="{}", waits_for="approval")]
    legacy = Answer(tool_call_id="message-1", kind="approval", approve=False)
    assert list(match_answers(calls, [legacy], "message-1")) == ["c1"]


def test_a_waiting_reply_shows_one_approval_request_and_keeps_a_place_for_the_answer() -> None:
    calls = [StoredToolCall(id="c1", name="wire", arguments="{}", waits_for="approval"),
             StoredToolCall(id="c2", name="conversation_search", arguments="{}"),
             StoredToolCall(id="c3", name="look", arguments="{}", waits_for="client")]  # fmt: skip
    reply = Message(id="m", agent_id="a", seq=7, role="assistant", tool_calls=calls)
    shown = to_letta_messages(reply)
    assert [m["message_type"] for m in shown] == ["tool_call_message", "approval_request_message"]
    assert [c["tool_call_id"] for c in shown[-1]["tool_calls"]] == ["c1", "c3"]
    assert results_at(reply) == 9  # 8 is the answer's
