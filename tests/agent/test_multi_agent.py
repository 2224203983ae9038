"""The multi-agent tools' decisions, without trio (agent/multi_agent.py): keys, what the
target is told, what comes back, who a tag fan-out reaches, and which waits close a cycle."""

from __future__ import annotations

from kelpie_trio.agent.multi_agent import (
    cycle_refusal,
    incoming_text,
    matching_agents,
    reply_result,
    reply_texts,
    send_key,
)
from kelpie_trio.tools.base import BASE_TOOLS, MULTI_AGENT_TOOLS, base_tool_names, base_tool_rules


def test_a_send_s_key_is_its_run_and_call_and_for_a_fan_out_its_target() -> None:
    assert send_key("run-1", "call-9") == "a2a:run-1:call-9"
    assert send_key("run-1", "call-9", "agent-b") == "a2a:run-1:call-9:agent-b"


def test_the_target_is_told_who_wrote_and_whether_its_answer_goes_back() -> None:
    asked = incoming_text("agent-a", "How many?", wait=True)
    assert asked == ("[Incoming message from agent with ID 'agent-a' - your response will be "
                     "delivered to the sender] How many?")  # fmt: skip
    told = incoming_text("agent-a", "FYI", wait=False)
    assert told.startswith("[Incoming message from agent with ID 'agent-a' - this is a one-way")
    assert told.endswith("] FYI")


def test_the_reply_is_the_target_s_assistant_messages_in_letta_s_shape() -> None:
    reply = {"messages": [
        {"message_type": "reasoning_message", "reasoning": "hm"},
        {"message_type": "assistant_message", "content": "3"},
        {"message_type": "assistant_message", "content": [{"type": "text", "text": "and 4"}]},
    ]}  # fmt: skip
    assert reply_texts(reply) == ["3", "and 4"]
    assert reply_texts({"messages": []}) == ["<no response>"]
    assert str(reply_result("agent-b", ["3"])) == "{'agent_id': 'agent-b', 'response': ['3']}"


def test_a_fan_out_reaches_all_of_match_all_and_some_of_match_some_but_not_the_sender() -> None:
    agents = [("me", ["crew", "day"]), ("a", ["crew", "day"]), ("b", ["crew", "night"]),
              ("c", ["crew"]), ("d", ["day"])]  # fmt: skip
    assert matching_agents(agents, "me", ["crew"], ["day", "night"]) == ["a", "b"]
    assert matching_agents(agents, "me", ["crew"], []) == ["a", "b", "c"]
    assert matching_agents(agents, "me", [], ["day"]) == ["a", "d"]
    assert matching_agents(agents, "me", [], []) == ["a", "b", "c", "d"]


def test_a_wait_on_an_agent_waiting_up_the_chain_or_on_oneself_is_refused() -> None:
    assert cycle_refusal([], "a", "b") is None
    assert cycle_refusal(["a"], "b", "c") is None
    refused = cycle_refusal(["a"], "b", "a")
    assert refused is not None and "a cycle of waiting agents (a -> b -> a)" in refused
    longer = cycle_refusal(["a", "b"], "c", "a")
    assert longer is not None and "(a -> b -> c -> a)" in longer
    itself = cycle_refusal([], "a", "a")
    assert itself is not None and "itself" in itself


def test_the_multi_agent_tools_come_when_asked_and_a_one_way_send_ends_the_turn() -> None:
    assert base_tool_names("memgpt_v2_agent", multi_agent=True)[-3:] == [
        "send_message_to_agent_and_wait_for_reply",
        "send_message_to_agent_async",
        "send_message_to_agents_matching_tags",
    ]
    assert not set(MULTI_AGENT_TOOLS) & set(base_tool_names("memgpt_v2_agent"))
    assert base_tool_names("react_agent", multi_agent=True) == sorted(MULTI_AGENT_TOOLS)
    assert {t.tool_type for t in BASE_TOOLS if t.name in MULTI_AGENT_TOOLS} == {
        "letta_multi_agent_core"
    }
    # As Letta: the one-way send ends the turn; the waiting tools get no rule.
    assert base_tool_rules(list(MULTI_AGENT_TOOLS)) == [
        {"type": "exit_loop", "tool_name": "send_message_to_agent_async", "prompt_template": None}
    ]
