"""The agent loop in the simulator: the real actor, dispatcher, service and store,
with a scripted or seeded SimLlmClient and the fault table.

Names after the plan in shared/seed/. Under LLM and storage faults: every send
ends with a LettaResponse or a clean error, never a hang; the stored history
stays whole (each tool result right after the call that asked for it, the
sequence without gaps).
"""

from __future__ import annotations

from typing import Any

import trio

from kelpie_trio.agent.history import read_history
from kelpie_trio.errors import ServiceError
from kelpie_trio.nursery.errors import RuntimeFailure
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.llm import SimLlmClient, text, tool_call
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import StoreError
from tests.dst.agent_harness import kinds, new_agent, page, simulate

_page = page


def test_dst_agent_handle_message_basic() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        reply = await service.send_message(agent, {"messages": [{"role": "user", "content": "hi"}]})
        listed = await service.list_messages(agent, _page())
        return reply, listed, llm.requests[0]

    reply, listed, request = simulate(0, scenario, script=[text("Hello, Ada.")])
    assert kinds(reply) == ["user_message", "assistant_message"]
    assert reply["messages"][1]["content"] == "Hello, Ada."
    assert reply["stop_reason"]["stop_reason"] == "end_turn"
    assert reply["usage"]["step_count"] == 1 and reply["usage"]["total_tokens"] > 0
    assert [m["id"] for m in listed] == [m["id"] for m in reply["messages"]]
    system = request.messages[0].content
    assert "<human>" in system and "Name: Ada" in system  # core memory is in the prompt


def test_dst_agent_memory_tools() -> None:
    script = [
        tool_call("memory_insert", {"label": "human", "new_str": "Likes tea."}, call_id="c1"),
        tool_call("memory_replace", {"label": "human", "old_str": "Ada", "new_str": "Ada L."},
                  call_id="c2"),
        tool_call("memory_replace", {"label": "nope", "old_str": "x", "new_str": "y"},
                  call_id="c3"),
        text("Noted."),
    ]  # fmt: skip

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        reply = await service.send_message(agent, {"input": "remember I like tea"})
        return reply, await service.agent_block(agent, "human")

    reply, block = simulate(1, scenario, script=script)
    assert block.value == "Name: Ada L.\nLikes tea."
    returns = [m for m in reply["messages"] if m["message_type"] == "tool_return_message"]
    assert [r["status"] for r in returns] == ["success", "success", "error"]
    assert returns[2]["tool_return"] == (
        "Block field nope does not exist (available sections = human)"
    )
    assert kinds(reply)[-1] == "assistant_message"  # the failed tool did not end the turn
    assert reply["stop_reason"]["stop_reason"] == "end_turn"


def test_heartbeat_chain_for_memgpt_agents_and_max_steps() -> None:
    beat = {"label": "human", "content": "more", "request_heartbeat": True}
    script = [tool_call("core_memory_append", beat, call_id=f"c{i}") for i in range(5)]

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service, agent_type="memgpt_v2_agent")
        return await service.send_message(agent, {"input": "go", "max_steps": 3})

    reply = simulate(2, scenario, script=script)
    assert reply["stop_reason"]["stop_reason"] == "max_steps"
    assert reply["usage"]["step_count"] == 3
    calls = [m for m in reply["messages"] if m["message_type"] == "tool_call_message"]
    assert len(calls) == 3
    assert "request_heartbeat" in calls[0]["tool_call"]["arguments"]


def test_send_message_is_the_assistant_message_and_ends_the_turn() -> None:
    script = [tool_call("send_message", {"message": "Hi there!"}, reasoning="greet")]

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service, agent_type="memgpt_v2_agent")
        return await service.send_message(agent, {"input": "hello"})

    reply = simulate(3, scenario, script=script)
    assert kinds(reply) == ["user_message", "reasoning_message", "assistant_message",
                            "tool_return_message"]  # fmt: skip
    assert reply["messages"][2]["content"] == "Hi there!"


def _llm_fault_ends_the_turn(fault: FaultType) -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        world.faults.enabled = True
        reply = await service.send_message(agent, {"input": "hello"})
        return reply, await service.list_messages(agent, _page()), len(llm.requests)

    reply, listed, asked = simulate(4, scenario, FaultConfig({fault: 1.0}))
    assert asked == 4  # production's retry policy: four tries, then the turn gives up
    assert reply["stop_reason"]["stop_reason"] == "llm_api_error"
    assert kinds(reply) == ["user_message"]
    assert [m["message_type"] for m in listed] == ["user_message"]  # the user's message kept


def test_dst_agent_handle_message_with_llm_timeout() -> None:
    _llm_fault_ends_the_turn(FaultType.LLM_TIMEOUT)


def test_dst_agent_handle_message_with_llm_failure() -> None:
    _llm_fault_ends_the_turn(FaultType.LLM_FAILURE)


