"""The context window's plain functions: what to evict, and what the model is told."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kelpie_trio.agent.context import (
    AgentContext,
    estimate_tokens,
    plan_compaction,
    plan_eviction,
    recap,
    summary_message,
)
from kelpie_trio.agent.messages import Message
from kelpie_trio.llm.types import ChatMessage


def test_nothing_is_evicted_while_the_prompt_fits() -> None:
    assert plan_eviction(100, [10, 10, 10], ["user", "assistant", "user"], budget=130) == 0


def test_eviction_makes_room_below_the_target_not_just_below_the_budget() -> None:
    cut = plan_eviction(100, [100] * 10, ["user", "assistant"] * 5, budget=1000)
    assert cut == 4  # 1,100 tokens down to 700 (70% of the budget)


def test_a_tool_result_stays_with_its_call() -> None:
    roles = ["user", "assistant", "tool", "assistant", "user"]
    cut = plan_eviction(0, [10, 10, 10, 10, 10], roles, budget=40)
    assert roles[cut] != "tool"


@given(
    st.lists(st.sampled_from(["user", "assistant", "tool"]), min_size=1, max_size=30),
    st.integers(0, 500),
    st.integers(1, 2000),
    st.data(),
)
def test_a_cut_never_takes_the_newest_message_nor_starts_at_a_tool_result(
    roles: list[str], fixed: int, budget: int, data: st.DataObject
) -> None:
    tokens = data.draw(st.lists(st.integers(1, 300), min_size=len(roles), max_size=len(roles)))
    cut = plan_eviction(fixed, tokens, roles, budget)
    assert 0 <= cut <= len(roles) - 1
    if fixed + sum(tokens) <= budget:
        assert cut == 0
    if cut > 0 and "tool" not in roles[cut:-1]:
        assert roles[cut] != "tool" or cut == len(roles) - 1


def test_estimates_grow_with_the_text() -> None:
    short = estimate_tokens([ChatMessage("user", "hi")])
    long = estimate_tokens([ChatMessage("user", "hi " * 400)])
    assert long - short >= 290


def test_the_summary_is_told_to_the_model_and_a_recap_needs_no_model() -> None:
    assert summary_message(AgentContext()) is None
    note = summary_message(AgentContext(start_seq=9, summary="Ada likes tea.", evicted=9))
    assert (
        note is not None
        and "9 earlier messages" in note.content
        and "Ada likes tea." in note.content
    )
    evicted = [Message(id="m", agent_id="a", seq=0, role="user", content="I like tea")]
    assert "I like tea" in recap("Before: met Ada.", evicted)
    assert recap(None, evicted * 5000).__len__() <= 4000


def test_a_compaction_asked_for_evicts_its_share_even_when_the_prompt_fits() -> None:
    roles = ["user", "assistant"] * 5
    assert plan_compaction(10, [10] * 10, roles, budget=10_000) == 3  # 30 % of 10
    assert plan_compaction(10, [10] * 10, roles, budget=10_000, share=0.5) == 5
    assert plan_compaction(10, [10] * 10, roles, budget=10_000, share=1.0) == 9  # "all"


def test_a_compaction_asked_for_goes_on_until_the_rest_takes_its_share_of_the_budget() -> None:
    cut = plan_compaction(100, [100] * 10, ["user", "assistant"] * 5, budget=1000)
    assert cut == 4  # 1,100 tokens down to 700: 70 % of the budget, as an overflow would


def test_a_compaction_keeps_a_reply_whose_calls_wait_and_too_little_is_nothing() -> None:
    roles = ["user", "assistant", "user", "assistant", "tool", "user"]
    assert plan_compaction(0, [10] * 6, roles, budget=1000, share=1.0, keep_from=3) == 3
    assert plan_compaction(0, [10], ["user"], budget=1000) == 0  # the newest always stays
    assert plan_compaction(0, [10] * 4, roles[:4], budget=1000, keep_from=0) == 0


@given(
    st.lists(st.sampled_from(["user", "assistant", "tool"]), min_size=1, max_size=30),
    st.floats(0.01, 1.0),
    st.data(),
)
def test_a_compaction_never_takes_the_newest_nor_starts_at_a_tool_result(
    roles: list[str], share: float, data: st.DataObject
) -> None:
    sizes = data.draw(st.lists(st.integers(0, 300), min_size=len(roles), max_size=len(roles)))
    keep_from = data.draw(st.none() | st.integers(0, len(roles)))
    cut = plan_compaction(50, sizes, roles, 1000, share=share, keep_from=keep_from)
    assert 0 <= cut <= len(roles) - 1
    assert cut == 0 or roles[cut] != "tool"
    assert keep_from is None or cut <= keep_from
