"""letta-client on a real server: async runs, cancel, idempotent sends, token streams and
tools run directly (the offline sim model: what it says is not checked, only its shape)."""

from __future__ import annotations

import time

import httpx
import letta_client
import pytest
from letta_client import Letta

FINAL = ("completed", "failed", "cancelled")


def wait_for_run(letta: Letta, run_id: str) -> letta_client.types.Run:
    """Poll the run as a client would, up to 30 s of real time."""
    deadline = time.monotonic() + 30
    while True:
        run = letta.runs.retrieve(run_id)
        if run.status in FINAL or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def test_sdk_async_run_reports_status_messages_and_usage(letta: Letta) -> None:
    agent = letta.agents.create(name="async")
    started = letta.agents.messages.create_async(
        agent.id, messages=[{"role": "user", "content": "hello"}]
    )
    assert started.id.startswith("run-") and started.agent_id == agent.id
    run = wait_for_run(letta, started.id)
    assert run.status == "completed" and run.stop_reason == "end_turn"
    messages = list(letta.runs.messages.list(run.id))
    assert messages[0].message_type == "user_message"
    assert {m.run_id for m in messages} == {run.id}
    assert letta.runs.usage.retrieve(run.id).total_tokens > 0
    assert run.id in {r.id for r in letta.runs.list(agent_id=agent.id)}
    with pytest.raises(letta_client.NotFoundError):
        letta.runs.retrieve("run-00000000-0000-4000-8000-000000000000")


def test_sdk_cancel_answers_for_each_run(letta: Letta) -> None:
    agent = letta.agents.create(name="cancelled")
    started = letta.agents.messages.create_async(agent.id, input="hello")
    outcome = letta.agents.messages.cancel(agent.id, run_ids=[started.id])
    run = wait_for_run(letta, started.id)
    # The sim model answers fast: the cancel may come after the turn ended.
    if outcome[started.id] == "cancelled":
        assert run.status == "cancelled" and run.stop_reason == "cancelled"
    else:
        assert outcome[started.id] == run.status == "completed"
    assert letta.agents.messages.cancel(agent.id) == {}  # nothing left running


def test_sdk_a_retried_send_with_the_same_key_runs_the_turn_once(letta: Letta) -> None:
    agent = letta.agents.create(name="idempotent")
    send = {"messages": [{"role": "user", "content": "once", "otid": "client-msg-1"}]}
    first = letta.agents.messages.create(agent.id, **send)
    again = letta.agents.messages.create(agent.id, **send)
    assert [m.id for m in again.messages] == [m.id for m in first.messages]
    keyed = letta.agents.messages.create(
        agent.id, input="keyed", extra_headers={"Idempotency-Key": "k-1"}
    )
    keyed_again = letta.agents.messages.create(
        agent.id, input="keyed", extra_headers={"Idempotency-Key": "k-1"}
    )
    assert [m.id for m in keyed_again.messages] == [m.id for m in keyed.messages]
    with pytest.raises(letta_client.ConflictError):
        letta.agents.messages.create(
            agent.id, input="something else", extra_headers={"Idempotency-Key": "k-1"}
        )
    users = [
        m
        for m in letta.agents.messages.list(agent.id, order="asc")
        if m.message_type == "user_message"
    ]
    assert [m.content for m in users] == ["once", "keyed"]


def test_sdk_streams_tokens(letta: Letta) -> None:
    agent = letta.agents.create(name="tokens", agent_type="memgpt_v2_agent")
    events = list(
        letta.agents.messages.create(
            agent.id, input="hi", streaming=True, stream_tokens=True, include_pings=True
        )
    )
    kinds = [e.message_type for e in events]
    assert kinds[0] == "user_message" and kinds[-2:] == ["stop_reason", "usage_statistics"]
    deltas: dict[str, list[str]] = {}  # message id -> its reasoning, piece by piece
    for e in events:
        if e.message_type == "reasoning_message":
            deltas.setdefault(e.id, []).append(e.reasoning)
    assert deltas and all(len(pieces) > 1 for pieces in deltas.values())
    stored = {
        m.id: m.reasoning
        for m in letta.agents.messages.list(agent.id, order="asc")
        if m.message_type == "reasoning_message"
    }
    assert {i: "".join(pieces) for i, pieces in deltas.items()} == stored


def test_sdk_runs_a_tool_directly(letta: Letta) -> None:
    agent = letta.agents.create(
        name="tool-runner", memory_blocks=[{"label": "human", "value": "Ada"}]
    )
    result = letta.agents.tools.run(
        "memory_insert", agent_id=agent.id, args={"label": "human", "new_str": "Likes tea."}
    )
    assert result.status == "success"
    block = letta.agents.blocks.retrieve("human", agent_id=agent.id)
    assert block.value == "Ada\nLikes tea."
    failed = letta.agents.tools.run("memory_insert", agent_id=agent.id, args={"label": "nope"})
    assert failed.status == "error"
    with pytest.raises(letta_client.NotFoundError):
        letta.agents.tools.run("no_such_tool", agent_id=agent.id, args={})


def test_sessions_are_listed_and_a_finished_one_cannot_move(server_url: str) -> None:
    with httpx.Client(base_url=server_url, timeout=30) as http:
        source = http.post("/v1/agents/", json={"name": "from"}).json()["id"]
        target = http.post("/v1/agents/", json={"name": "to"}).json()["id"]
        reply = http.post(f"/v1/agents/{source}/messages", json={"input": "hi"}).json()
        run_id = reply["usage"]["run_ids"][0]
        [session] = http.get(f"/v1/agents/{source}/sessions").json()
        assert session["session_id"] == run_id and session["status"] == "completed"
        assert session["iteration"] == reply["usage"]["step_count"]
        assert http.get(f"/v1/agents/{source}/sessions/{run_id}").json() == session
        moved = http.post(f"/v1/agents/{source}/sessions/{run_id}/transfer",
                          json={"target_agent_id": target})  # fmt: skip
        assert moved.status_code == 409 and "finished" in moved.json()["detail"]
        bad = http.post(f"/v1/agents/{source}/sessions/{run_id}/transfer",
                        json={"target_agent_id": "bob"})  # fmt: skip
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == [
            "body", "target_agent_id",
        ]  # fmt: skip
        assert http.get(f"/v1/agents/{target}/sessions").json() == []
