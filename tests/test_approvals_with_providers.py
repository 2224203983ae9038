"""Human in the loop and client-side tools through letta-client, on a real node whose agents
talk to a scripted provider (strict: it refuses a tool result that answers no call) over
loopback HTTP. A call that needs the client runs only after it answered: approved, it runs;
denied, the model gets the denial; a client-side tool's return is its result."""

from __future__ import annotations

import json
from typing import Any

import letta_client
import pytest

from tests.llm.fake_providers import openai_completion, openai_stream
from tests.test_tool_rules_with_providers import OPENAI, V1_TOOLS, call, node, offered, returns

APPROVE_INSERT = [{"type": "requires_approval", "tool_name": "memory_insert"}]


def of_type(reply: Any, kind: str) -> list[Any]:
    return [m for m in reply.messages if m.message_type == kind]


def approve(*call_ids: str, deny: tuple[str, ...] = (), reason: str | None = None) -> list[dict]:
    answers = [{"type": "approval", "tool_call_id": c, "approve": True} for c in call_ids]
    answers += [{"type": "approval", "tool_call_id": c, "approve": False, "reason": reason}
                for c in deny]  # fmt: skip
    return [{"type": "approval", "approvals": answers}]


async def parked_agent(letta: Any, **fields: Any) -> Any:
    return await letta.agents.create(
        model=OPENAI, memory_blocks=[{"label": "human", "value": "Ada"}], **fields
    )


