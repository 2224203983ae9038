"""letta-client sends messages to an agent on a real server (the offline sim model)."""

from __future__ import annotations

import letta_client
import pytest
from letta_client import Letta


def test_sdk_sends_a_message_and_reads_the_history(letta: Letta) -> None:
    agent = letta.agents.create(name="talker", memory_blocks=[{"label": "human", "value": "Ada"}])
    response = letta.agents.messages.create(
        agent.id, messages=[{"role": "user", "content": "hello"}]
    )
    assert {"messages", "stop_reason", "usage"} <= response.model_fields_set
    assert response.stop_reason.stop_reason == "end_turn"
    assert response.messages[0].message_type == "user_message"
    assert response.messages[-1].message_type == "assistant_message"
    listed = list(letta.agents.messages.list(agent.id, limit=1, order="asc"))  # pages one by one
    assert [m.id for m in listed] == [m.id for m in response.messages]


def test_sdk_sees_clear_errors_for_unknown_agents_and_empty_sends(letta: Letta) -> None:
    with pytest.raises(letta_client.NotFoundError):
        letta.agents.messages.create(
            "agent-00000000-0000-4000-8000-000000000000",
            messages=[{"role": "user", "content": "hi"}],
        )
    agent = letta.agents.create(name="quiet")
    with pytest.raises(letta_client.UnprocessableEntityError):
        letta.agents.messages.create(agent.id, messages=[])


def test_sdk_streams_a_turn_as_events(letta: Letta) -> None:
    agent = letta.agents.create(name="streamer")
    with pytest.deprecated_call():  # the SDK deprecates .stream() for create(streaming=True)
        events = list(
            letta.agents.messages.stream(agent.id, messages=[{"role": "user", "content": "hi"}])
        )
    kinds = [e.message_type for e in events]
    assert kinds[0] == "user_message" and "assistant_message" in kinds
    assert kinds[-2:] == ["stop_reason", "usage_statistics"]
    again = list(
        letta.agents.messages.create(
            agent.id, messages=[{"role": "user", "content": "again"}], streaming=True
        )
    )
    assert again[-2].stop_reason == "end_turn"
    stored = list(letta.agents.messages.list(agent.id, order="asc"))
    assert len(stored) >= 4  # both turns are in the history


def test_sdk_resets_the_history(letta: Letta) -> None:
    agent = letta.agents.create(name="forgetful")
    letta.agents.messages.create(agent.id, messages=[{"role": "user", "content": "hi"}])
    state = letta.agents.messages.reset(agent.id)
    assert state.id == agent.id
    assert list(letta.agents.messages.list(agent.id, order="asc")) == []
