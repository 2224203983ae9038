"""The multi-agent tools through a real node and letta-client, with a scripted provider: a
supervisor created with include_multi_agent_tools asks two workers and combines their
answers; a tag fan-out reaches the tagged agents but not the sender; the tools are the
server's own (`letta_multi_agent_core`) and can be attached by name; a cycle of waits fails at
once with a tool error and both turns end."""

from __future__ import annotations

import ast
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from letta_client import AsyncLetta

from kelpie_trio.config import ServerConfig
from kelpie_trio.nursery.node import run_node
from tests.llm.fake_providers import FakeProvider, openai_completion, serving

MULTI = {
    "send_message_to_agent_and_wait_for_reply",
    "send_message_to_agent_async",
    "send_message_to_agents_matching_tags",
}


@asynccontextmanager
async def node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncLetta, FakeProvider]]:
    async with serving() as fake, trio.open_nursery() as nursery:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
        stop = trio.Event()
        config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1)
        dispatcher = await nursery.start(
            functools.partial(run_node, config, shutdown=stop, handle_signals=False)
        )
        try:
            yield AsyncLetta(base_url=dispatcher.address, max_retries=0), fake
        finally:
            stop.set()


async def test_a_supervisor_asks_two_workers_and_combines_their_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(60):
        async with node(tmp_path, monkeypatch) as (letta, fake):
            model = "openai/gpt-4o-mini"
            # The SDK has no parameter for it; Letta's server still takes the field.
            boss = await letta.agents.create(
                model=model, extra_body={"include_multi_agent_tools": True}
            )
            tools = {t.name: t for t in boss.tools}
            assert set(tools) >= MULTI
            assert {tools[n].tool_type for n in MULTI} == {"letta_multi_agent_core"}
            w1 = await letta.agents.create(model=model, name="w1")
            w2 = await letta.agents.create(model=model, name="w2")
            assert not MULTI & {t.name for t in w1.tools}  # only when asked for

            wait = "send_message_to_agent_and_wait_for_reply"
            fake.script(
                openai_completion(
                    tool_calls=[
                        ("c1", wait, {"message": "What is 1+2?", "other_agent_id": w1.id}),
                        ("c2", wait, {"message": "What is 2+2?", "other_agent_id": w2.id}),
                    ]
                ),
                openai_completion("3"),  # w1's turn (the waits run one after the other)
                openai_completion("4"),  # w2's
                openai_completion("The answers are 3 and 4."),
            )
            reply = await letta.agents.messages.create(
                boss.id, messages=[{"role": "user", "content": "Ask the workers."}]
            )
            returns = [m for m in reply.messages if m.message_type == "tool_return_message"]
            assert [(r.status, r.tool_return) for r in returns] == [
                ("success", str({"agent_id": w1.id, "response": ["3"]})),
                ("success", str({"agent_id": w2.id, "response": ["4"]})),
            ]
            said = [m.content for m in reply.messages if m.message_type == "assistant_message"]
            assert said == ["The answers are 3 and 4."]
            # The worker saw who asked, in the message its turn started with.
            asked = fake.received[1].json["messages"]
            assert any(
                f"[Incoming message from agent with ID '{boss.id}'" in str(m["content"])
                and "What is 1+2?" in str(m["content"])
                for m in asked
            ), asked
            history = await letta.agents.messages.list(w1.id)
            assert any(
                m.message_type == "system_message" and "What is 1+2?" in m.content
                for m in history.items
            )


async def test_a_tag_fan_out_reaches_the_tagged_agents_but_not_the_sender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(60):
        async with node(tmp_path, monkeypatch) as (letta, fake):
            model = "openai/gpt-4o-mini"
            fan = "send_message_to_agents_matching_tags"
            boss = await letta.agents.create(model=model, tools=[fan], tags=["crew", "lead"])
            assert fan in {t.name for t in boss.tools}  # attached by name
            a = await letta.agents.create(model=model, tags=["crew", "night"])
            b = await letta.agents.create(model=model, tags=["crew", "day"])
            await letta.agents.create(model=model, tags=["crew"])  # no shift: not asked
            await letta.agents.create(model=model, tags=["night"])  # not crew: not asked
            fake.script(
                openai_completion(tool_calls=[("f", fan, {"message": "Report.",
                    "match_all": ["crew"], "match_some": ["night", "day", "lead"]})]),
                openai_completion("All quiet."),  # the two workers, in either order
                openai_completion("All quiet."),
                openai_completion("Both report all quiet."),
            )  # fmt: skip
            reply = await letta.agents.messages.create(
                boss.id, messages=[{"role": "user", "content": "Roll call."}]
            )
            [returned] = [m for m in reply.messages if m.message_type == "tool_return_message"]
            assert returned.status == "success", returned.tool_return
            slots = ast.literal_eval(returned.tool_return)
            assert sorted(s["agent_id"] for s in slots) == sorted([a.id, b.id])
            assert all(s["response"] == ["All quiet."] for s in slots)
            assert len(fake.received) == 4


async def test_a_cycle_of_waits_fails_at_once_with_a_tool_error_and_both_turns_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(60):
        async with node(tmp_path, monkeypatch) as (letta, fake):
            model = "openai/gpt-4o-mini"
            wait = "send_message_to_agent_and_wait_for_reply"
            a = await letta.agents.create(model=model, tools=[wait])
            b = await letta.agents.create(model=model, tools=[wait])
            fake.script(
                openai_completion(tool_calls=[("ab", wait, {"message": "Ask A.",
                                                            "other_agent_id": b.id})]),
                openai_completion(tool_calls=[("ba", wait, {"message": "What?",
                                                            "other_agent_id": a.id})]),
                openai_completion("A is busy waiting on me."),  # B, after the refusal
                openai_completion("B could not ask me back."),  # A, with B's answer
            )  # fmt: skip
            reply = await letta.agents.messages.create(
                a.id, messages=[{"role": "user", "content": "Go."}]
            )
            assert reply.stop_reason.stop_reason == "end_turn"
            [returned] = [m for m in reply.messages if m.message_type == "tool_return_message"]
            assert returned.tool_return == str(
                {"agent_id": b.id, "response": ["A is busy waiting on me."]}
            )
            b_history = await letta.agents.messages.list(b.id)
            [refused] = [m for m in b_history.items if m.message_type == "tool_return_message"]
            assert refused.status == "error"
            assert f"a cycle of waiting agents ({a.id} -> {b.id} -> {a.id})" in refused.tool_return