def test_dst_agent_loop_under_storage_and_llm_faults_keeps_history_whole() -> None:
    faults = FaultConfig(
        {
            **dict.fromkeys(STORAGE_FAULTS, 0.03),
            FaultType.LLM_FAILURE: 0.05,
            FaultType.LLM_LATENCY: 0.05,
        }
    )
    answered = {"reply": 0, "error": 0}

    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            world.faults.enabled = False
            agent = await new_agent(service, agent_type="memgpt_v2_agent")
            world.faults.enabled = True

            async def send(i: int) -> None:
                try:
                    reply = await service.send_message(agent, {"input": f"message {i}"})
                    assert reply["stop_reason"]["stop_reason"] in (
                        "end_turn", "max_steps", "llm_api_error",
                    )  # fmt: skip
                    answered["reply"] += 1
                except (StoreError, RuntimeFailure, ServiceError):
                    answered["error"] += 1  # clean: the caller may retry

            async with trio.open_nursery() as nursery:
                for i in range(6):
                    nursery.start_soon(send, i)
            world.faults.enabled = False
            await trio.sleep(1)

            async def history(tr: Any) -> list:
                return await read_history(tr, agent)

            return await service.store.transact(history)

        history = simulate(seed, scenario, faults)
        assert [m.seq for m in history] == list(range(len(history)))
        for i, message in enumerate(history):
            if message.role == "tool":  # right after the assistant message that called it
                caller = next(m for m in reversed(history[:i]) if m.role != "tool")
                assert caller.role == "assistant"
                assert message.tool_call_id in {c.id for c in caller.tool_calls}
            if message.role == "assistant":
                following = [
                    m.tool_call_id for m in history[i + 1 : i + 1 + len(message.tool_calls)]
                ]
                assert following == [c.id for c in message.tool_calls]

    run_seeds(one, 20)
    assert answered["reply"] > 0


ROLL = '''
def roll_dice(sides: int) -> int:
    """Roll one die.

    Args:
        sides: how many sides it has
    """
    return 4
'''


def _custom_tool_turn(faults: FaultConfig | str) -> Any:
    script = [tool_call("roll_dice", {"sides": 6}, call_id="c1"), text("Rolled.")]

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        tool = await service.create_tool({"source_code": ROLL})
        agent = await new_agent(service, tool_ids=[tool.id])
        world.faults.enabled = True
        reply = await service.send_message(agent, {"input": "roll"})
        return reply, llm.requests[0]

    return simulate(5, scenario, faults, script=script, tools=lambda tool, args: args["sides"] - 2)


def test_dst_agent_tool_execution() -> None:
    reply, request = _custom_tool_turn("none")
    assert "roll_dice" in {t.name for t in request.tools}  # offered to the model
    [result] = [m for m in reply["messages"] if m["message_type"] == "tool_return_message"]
    assert (result["status"], result["tool_return"]) == ("success", "4")
    assert reply["stop_reason"]["stop_reason"] == "end_turn"


def test_tool_timeout_and_crash_become_error_returns_and_the_agent_goes_on() -> None:
    for fault, words in ((FaultType.TOOL_TIMEOUT, "timed out"), (FaultType.TOOL_FAIL, "failure")):
        reply, _ = _custom_tool_turn(FaultConfig({fault: 1.0}))
        [result] = [m for m in reply["messages"] if m["message_type"] == "tool_return_message"]
        assert result["status"] == "error" and words in result["tool_return"]
        assert reply["messages"][-1]["message_type"] == "assistant_message"


def test_reset_forgets_the_history_but_not_the_memory_and_the_agent_goes_on() -> None:
    script = [text("one"), text("two")]

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        first = await service.send_message(agent, {"input": "a"})
        await service.reset_messages(agent)
        after_reset = await service.list_messages(agent, _page())
        second = await service.send_message(agent, {"input": "b"})
        listed = await service.list_messages(agent, _page())
        block = await service.agent_block(agent, "human")
        return first, after_reset, second, listed, block, llm.requests[1]

    first, after_reset, second, listed, block, request = simulate(6, scenario, script=script)
    assert after_reset == []
    assert [m["id"] for m in listed] == [m["id"] for m in second["messages"]]
    assert not {m["id"] for m in first["messages"]} & {m["id"] for m in listed}
    assert block.value == "Name: Ada"
    assert [m.content for m in request.messages[1:]] == ["b"]  # the model sees only "b"


def test_every_prompt_carries_exactly_the_history_stored_before_it() -> None:
    """The actor keeps the in-context history in memory between steps; each prompt
    must still be what the store holds: every earlier message, in order, no more."""
    from kelpie_trio.agent.step import chat_message

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service, agent_type="memgpt_v2_agent")
        for i in range(4):
            await service.send_message(agent, {"input": f"message {i}"})
            if i == 1:
                await service.reset_messages(agent)

        async def history(tr: Any) -> list:
            return await read_history(tr, agent)

        return llm.requests, await service.store.transact(history)

    requests, history = simulate(7, scenario)
    after_reset = [r for r in requests if r.messages[1].content == "message 2"]
    assert after_reset, "the conversation went on after the reset"
    replies = [i for i, m in enumerate(history) if m.role == "assistant"]
    assert len(replies) == len(after_reset)  # one stored reply per prompt, in order
    for request, reply_at in zip(after_reset, replies, strict=True):
        assert request.messages[1:] == tuple(chat_message(m) for m in history[:reply_at])
