"""Tool rules and the memory tools through letta-client, on a real node whose agents talk to a
scripted provider over loopback HTTP: each test reads back what the provider was offered at
each step (tools, tool_choice) and what the client was answered."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import letta_client
import pytest
import trio
from letta_client import AsyncLetta

from kelpie_trio.config import ServerConfig
from kelpie_trio.nursery.node import run_node
from tests.llm.fake_providers import (
    FakeProvider,
    Reply,
    anthropic_message,
    openai_completion,
    serving,
)

OPENAI = "openai/gpt-4o-mini"
ANTHROPIC = "anthropic/claude-sonnet-4-5-20250929"
V1_TOOLS = ["conversation_search", "memory_insert", "memory_replace"]


@contextlib.asynccontextmanager
async def node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *replies: Reply, openai: tuple[str, ...] = ()
) -> AsyncIterator[tuple[FakeProvider, AsyncLetta]]:
    """A node whose OpenAI and Anthropic are the fake; `openai` adds model names it serves."""
    with trio.fail_after(60):
        async with serving() as fake, trio.open_nursery() as nursery:
            fake.openai_models += [{"id": m, "object": "model", "created": 1, "owned_by": "fake"}
                                   for m in openai]  # fmt: skip
            monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
            monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
            monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
            monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url + "/v1")
            fake.script(*replies)
            stop = trio.Event()
            config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1)
            dispatcher = await nursery.start(
                functools.partial(run_node, config, shutdown=stop, handle_signals=False)
            )
            letta = AsyncLetta(base_url=dispatcher.address, max_retries=0)
            try:
                yield fake, letta
            finally:
                await letta.close()
                stop.set()


def call(name: str, call_id: str = "c1", **args: Any) -> Reply:
    return openai_completion(tool_calls=[(call_id, name, args)])


def offered(fake: FakeProvider) -> list[tuple[list[str], Any]]:
    """(tool names, tool_choice) of each request the provider got."""
    return [
        ([t["function"]["name"] for t in r.json.get("tools", [])], r.json.get("tool_choice"))
        for r in fake.received
    ]


def forced(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def returns(reply: Any) -> list[Any]:
    return [m for m in reply.messages if m.message_type == "tool_return_message"]


async def test_run_first_forces_its_tool_on_the_first_step_only(tmp_path, monkeypatch) -> None:
    script = [call("conversation_search", query="tea"), openai_completion("Done.")]
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=OPENAI, tool_rules=[{"type": "run_first", "tool_name": "conversation_search"}]
        )
        reply = await letta.agents.messages.create(agent.id, input="hi")
    assert offered(fake) == [(["conversation_search"], forced("conversation_search")),
                             (V1_TOOLS, "auto")]  # fmt: skip
    assert reply.stop_reason.stop_reason == "end_turn"


async def test_anthropic_is_forced_the_way_its_api_takes_it(tmp_path, monkeypatch) -> None:
    script = [anthropic_message(tool_uses=[("t1", "conversation_search", {"query": "x"})]),
              anthropic_message("Done.")]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=ANTHROPIC, tool_rules=[{"type": "run_first", "tool_name": "conversation_search"}]
        )
        await letta.agents.messages.create(agent.id, input="hi")
    first, second = (r.json for r in fake.received)
    assert [t["name"] for t in first["tools"]] == ["conversation_search"]
    assert first["tool_choice"] == {"type": "tool", "name": "conversation_search"}
    assert second["tool_choice"] == {"type": "auto"}


async def test_exit_loop_ends_the_turn_when_its_tool_is_called(tmp_path, monkeypatch) -> None:
    script = [call("memory_insert", label="human", new_string="Likes tea.")]
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=OPENAI,
            memory_blocks=[{"label": "human", "value": "Ada"}],
            tool_rules=[{"type": "exit_loop", "tool_name": "memory_insert"}],
        )
        reply = await letta.agents.messages.create(agent.id, input="I like tea")
        block = await letta.agents.blocks.retrieve("human", agent_id=agent.id)
    assert len(fake.received) == 1  # the model is not asked again
    assert reply.stop_reason.stop_reason == "tool_rule"
    assert block.value == "Ada\nLikes tea."


async def test_a_child_rule_offers_only_the_children_and_refuses_others(
    tmp_path, monkeypatch
) -> None:
    script = [
        call("memory_insert", label="human", new_string="Likes tea."),
        call("conversation_search", "c2", query="tea"),  # not allowed now
        call("memory_replace", "c3", label="human", old_string="Ada", new_string="Ada L."),
        openai_completion("Done."),
    ]
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=OPENAI,
            memory_blocks=[{"label": "human", "value": "Ada"}],
            tool_rules=[{"type": "constrain_child_tools", "tool_name": "memory_insert",
                         "children": ["memory_replace"]}],
        )  # fmt: skip
        reply = await letta.agents.messages.create(agent.id, input="I like tea")
    assert offered(fake) == [
        (V1_TOOLS, "auto"),
        (["memory_replace"], forced("memory_replace")),
        (["memory_replace"], forced("memory_replace")),  # the refused call did not count
        (V1_TOOLS, "auto"),
    ]
    refused = returns(reply)[1]
    assert refused.status == "error"
    assert refused.tool_return.startswith(
        "[ToolConstraintError] Cannot call conversation_search, valid tools include: "
        "['memory_replace']."
    )


async def test_parent_last_tool_hides_its_children_until_it_ran(tmp_path, monkeypatch) -> None:
    script = [call("memory_insert", label="human", new_string="x"),
              call("memory_replace", "c2", label="human", old_string="x", new_string="y"),
              openai_completion("Done.")]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=OPENAI,
            memory_blocks=[{"label": "human", "value": "Ada"}],
            tool_rules=[{"type": "parent_last_tool", "tool_name": "memory_insert",
                         "children": ["memory_replace"]}],
        )  # fmt: skip
        await letta.agents.messages.create(agent.id, input="go")
    assert offered(fake) == [
        (["conversation_search", "memory_insert"], "auto"),
        (["memory_replace"], forced("memory_replace")),
        (["conversation_search", "memory_insert"], "auto"),
    ]


async def test_conditional_picks_the_next_tool_from_the_output(tmp_path, monkeypatch) -> None:
    script = [call("memory_rethink", label="plan", new_memory="search"),
              call("conversation_search", "c2", query="plans"),
              openai_completion("Done.")]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=OPENAI,
            tools=["memory_rethink"],
            tool_rules=[{"type": "conditional", "tool_name": "memory_rethink",
                         "child_output_mapping": {"search": "conversation_search",
                                                  "write": "memory_insert"},
                         "default_child": "memory_replace"}],
        )  # fmt: skip
        await letta.agents.messages.create(agent.id, input="go")
        blocks = [b.label async for b in letta.agents.blocks.list(agent.id)]
    tools = [*V1_TOOLS, "memory_rethink"]
    assert offered(fake) == [(tools, "auto"),
                             (["conversation_search"], forced("conversation_search")),
                             (tools, "auto")]  # fmt: skip
    assert "plan" in blocks  # memory_rethink created the block it was asked to rewrite


async def test_max_count_per_step_stops_offering_the_tool(tmp_path, monkeypatch) -> None:
    script = [call("memory_insert", label="human", new_string="x"), openai_completion("Done.")]
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=OPENAI,
            memory_blocks=[{"label": "human", "value": "Ada"}],
            tool_rules=[{"type": "max_count_per_step", "tool_name": "memory_insert",
                         "max_count_limit": 1}],
        )  # fmt: skip
        await letta.agents.messages.create(agent.id, input="go")
    assert offered(fake) == [
        (V1_TOOLS, "auto"),
        (["conversation_search", "memory_replace"], "auto"),
    ]


async def test_required_before_exit_keeps_the_turn_until_the_tool_ran(
    tmp_path, monkeypatch
) -> None:
    script = [openai_completion("Bye."), call("conversation_search", query="x"),
              openai_completion("Bye now.")]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=OPENAI,
            tool_rules=[{"type": "required_before_exit", "tool_name": "conversation_search"}],
        )
        reply = await letta.agents.messages.create(agent.id, input="go")
    assert len(fake.received) == 3
    told = fake.received[1].json["messages"][-1]
    assert told["role"] == "user"
    assert (
        "You must call conversation_search at least once to exit the loop."
        in json.loads(told["content"])["reason"]
    )
    assert reply.stop_reason.stop_reason == "end_turn"


async def test_continue_loop_keeps_a_memgpt_agent_going_without_a_heartbeat(
    tmp_path, monkeypatch
) -> None:
    script = [call("memory_insert", label="human", new_string="x"),
              call("send_message", "c2", message="Done.")]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=OPENAI,
            agent_type="memgpt_v2_agent",
            memory_blocks=[{"label": "human", "value": "Ada"}],
            tool_rules=[{"type": "continue_loop", "tool_name": "memory_insert"}],
        )
        reply = await letta.agents.messages.create(agent.id, input="go")
    assert len(fake.received) == 2  # no request_heartbeat was asked for
    assert [m.content for m in reply.messages if m.message_type == "assistant_message"] == ["Done."]


async def test_a_requires_approval_rule_is_taken_and_a_bad_rule_refused(
    tmp_path, monkeypatch
) -> None:
    async with node(tmp_path, monkeypatch) as (_, letta):
        agent = await letta.agents.create(
            model=OPENAI, tool_rules=[{"type": "requires_approval", "tool_name": "memory_insert"}]
        )
        with pytest.raises(letta_client.UnprocessableEntityError) as bad:
            await letta.agents.update(agent.id, tool_rules=[{"type": "exit_loop"}])
        unchanged = await letta.agents.retrieve(agent.id)
    assert (agent.tool_rules[0].type, agent.tool_rules[0].tool_name) == (
        "requires_approval", "memory_insert")  # fmt: skip
    assert bad.value.body["detail"][0]["loc"] == ["body", "tool_rules", 0, "tool_name"]
    assert unchanged.tool_rules == agent.tool_rules  # refused: unchanged


async def test_a_call_to_a_tool_the_agent_lacks_is_not_run(tmp_path, monkeypatch) -> None:
    script = [call("archival_memory_insert", content="secret"), openai_completion("Oops.")]
    async with node(tmp_path, monkeypatch, *script) as (_, letta):
        agent = await letta.agents.create(model=OPENAI)  # no archival tools by default
        reply = await letta.agents.messages.create(agent.id, input="go")
        passages = await letta.agents.passages.list(agent.id)
    assert returns(reply)[0].status == "error"
    assert "no tool named 'archival_memory_insert'" in returns(reply)[0].tool_return
    assert list(passages) == []


async def test_a_read_only_block_is_not_edited(tmp_path, monkeypatch) -> None:
    script = [call("memory_replace", label="persona", old_string="calm", new_string="loud"),
              openai_completion("I tried.")]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (_, letta):
        agent = await letta.agents.create(
            model=OPENAI,
            memory_blocks=[{"label": "persona", "value": "I am calm.", "read_only": True}],
        )
        reply = await letta.agents.messages.create(agent.id, input="be loud")
        block = await letta.agents.blocks.retrieve("persona", agent_id=agent.id)
    assert returns(reply)[0].tool_return == "Error: This block is read-only and cannot be edited."
    assert block.value == "I am calm."


async def test_memory_insert_takes_new_string_and_refuses_line_numbers(
    tmp_path, monkeypatch
) -> None:
    script = [
        openai_completion(tool_calls=[
            ("c1", "memory_insert", {"label": "human", "new_string": "1→ Likes tea."}),
            ("c2", "memory_insert", {"label": "human", "new_string": "Zero", "insert_line": 0}),
            ("c3", "memory_insert", {"label": "human", "new_string": "x", "insert_line": 9}),
        ]),
        openai_completion("Done."),
    ]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (_, letta):
        agent = await letta.agents.create(
            model=OPENAI, memory_blocks=[{"label": "human", "value": "Ada"}]
        )
        reply = await letta.agents.messages.create(agent.id, input="go")
        block = await letta.agents.blocks.retrieve("human", agent_id=agent.id)
    first, second, third = returns(reply)
    assert first.status == "error" and "line number prefix" in first.tool_return
    assert second.status == "success" and second.tool_return == "Zero\nAda"
    assert third.status == "error" and "Invalid `insert_line` parameter: 9" in third.tool_return
    assert block.value == "Zero\nAda"


async def test_a_workflow_agent_starts_every_turn_from_a_clean_context(
    tmp_path, monkeypatch
) -> None:
    script = [openai_completion("One."), openai_completion("Two.")]
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(model=OPENAI, agent_type="workflow_agent")
        await letta.agents.messages.create(agent.id, input="first")
        await letta.agents.messages.create(agent.id, input="second")
        history = [m async for m in letta.agents.messages.list(agent.id)]
    assert agent.message_buffer_autoclear is True
    second = fake.received[1].json["messages"]
    assert [m["role"] for m in second] == ["system", "user"]
    assert second[-1]["content"] == "second"
    assert len(history) == 4  # the history is kept; only the context was cleared


async def test_new_agents_get_letta_s_base_tool_rules(tmp_path, monkeypatch) -> None:
    """As Letta 0.16.8: memgpt agents get rules for their base tools (send_message ends the
    turn, the others keep it going); letta_v1_agent only when it has rules of its own."""
    script = [call("memory_insert", label="human", new_string="x"),
              call("send_message", "c2", message="Done.", request_heartbeat=True)]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        memgpt = await letta.agents.create(
            model=OPENAI, agent_type="memgpt_v2_agent",
            memory_blocks=[{"label": "human", "value": "Ada"}],
        )  # fmt: skip
        reply = await letta.agents.messages.create(memgpt.id, input="go")
        v1 = await letta.agents.create(model=OPENAI)
        v1_ruled = await letta.agents.create(
            model=OPENAI, tool_rules=[{"type": "exit_loop", "tool_name": "memory_insert"}]
        )
        bare = await letta.agents.create(
            model=OPENAI, agent_type="memgpt_v2_agent", include_base_tool_rules=False
        )
    rules = [(r.type, r.tool_name) for r in memgpt.tool_rules]
    assert rules == [
        ("exit_loop", "send_message"),
        ("continue_loop", "conversation_search"),
        ("continue_loop", "memory_insert"),
        ("continue_loop", "memory_replace"),
    ]
    assert len(fake.received) == 2  # memory_insert went on without a heartbeat
    assert reply.stop_reason.stop_reason == "tool_rule"  # send_message ended a heartbeat
    assert not v1.tool_rules
    assert [(r.type, r.tool_name) for r in v1_ruled.tool_rules] == [
        ("exit_loop", "memory_insert"), ("continue_loop", "conversation_search"),
        ("continue_loop", "memory_insert"), ("continue_loop", "memory_replace"),
    ]  # fmt: skip
    assert not bare.tool_rules


async def test_the_memory_tool_and_patches_through_a_memgpt_agent(tmp_path, monkeypatch) -> None:
    patch = "@@\n Name: Ada\n-City: Paris\n+City: Lisbon"
    script = [
        call("memory", command="create", path="/memories/prefs", description="Likes.",
             file_text="tea"),
        call("memory_apply_patch", "c2", label="human", patch=patch),
        call("memory", "c3", command="rename", old_path="/memories/prefs",
             new_path="/memories/likes"),
        call("send_message", "c4", message="Done."),
    ]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=OPENAI, agent_type="memgpt_agent",
            memory_blocks=[{"label": "human", "value": "Name: Ada\nCity: Paris"}],
        )  # fmt: skip
        reply = await letta.agents.messages.create(agent.id, input="I moved to Lisbon")
        blocks = {b.label: b async for b in letta.agents.blocks.list(agent.id)}
    assert [r.status for r in returns(reply)] == ["success"] * 4
    assert blocks["human"].value == "Name: Ada\nCity: Lisbon"
    assert blocks["likes"].value == "tea" and blocks["likes"].description == "Likes."
    assert "prefs" not in blocks
    assert reply.stop_reason.stop_reason == "end_turn"  # send_message, no heartbeat asked
    # the new block is in the prompt of the step after it was made
    assert "<prefs>" in fake.received[1].json["messages"][0]["content"]


async def test_memory_finish_edits_ends_a_sleeptime_agent_s_turn(tmp_path, monkeypatch) -> None:
    script = [call("memory_rethink", label="human", new_memory="Ada, in Lisbon.",
                   request_heartbeat=True),
              call("memory_finish_edits", "c2", request_heartbeat=True)]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=OPENAI, agent_type="sleeptime_agent",
            memory_blocks=[{"label": "human", "value": "Ada"}],
        )  # fmt: skip
        reply = await letta.agents.messages.create(agent.id, input="Ada moved to Lisbon.")
        block = await letta.agents.blocks.retrieve("human", agent_id=agent.id)
    assert block.value == "Ada, in Lisbon."
    assert len(fake.received) == 2 and reply.stop_reason.stop_reason == "tool_rule"
