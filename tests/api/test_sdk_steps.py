"""letta-client's steps on a real server (the offline sim model): each iteration of a turn is
a Step with its tokens, stop reason and messages; feedback is stored; a run's steps page."""

from __future__ import annotations

import httpx
import letta_client
import pytest
from letta_client import Letta


def _turn(letta: Letta, name: str) -> tuple[str, str]:
    agent = letta.agents.create(name=name)
    sent = letta.agents.messages.create(agent.id, messages=[{"role": "user", "content": "hi"}])
    run_id = next(m.run_id for m in sent.messages if getattr(m, "run_id", None))
    return agent.id, run_id


def test_a_turns_steps_carry_usage_stop_reason_and_messages(letta: Letta) -> None:
    agent_id, run_id = _turn(letta, "stepper")
    run_steps = list(letta.runs.steps.list(run_id, order="asc"))
    assert run_steps, "a turn has at least one step"
    usage = letta.runs.usage.retrieve(run_id)
    assert sum(s.prompt_tokens for s in run_steps) == usage.prompt_tokens
    assert sum(s.completion_tokens for s in run_steps) == usage.completion_tokens
    last = run_steps[-1]
    assert last.stop_reason == letta.runs.retrieve(run_id).stop_reason
    assert all(s.agent_id == agent_id and s.run_id == run_id for s in run_steps)
    assert letta.steps.retrieve(last.id).id == last.id
    produced = [m.id for s in run_steps for m in letta.steps.messages.list(s.id)]
    run_messages = [
        m.id for m in letta.runs.messages.list(run_id) if m.message_type != "user_message"
    ]
    assert sorted(set(produced)) == sorted(set(run_messages))
    metrics = letta.steps.metrics.retrieve(last.id)
    assert metrics.id == last.id and metrics.step_ns is not None
    assert letta.steps.trace.retrieve(last.id) is None  # traces are off
    assert letta.runs.trace.retrieve(run_id) == []


def test_a_steps_metrics_time_its_model_request_and_tools(letta: Letta) -> None:
    _, run_id = _turn(letta, "timed")
    for step in letta.runs.steps.list(run_id, order="asc"):
        metrics = letta.steps.metrics.retrieve(step.id)
        assert (metrics.id, metrics.run_id) == (step.id, run_id)
        llm, tools = metrics.llm_request_ns, metrics.tool_execution_ns
        assert llm is not None and llm > 0, "the model was asked in this step"
        assert tools is not None and tools >= 0
        assert metrics.step_ns is not None and metrics.step_ns >= llm + tools
        assert metrics.step_start_ns is not None and metrics.llm_request_start_ns is not None
        assert metrics.step_start_ns <= metrics.llm_request_start_ns
        assert metrics.llm_request_start_ns + llm <= metrics.step_start_ns + metrics.step_ns


def test_feedback_is_stored_and_filters_the_list(letta: Letta) -> None:
    agent_id, run_id = _turn(letta, "judged")
    step = next(iter(letta.runs.steps.list(run_id)))
    given = letta.steps.feedback.create(step.id, feedback="positive", tags=["helpful"])
    assert given.feedback == "positive" and given.tags == ["helpful"]
    assert letta.steps.retrieve(step.id).feedback == "positive"
    liked = [s.id for s in letta.steps.list(agent_id=agent_id, feedback="positive")]
    assert liked == [step.id]
    assert [s.id for s in letta.steps.list(agent_id=agent_id, has_feedback=False)] == [
        s.id for s in letta.runs.steps.list(run_id) if s.id != step.id
    ]


def test_steps_go_with_their_run_and_agent(letta: Letta, server_url: str) -> None:
    agent_id, run_id = _turn(letta, "forgotten")
    step_ids = [s.id for s in letta.runs.steps.list(run_id)]
    assert httpx.delete(f"{server_url}/v1/runs/{run_id}").status_code == 200
    for step_id in step_ids:
        with pytest.raises(letta_client.NotFoundError):
            letta.steps.retrieve(step_id)
    _, second_run = _turn(letta, "forgotten-too")
    agent_id = letta.runs.retrieve(second_run).agent_id
    letta.agents.delete(agent_id)
    assert list(letta.steps.list(agent_id=agent_id)) == []


def test_steps_page_by_cursor(letta: Letta) -> None:
    agent_id, _ = _turn(letta, "paged-steps")
    _turn(letta, "other-steps")
    everything = [s.id for s in letta.steps.list(agent_id=agent_id, limit=1000)]
    paged = [s.id for s in letta.steps.list(agent_id=agent_id, limit=1)]  # follows ?after=
    assert paged == everything and len(set(paged)) == len(paged)


def test_unknown_and_malformed_step_ids(letta: Letta) -> None:
    with pytest.raises(letta_client.NotFoundError):
        letta.steps.retrieve("step-00000000-0000-4000-8000-000000000000")
    with pytest.raises(letta_client.UnprocessableEntityError):
        letta.steps.retrieve("not-a-step")
    with pytest.raises(letta_client.NotFoundError):
        letta.runs.steps.list("run-00000000-0000-4000-8000-000000000000")
    with pytest.raises(letta_client.UnprocessableEntityError):
        letta.steps.feedback.create(
            "step-00000000-0000-4000-8000-000000000000",
            feedback="meh",  # type: ignore[arg-type]
        )