async def test_an_approved_call_runs_only_after_its_approval(tmp_path, monkeypatch) -> None:
    script = [call("memory_insert", label="human", new_string="Likes tea."),
              openai_completion("Noted.")]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await parked_agent(letta, tool_rules=APPROVE_INSERT)
        asked = await letta.agents.messages.create(agent.id, input="I like tea")
        before = await letta.agents.blocks.retrieve("human", agent_id=agent.id)
        asked_once = len(fake.received)
        run = await letta.runs.retrieve(asked.messages[-1].run_id)
        answered = await letta.agents.messages.create(agent.id, messages=approve("c1"))
        after = await letta.agents.blocks.retrieve("human", agent_id=agent.id)
        history = [m.message_type async for m in letta.agents.messages.list(agent.id, order="asc")]
    assert asked.stop_reason.stop_reason == "requires_approval"
    (request,) = of_type(asked, "approval_request_message")
    assert request.tool_call.tool_call_id == "c1" and request.tool_call.name == "memory_insert"
    assert [c.tool_call_id for c in request.tool_calls] == ["c1"]
    assert before.value == "Ada" and asked_once == 1  # nothing ran, nobody was asked again
    assert (run.status, run.stop_reason) == ("completed", "requires_approval")  # as Letta
    (response,) = of_type(answered, "approval_response_message")
    assert response.approvals[0].approve is True and response.approvals[0].tool_call_id == "c1"
    assert [r.status for r in returns(answered)] == ["success"]
    assert of_type(answered, "assistant_message")[0].content == "Noted."
    assert answered.stop_reason.stop_reason == "end_turn"
    assert after.value == "Ada\nLikes tea."
    # The model saw the call and its result, in order, and not the answer itself.
    roles = [m["role"] for m in fake.received[1].json["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]
    assert offered(fake)[1] == (V1_TOOLS, "auto")
    assert history == ["user_message", "approval_request_message", "approval_response_message",
                       "tool_return_message", "assistant_message"]  # fmt: skip


async def test_a_denied_call_is_not_run_and_the_model_is_told_why(tmp_path, monkeypatch) -> None:
    script = [call("memory_insert", label="human", new_string="Hates tea."),
              openai_completion("Understood.")]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await parked_agent(letta, tool_rules=APPROVE_INSERT)
        await letta.agents.messages.create(agent.id, input="I hate tea")
        answered = await letta.agents.messages.create(
            agent.id, messages=approve(deny=("c1",), reason="not true")
        )
        block = await letta.agents.blocks.retrieve("human", agent_id=agent.id)
    (result,) = returns(answered)
    assert result.status == "error" and "denied" in result.tool_return
    assert "not true" in result.tool_return
    assert block.value == "Ada"
    told = fake.received[1].json["messages"][-1]
    assert told["role"] == "tool" and "not true" in told["content"]
    assert answered.stop_reason.stop_reason == "end_turn"


async def test_parallel_calls_wait_together_and_each_is_answered(tmp_path, monkeypatch) -> None:
    script = [
        openai_completion(tool_calls=[
            ("c1", "memory_insert", {"label": "human", "new_string": "one"}),
            ("c2", "conversation_search", {"query": "tea"}),
            ("c3", "memory_insert", {"label": "human", "new_string": "three"}),
        ]),
        openai_completion("Done."),
    ]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await parked_agent(letta, tool_rules=APPROVE_INSERT)
        asked = await letta.agents.messages.create(agent.id, input="go")
        answered = await letta.agents.messages.create(
            agent.id, messages=approve("c1", deny=("c3",), reason="once is enough")
        )
        block = await letta.agents.blocks.retrieve("human", agent_id=agent.id)
    (request,) = of_type(asked, "approval_request_message")
    assert [c.tool_call_id for c in request.tool_calls] == ["c1", "c3"]
    # The call that needs no approval is shown, and waits with the others.
    assert [m.tool_call.tool_call_id for m in of_type(asked, "tool_call_message")] == ["c2"]
    assert returns(asked) == []
    assert [(r.tool_call_id, r.status) for r in returns(answered)] == [
        ("c1", "success"), ("c2", "success"), ("c3", "error")]  # fmt: skip
    assert block.value == "Ada\none"
    sent = fake.received[1].json["messages"]
    assert [m.get("tool_call_id") for m in sent if m["role"] == "tool"] == ["c1", "c2", "c3"]


async def test_a_new_message_while_a_call_waits_is_refused(tmp_path, monkeypatch) -> None:
    script = [call("memory_insert", label="human", new_string="x"), openai_completion("Ok.")]
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await parked_agent(letta, tool_rules=APPROVE_INSERT)
        asked = await letta.agents.messages.create(agent.id, input="go")
        before = [m.id async for m in letta.agents.messages.list(agent.id, order="asc")]
        with pytest.raises(letta_client.ConflictError) as refused:
            await letta.agents.messages.create(agent.id, input="hello?")
        with pytest.raises(letta_client.ConflictError):
            await letta.agents.messages.create_async(agent.id, input="hello?")
        after = [m.id async for m in letta.agents.messages.list(agent.id, order="asc")]
        asked_once = len(fake.received)
        answered = await letta.agents.messages.create(agent.id, messages=approve("c1"))
    (request,) = of_type(asked, "approval_request_message")
    detail = refused.value.body["detail"]
    assert detail["code"] == "PENDING_APPROVAL"
    assert detail["pending_request_id"] == request.id
    assert "waiting for approval" in detail["message"]
    assert before == after and asked_once == 1  # refused: nothing stored or asked
    assert answered.stop_reason.stop_reason == "end_turn"


async def test_a_call_is_answered_once(tmp_path, monkeypatch) -> None:
    script = [call("memory_insert", label="human", new_string="x"), openai_completion("Ok.")]
    async with node(tmp_path, monkeypatch, *script) as (_, letta):
        agent = await parked_agent(letta, tool_rules=APPROVE_INSERT)
        await letta.agents.messages.create(agent.id, input="go")
        with pytest.raises(letta_client.BadRequestError) as wrong:
            await letta.agents.messages.create(agent.id, messages=approve("c9"))
        await letta.agents.messages.create(agent.id, messages=approve("c1"))
        with pytest.raises(letta_client.BadRequestError) as again:
            await letta.agents.messages.create(agent.id, messages=approve("c1"))
        block = await letta.agents.blocks.retrieve("human", agent_id=agent.id)
    assert "Invalid tool call IDs" in str(wrong.value.body["detail"])
    assert "No tool call is currently awaiting approval" in again.value.body["detail"]
    assert "answered already, by run run-" in again.value.body["detail"]
    assert block.value == "Ada\nx"  # run once


async def test_letta_s_legacy_approval_names_the_request_message(tmp_path, monkeypatch) -> None:
    script = [call("memory_insert", label="human", new_string="x"), openai_completion("Ok.")]
    async with node(tmp_path, monkeypatch, *script) as (_, letta):
        agent = await parked_agent(letta, tool_rules=APPROVE_INSERT)
        asked = await letta.agents.messages.create(agent.id, input="go")
        (request,) = of_type(asked, "approval_request_message")
        legacy = [{"type": "approval", "approve": True, "approval_request_id": request.id}]
        answered = await letta.agents.messages.create(agent.id, messages=legacy)
    (response,) = of_type(answered, "approval_response_message")
    assert response.approve is True and response.approval_request_id == "c1"
    assert [r.status for r in returns(answered)] == ["success"]


async def test_the_approval_switch_and_default_requires_approval(tmp_path, monkeypatch) -> None:
    source = 'def wire_money(amount: int) -> str:\n    """Send money.\n\n    Args:\n        amount: how much\n    """\n    return "sent"\n'  # noqa: E501
    script = [call("memory_insert", label="human", new_string="x"),
              call("wire_money", "c2", amount=100), openai_completion("Not sent.")]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        tool = await letta.tools.create(source_code=source, default_requires_approval=True)
        agent = await parked_agent(letta, tool_ids=[tool.id])
        switched = await letta.agents.tools.update_approval(
            "memory_insert", agent_id=agent.id, body_requires_approval=True
        )
        first = await letta.agents.messages.create(agent.id, input="go")
        second = await letta.agents.messages.create(agent.id, messages=approve("c1"))
        third = await letta.agents.messages.create(
            agent.id, messages=approve(deny=("c2",), reason="no")
        )
        off = await letta.agents.tools.update_approval(
            "memory_insert", agent_id=agent.id, body_requires_approval=False
        )
    assert [(r.type, r.tool_name) for r in switched.tool_rules] == [
        ("requires_approval", "memory_insert")]  # fmt: skip
    assert first.stop_reason.stop_reason == "requires_approval"
    assert second.stop_reason.stop_reason == "requires_approval"  # then wire_money waits
    assert of_type(second, "approval_request_message")[0].tool_call.name == "wire_money"
    assert returns(third)[0].status == "error" and len(fake.received) == 3
    assert not off.tool_rules


async def test_a_client_side_tool_is_offered_and_answered_by_the_client(
    tmp_path, monkeypatch
) -> None:
    weather = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    script = [call("get_weather", city="Lisbon"), openai_completion("It is sunny.")]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await parked_agent(letta)
        asked = await letta.agents.messages.create(
            agent.id, input="weather?", client_tools=[weather]
        )
        given = [
            {
                "type": "approval",
                "approvals": [
                    {
                        "type": "tool",
                        "tool_call_id": "c1",
                        "status": "success",
                        "tool_return": "sunny",
                    }
                ],
            }
        ]
        answered = await letta.agents.messages.create(
            agent.id, messages=given, client_tools=[weather]
        )  # fmt: skip
    first = fake.received[0].json
    assert [t["function"]["name"] for t in first["tools"]] == [*V1_TOOLS, "get_weather"]
    assert first["tools"][-1]["function"]["parameters"] == weather["parameters"]
    assert asked.stop_reason.stop_reason == "requires_approval"
    assert of_type(asked, "approval_request_message")[0].tool_call.name == "get_weather"
    (result,) = returns(answered)
    assert (result.status, result.tool_return) == ("success", "sunny")
    told = fake.received[1].json["messages"][-1]
    assert (told["role"], told["content"]) == ("tool", "sunny")
    assert json.loads(fake.received[1].json["messages"][-2]["tool_calls"][0]["function"][
        "arguments"]) == {"city": "Lisbon"}  # fmt: skip
    assert answered.stop_reason.stop_reason == "end_turn"


async def test_a_client_side_tool_cannot_be_approved_to_run_here(tmp_path, monkeypatch) -> None:
    script = [call("open_door"), openai_completion("Ok.")]
    async with node(tmp_path, monkeypatch, *script) as (_, letta):
        agent = await parked_agent(letta)
        await letta.agents.messages.create(
            agent.id, input="open", client_tools=[{"name": "open_door"}]
        )
        with pytest.raises(letta_client.BadRequestError) as refused:
            await letta.agents.messages.create(agent.id, messages=approve("c1"))
        given = [{"type": "tool_return", "tool_returns": [
            {"tool_call_id": "c1", "status": "error", "tool_return": "stuck"}]}]  # fmt: skip
        answered = await letta.agents.messages.create(agent.id, messages=given)
    assert "client-side tool" in refused.value.body["detail"]
    assert [(r.status, r.tool_return) for r in returns(answered)] == [("error", "stuck")]


async def test_cancelling_a_waiting_run_denies_its_calls(tmp_path, monkeypatch) -> None:
    script = [call("memory_insert", label="human", new_string="x"), openai_completion("Hi.")]
    async with node(tmp_path, monkeypatch, *script) as (_, letta):
        agent = await parked_agent(letta, tool_rules=APPROVE_INSERT)
        asked = await letta.agents.messages.create(agent.id, input="go")
        run_id = asked.messages[-1].run_id
        await letta.agents.messages.cancel(agent.id)
        for _ in range(200):
            run = await letta.runs.retrieve(run_id)
            if run.status == "cancelled":
                break
            import trio

            await trio.sleep(0.01)
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
        after = await letta.agents.messages.create(agent.id, input="hello")
        block = await letta.agents.blocks.retrieve("human", agent_id=agent.id)
    assert run.status == "cancelled"
    tool = [m for m in history if m.message_type == "tool_return_message"]
    assert [m.status for m in tool] == ["error"] and "cancelled" in tool[0].tool_return
    assert after.stop_reason.stop_reason == "end_turn"  # a new message is taken again
    assert block.value == "Ada"


async def test_a_streamed_turn_shows_the_request_and_the_answer(tmp_path, monkeypatch) -> None:
    script = [call("memory_insert", label="human", new_string="x"), openai_completion("Ok.")]
    async with node(tmp_path, monkeypatch, *script) as (_, letta):
        agent = await parked_agent(letta, tool_rules=APPROVE_INSERT)
        first = [e async for e in await letta.agents.messages.create(
            agent.id, input="go", streaming=True)]  # fmt: skip
        second = [e async for e in await letta.agents.messages.create(
            agent.id, messages=approve("c1"), streaming=True)]  # fmt: skip
    kinds = [e.message_type for e in first]
    assert kinds == ["user_message", "approval_request_message", "stop_reason",
                     "usage_statistics"]  # fmt: skip
    assert first[-2].stop_reason == "requires_approval"
    kinds = [e.message_type for e in second]
    assert kinds == ["approval_response_message", "tool_return_message", "assistant_message",
                     "stop_reason", "usage_statistics"]  # fmt: skip


async def test_request_options_are_honoured_or_refused_by_name(tmp_path, monkeypatch) -> None:
    script = [call("memory_insert", label="human", new_string="Hello there."),
              openai_completion("Done.")]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (_, letta):
        agent = await parked_agent(letta)
        refused = {}
        for name, value in [("override_model", "openai/nope"), ("enable_thinking", "false"),
                            ("return_logprobs", True),
                            ("override_system", "Be brief.")]:  # fmt: skip
            with pytest.raises(letta_client.UnprocessableEntityError) as error:
                await letta.agents.messages.create(agent.id, input="x", extra_body={name: value})
            refused[name] = error.value.body["detail"][0]["loc"]
        with pytest.raises(letta_client.UnprocessableEntityError):
            await letta.agents.messages.create(
                agent.id, input="x", include_return_message_types=["no_such_message"]
            )
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
        reply = await letta.agents.messages.create(
            agent.id,
            input="go",
            assistant_message_tool_name="memory_insert",
            assistant_message_tool_kwarg="new_string",
            include_return_message_types=["assistant_message"],
        )
        run = await letta.runs.retrieve(reply.usage.run_ids[0])
    assert refused == {name: ["body", name] for name in refused}
    assert history == []  # refused: nothing stored
    # The tool named as the assistant's shows as its messages; only those types come back.
    assert [(m.message_type, m.content) for m in reply.messages] == [
        ("assistant_message", "Hello there."), ("assistant_message", "Done.")]  # fmt: skip
    assert run.request_config.assistant_message_tool_name == "memory_insert"


async def test_the_agent_shows_the_call_that_waits(tmp_path, monkeypatch) -> None:
    script = [call("memory_insert", label="human", new_string="x"), openai_completion("Ok.")]
    async with node(tmp_path, monkeypatch, *script) as (_, letta):
        agent = await parked_agent(letta, tool_rules=APPROVE_INSERT)
        asked = await letta.agents.messages.create(agent.id, input="go")
        waiting = await letta.agents.retrieve(agent.id)
        await letta.agents.messages.create(agent.id, messages=approve("c1"))
        done = await letta.agents.retrieve(agent.id)
    (request,) = of_type(asked, "approval_request_message")
    assert waiting.pending_approval.id == request.id
    assert waiting.pending_approval.tool_call.tool_call_id == "c1"
    assert done.pending_approval is None


async def test_token_deltas_of_a_waiting_call_are_approval_requests(tmp_path, monkeypatch) -> None:
    script = [
        openai_stream(
            tool_calls=[("c1", "memory_insert", ['{"label": "human", ', '"new_string": "x"}'])]
        )
    ]
    async with node(tmp_path, monkeypatch, *script) as (_, letta):
        agent = await parked_agent(letta, tool_rules=APPROVE_INSERT)
        events = [e async for e in await letta.agents.messages.create(
            agent.id, input="go", streaming=True, stream_tokens=True)]  # fmt: skip
    kinds = [e.message_type for e in events]
    assert "tool_call_message" not in kinds
    assert kinds.count("approval_request_message") >= 2  # the deltas, then nothing repeated
    assert events[-2].stop_reason == "requires_approval"
