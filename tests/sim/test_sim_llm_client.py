"""SimLlmClient: deterministic replies, scripted or seeded, with the LLM faults."""

from __future__ import annotations

import json
import random

import attrs
import pytest
import trio

from kelpie_trio.llm.types import (
    ChatMessage,
    Completed,
    ContentDelta,
    LlmFailure,
    LlmRateLimited,
    LlmRequest,
    LlmTimeout,
    ToolCallDelta,
    ToolSchema,
)
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.faults import FaultInjector
from kelpie_trio.sim.llm import SimLlmClient, send_message, text, tool_call

TOOLS = tuple(
    ToolSchema(name, f"the {name} tool", {"type": "object", "properties": {}})
    for name in ("send_message", "core_memory_append", "archival_memory_insert")
)


def request(*messages: ChatMessage, tools=TOOLS) -> LlmRequest:
    return LlmRequest(
        model="agent",
        messages=(ChatMessage("system", "be kind"), *messages),
        tools=tools,
    )


async def test_sim_llm_client() -> None:
    script = [
        tool_call("core_memory_append", {"label": "human", "content": "likes tea",
                                         "request_heartbeat": True}),
        lambda req: send_message(f"you said {req.messages[-1].content}"),
    ]  # fmt: skip
    llm = SimLlmClient(random.Random(0), script=script, latency=(0.0, 0.0))
    first = await llm.complete(request(ChatMessage("user", "hi")))
    assert first.finish_reason == "tool_calls"
    call = first.message.tool_calls[0]
    assert call.name == "core_memory_append"
    assert json.loads(call.arguments)["request_heartbeat"] is True
    second = await llm.complete(request(ChatMessage("user", "tea please")))
    assert json.loads(second.message.tool_calls[0].arguments) == {"message": "you said tea please"}
    assert second.usage.prompt_tokens > 0 and second.usage.completion_tokens > 0
    assert len(llm.requests) == 2
    with pytest.raises(AssertionError, match="script ran out"):
        await llm.complete(request(ChatMessage("user", "more")))


async def test_seeded_replies_are_a_function_of_the_seed() -> None:
    async def replies(seed: int) -> list[str]:
        llm = SimLlmClient(random.Random(seed), latency=(0.0, 0.0))
        out = []
        for i in range(20):
            r = await llm.complete(request(ChatMessage("user", f"message {i}")))
            out.append(repr(r.message))
        return out

    assert await replies(1) == await replies(1)
    assert await replies(1) != await replies(2)


async def test_seeded_replies_chain_heartbeats_and_end_with_send_message() -> None:
    llm = SimLlmClient(random.Random(3), latency=(0.0, 0.0))
    saw_heartbeat = False
    for i in range(50):
        messages = [ChatMessage("user", f"turn {i}")]
        for _ in range(10):
            reply = await llm.complete(request(*messages))
            call = reply.message.tool_calls[0]
            args = json.loads(call.arguments)
            if call.name == "send_message":
                break
            assert args["request_heartbeat"] is True
            saw_heartbeat = True
            messages += [reply.message, ChatMessage("tool", "ok", tool_call_id=call.id)]
        else:
            pytest.fail("heartbeat chain never ended")
        assert len(messages) <= 1 + 2 * 3  # at most three chained tool steps
    assert saw_heartbeat


async def test_without_tools_the_reply_is_text() -> None:
    llm = SimLlmClient(random.Random(0), latency=(0.0, 0.0))
    reply = await llm.complete(request(ChatMessage("user", "hi"), tools=()))
    assert reply.finish_reason == "stop" and reply.message.content


@pytest.mark.parametrize("model", ["sim/agent", "gpt-4o-mini", ""])
async def test_a_model_name_it_does_not_serve_is_refused_like_a_providers_404(model: str) -> None:
    """It serves `agent`: a handle (or any other name) as the model is a 4xx, not a reply."""
    llm = SimLlmClient(random.Random(0), latency=(0.0, 0.0))
    wrong = attrs.evolve(request(ChatMessage("user", "hi")), model=model)
    with pytest.raises(LlmFailure) as refused:
        await llm.complete(wrong)
    assert refused.value.status == 404 and "does not exist" in str(refused.value)
    with pytest.raises(LlmFailure):
        [event async for event in llm.stream(wrong)]
    assert (await llm.complete(request(ChatMessage("user", "hi")))).model == "agent"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (FaultType.LLM_TIMEOUT, LlmTimeout),
        (FaultType.LLM_FAILURE, LlmFailure),
        (FaultType.LLM_RATE_LIMITED, LlmRateLimited),
    ],
)
async def test_llm_faults_raise_the_providers_errors(
    fault: FaultType, error: type[Exception], autojump_clock: trio.testing.MockClock
) -> None:
    faults = FaultInjector(FaultConfig({fault: 1.0}), random.Random(0))
    llm = SimLlmClient(random.Random(0), faults=faults, latency=(0.0, 0.0), timeout=30.0)
    start = trio.current_time()
    with pytest.raises(error) as raised:
        await llm.complete(request(ChatMessage("user", "hi")))
    if fault is FaultType.LLM_TIMEOUT:
        assert trio.current_time() - start == pytest.approx(30.0)
    if fault is FaultType.LLM_RATE_LIMITED:
        assert raised.value.retry_after and raised.value.retry_after > 0


async def test_llm_latency_fault_slows_the_reply(autojump_clock: trio.testing.MockClock) -> None:
    faults = FaultInjector(FaultConfig({FaultType.LLM_LATENCY: 1.0}), random.Random(0))
    llm = SimLlmClient(random.Random(0), faults=faults, latency=(0.0, 0.0))
    start = trio.current_time()
    await llm.complete(request(ChatMessage("user", "hi")))
    assert trio.current_time() - start >= 1.0


async def test_stream_reassembles_to_the_complete_reply() -> None:
    reply = tool_call("send_message", {"message": "hello there"}, reasoning="thinking it over")
    llm = SimLlmClient(random.Random(0), script=[reply], latency=(0.0, 0.0))
    content, arguments, completed = "", "", None
    async for event in llm.stream(request(ChatMessage("user", "hi"))):
        if isinstance(event, ContentDelta):
            content += event.text
        elif isinstance(event, ToolCallDelta):
            arguments += event.arguments
        elif isinstance(event, Completed):
            completed = event.response
    assert completed is not None
    assert content == "thinking it over"
    assert arguments == completed.message.tool_calls[0].arguments
    assert json.loads(arguments) == {"message": "hello there"}


def test_llm_in_a_world_draws_from_the_world_seed_and_faults() -> None:
    async def scenario(world: SimWorld) -> list[str]:
        llm = SimLlmClient.for_world(world)
        out = []
        for i in range(30):
            try:
                r = await llm.complete(request(ChatMessage("user", str(i))))
                out.append(r.message.tool_calls[0].name)
            except (LlmTimeout, LlmFailure, LlmRateLimited) as e:
                out.append(type(e).__name__)
        return out

    a = SimWorld(11, "llm").run(scenario)
    assert a == SimWorld(11, "llm").run(scenario)
    assert {"LlmTimeout", "LlmFailure", "LlmRateLimited"} & set(a)
    assert text("x").finish_reason == "stop"
