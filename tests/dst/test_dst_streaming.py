"""Streams in the simulator: the events a reader sees, across nodes, under faults.

A stream shows each message as its step is stored (token deltas with
`stream_tokens`), pings while the turn is quiet, then the stop reason and usage;
a turn that cannot finish ends its stream with an error event, never silence;
a reader that leaves cancels nothing.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from kelpie_trio.errors import ServiceError
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.llm import SimLlmClient, send_message, text, tool_call
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import StoreError
from tests.dst.agent_harness import (
    AgentCluster,
    history_of,
    new_agent,
    page,
    simulate,
    simulate_cluster,
)


async def read_all(events: Any) -> list[dict]:
    return [event async for event in events]


def types(events: list[dict]) -> list[str]:
    return [e["message_type"] for e in events]


def test_dst_streaming_basic() -> None:
    script = [tool_call("memory_insert", {"label": "human", "new_str": "x"}, call_id="c1"),
              text("Done.")]  # fmt: skip

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        events = await read_all(await service.open_stream(agent, {"input": "go"}))
        return events, await service.list_messages(agent, page())

    events, listed = simulate(20, scenario, script=script)
    assert types(events) == [
        "user_message", "tool_call_message", "tool_return_message", "assistant_message",
        "stop_reason", "usage_statistics",
    ]  # fmt: skip
    assert events[:-2] == listed  # what was streamed is what was stored
    assert events[-2]["stop_reason"] == "end_turn"


def test_dst_every_token_delta_of_a_tool_call_names_its_call() -> None:
    """The provider names a call (id, name) on its first delta only; a client gathers the
    argument deltas by call id (Letta's CLI runs client tools from them), so every delta
    shown carries it, and together they give the call's whole arguments."""
    script = [tool_call("memory_insert", {"label": "human", "new_str": "tea"}, call_id="c1"),
              text("Done.")]  # fmt: skip

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        body = {"input": "go", "stream_tokens": True}
        return await read_all(await service.open_stream(agent, body))

    events = simulate(24, scenario, script=script)
    deltas = [e for e in events if e["message_type"] == "tool_call_message"]
    assert len(deltas) >= 2  # the sim streams a call's arguments in two pieces
    assert {d["tool_call"]["tool_call_id"] for d in deltas} == {"c1"}
    assert all(d["tool_calls"] == [d["tool_call"]] for d in deltas)
    arguments = "".join(d["tool_call"]["arguments"] or "" for d in deltas)
    assert json.loads(arguments) == {"label": "human", "new_str": "tea"}


def test_dst_streaming_tokens_arrive_as_deltas_of_one_message() -> None:
    script = [send_message("Hello there, Ada.", reasoning="Greet her warmly and briefly.")]

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service, agent_type="memgpt_v2_agent")
        body = {"input": "hi", "stream_tokens": True}
        events = await read_all(await service.open_stream(agent, body))
        return events, await service.list_messages(agent, page())

    events, listed = simulate(21, scenario, script=script)
    thoughts = [e for e in events if e["message_type"] == "reasoning_message"]
    assert len(thoughts) > 1  # deltas, not one whole message
    assert len({e["id"] for e in thoughts}) == 1
    assert "".join(e["reasoning"] for e in thoughts) == "Greet her warmly and briefly."
    [answer] = [e for e in events if e["message_type"] == "assistant_message"]
    assert answer["content"] == "Hello there, Ada."
    stored = {(m["id"], m["message_type"]) for m in listed}
    assert {(e["id"], e["message_type"]) for e in events[:-2]} == stored  # nothing extra


def test_dst_streaming_pings_while_the_model_thinks() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        llm.latency = (35.0, 35.0)
        with_pings = await read_all(await service.open_stream(agent, {"input": "a"}))
        body = {"input": "b", "include_pings": False}
        without = await read_all(await service.open_stream(agent, body))
        return with_pings, without

    with_pings, without = simulate(22, scenario, script=[text("one"), text("two")])
    assert types(with_pings).count("ping") == 3  # every 10 s of a 35 s wait
    assert "ping" not in types(without)
    assert types(without)[-2:] == ["stop_reason", "usage_statistics"]


def test_dst_streaming_with_network_delay() -> None:
    """The agent lives on n0; the stream is read on n1 over a slow network. Nothing
    is live there, so the whole turn comes from the reply, in order, exactly once."""
    faults = FaultConfig({FaultType.NETWORK_DELAY: 0.5})

    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> Any:
            home, away = sim.service("n0"), sim.service("n1")
            agent = await new_agent(home)
            await home.send_message(agent, {"input": "first, on n0"})
            sim.world.faults.enabled = True
            events = await read_all(await away.open_stream(agent, {"input": "then via n1"}))
            sim.world.faults.enabled = False
            return events, await home.list_messages(agent, page())

        events, listed = simulate_cluster(seed, scenario, faults, nodes=2)
        assert types(events)[-2:] == ["stop_reason", "usage_statistics"]
        streamed = [(e["id"], e["message_type"]) for e in events[:-2]]
        assert len(streamed) == len(set(streamed))
        turn = [(m["id"], m["message_type"]) for m in listed if m["run_id"] == events[0]["run_id"]]
        assert streamed == turn

    run_seeds(one, 8)


def test_dst_streaming_cancellation_by_the_reader_cancels_nothing() -> None:
    script = [tool_call("memory_insert", {"label": "human", "new_str": "x"}, call_id="c1"),
              text("Done.")]  # fmt: skip

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        events = await service.open_stream(agent, {"input": "go"})
        first = await events.__anext__()
        await events.aclose()  # the client hung up after one event
        await trio.sleep(5)
        return first, await history_of(service, agent), await service.agent_block(agent, "human")

    first, history, block = simulate(23, scenario, script=script)
    assert first["message_type"] == "user_message"
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[-1].content == "Done." and block.value.endswith("x")


def test_dst_streaming_under_faults_ends_with_an_error_event_not_silence() -> None:
    faults = FaultConfig({**dict.fromkeys(STORAGE_FAULTS, 0.2), FaultType.LLM_FAILURE: 0.3})
    endings: dict[str, int] = {}

    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            world.faults.enabled = False
            agent = await new_agent(service)
            service.store.max_attempts = 3  # type: ignore[attr-defined]
            world.faults.enabled = True
            seen = []
            for i in range(4):
                try:
                    events = await service.open_stream(agent, {"input": f"m{i}"})
                except (StoreError, ServiceError) as error:  # refused: the client gets a 503
                    seen.append(("refused", error))
                    continue
                seen.append(("stream", await read_all(events)))
            return seen

        for kind, outcome in simulate(seed, scenario, faults):
            if kind == "refused":
                endings["refused"] = endings.get("refused", 0) + 1
                continue
            ending = types(outcome)
            stop = next(e["stop_reason"] for e in outcome if e["message_type"] == "stop_reason")
            if stop in ("llm_api_error", "error"):
                assert "error_message" in ending, ending
                errors = [e for e in outcome if e["message_type"] == "error_message"]
                assert errors[0]["run_id"] and errors[0]["message"]
            assert ending[-1] in ("usage_statistics", "stop_reason")
            endings[stop] = endings.get(stop, 0) + 1

    run_seeds(one, 15)
    assert endings.get("end_turn") and (endings.get("llm_api_error") or endings.get("error"))
