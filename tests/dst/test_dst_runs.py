"""Runs in the simulator: idempotent sends, async runs, cancel, and tools run directly.

A send is a stored run. A retried send with the same client message id (otid) or
Idempotency-Key finds that run and joins or returns it: under storage and LLM
faults, a client that retries until it gets an answer has its turn run exactly
once (one user message, one final answer in the history).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kelpie_trio.errors import Conflict, NotFound, ServiceError
from kelpie_trio.nursery.errors import RuntimeFailure
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.llm import SimLlmClient, text, tool_call
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import StoreError
from tests.dst.agent_harness import history_of, new_agent, page, simulate, wait_until

CLEAN_ERRORS = (StoreError, RuntimeFailure, ServiceError)


async def send_until_answered(service: AgentService, agent: str, body: dict, **kw: Any) -> dict:
    """What the SDK does: send again on a clean error, with the same otid or key."""
    for _ in range(30):
        try:
            return await service.send_message(agent, body, **kw)
        except CLEAN_ERRORS:
            await trio.sleep(1)
    raise AssertionError("no answer after 30 tries")


def test_dst_retried_sends_with_the_same_otid_run_the_turn_once_under_faults() -> None:
    faults = FaultConfig({**dict.fromkeys(STORAGE_FAULTS, 0.05), FaultType.LLM_FAILURE: 0.05})

    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            world.faults.enabled = False
            agent = await new_agent(service, agent_type="memgpt_v2_agent")
            world.faults.enabled = True
            replies: dict[str, list[dict]] = {}

            async def client(i: int) -> None:
                body = {"messages": [{"role": "user", "content": f"m{i}", "otid": f"otid-{i}"}]}
                # Two copies of each send at once, as a timed-out SDK retry would.
                for _ in range(2):
                    replies.setdefault(f"otid-{i}", []).append(
                        await send_until_answered(service, agent, body)
                    )

            async with trio.open_nursery() as nursery:
                for i in range(4):
                    nursery.start_soon(client, i)
            world.faults.enabled = False
            return replies, await history_of(service, agent)

        replies, history = simulate(seed, scenario, faults)
        for otid, answers in replies.items():
            users = [m for m in history if m.role == "user" and m.otid == otid]
            assert len(users) == 1, f"{otid} stored {len(users)} times"
            first, again = answers
            assert [m["id"] for m in first["messages"]] == [m["id"] for m in again["messages"]]
            assert first["stop_reason"] == again["stop_reason"]
            run_id = users[0].run_id
            turn = [m for m in history if m.run_id == run_id]
            answers_in_turn = [m for m in turn if m.role == "assistant"]
            assert answers_in_turn, "a turn without an answer"
            assert [m.id for m in turn] == list(dict.fromkeys(m["id"] for m in first["messages"]))

    run_seeds(one, 12)


def test_an_idempotency_key_sent_again_with_another_request_is_a_conflict() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        first = await service.send_message(agent, {"input": "a"}, idempotency_key="k1")
        again = await service.send_message(agent, {"input": "a"}, idempotency_key="k1")
        with pytest.raises(Conflict):
            await service.send_message(agent, {"input": "b"}, idempotency_key="k1")
        other = await service.send_message(agent, {"input": "a"}, idempotency_key="k2")
        return first, again, other, len(llm.requests)

    first, again, other, asked = simulate(10, scenario, script=[text("one"), text("two")])
    assert first == again and first["messages"][-1]["content"] == "one"
    assert other["messages"][-1]["content"] == "two"
    assert asked == 2  # the retry asked the model nothing


def test_dst_async_run_reports_its_status_messages_and_usage() -> None:
    script = [tool_call("memory_insert", {"label": "human", "new_str": "x"}, call_id="c1"),
              text("done")]  # fmt: skip

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        started = await service.send_async(agent, {"input": "go"})
        seen = [started["status"]]

        async def done() -> bool:
            seen.append((await service.get_run(started["id"]))["status"])
            return seen[-1] in ("completed", "failed", "cancelled")

        await wait_until(done)
        run = await service.get_run(started["id"])
        messages = await service.run_messages(started["id"], page())
        usage = await service.run_usage(started["id"])
        listed = await service.list_runs(page(), agent_id=agent)
        return started, seen, run, messages, usage, listed

    started, seen, run, messages, usage, listed = simulate(11, scenario, script=script)
    assert started["status"] == "created" and started["background"] is True
    assert "running" in seen and seen[-1] == "completed"
    assert run["stop_reason"] == "end_turn" and run["completed_at"] is not None
    assert [m["message_type"] for m in messages] == [
        "user_message", "tool_call_message", "tool_return_message", "assistant_message",
    ]  # fmt: skip
    assert all(m["run_id"] == run["id"] for m in messages)
    assert usage["step_count"] == 2 and usage["total_tokens"] > 0
    assert [r["id"] for r in listed] == [run["id"]]


async def stepped(service: AgentService, run_id: str, steps: int) -> bool:
    return (await service.get_run_record(run_id)).checkpoint.iteration >= steps


async def finished(service: AgentService, run_id: str) -> bool:
    return (await service.get_run_record(run_id)).finished


def _heartbeats(count: int) -> list:
    beat = {"label": "human", "content": "more", "request_heartbeat": True}
    return [tool_call("core_memory_append", beat, call_id=f"c{i}") for i in range(count)]


def test_dst_cancel_stops_a_running_turn_at_its_next_step() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service, agent_type="memgpt_v2_agent")
        started = await service.send_async(agent, {"input": "go", "max_steps": 20})
        await wait_until(lambda: stepped(service, started["id"], 2))
        outcome = await service.cancel_runs(agent, None)
        await wait_until(lambda: finished(service, started["id"]))
        run = await service.get_run_record(started["id"])
        after = await service.send_message(agent, {"input": "still there?"})
        return outcome, run, after

    outcome, run, after = simulate(12, scenario, script=[*_heartbeats(20), text("yes")])
    assert outcome == {run.id: "cancelled"}
    assert run.status == "cancelled" and run.checkpoint.stop_reason == "cancelled"
    assert 2 <= run.checkpoint.iteration < 20
    assert after["stop_reason"]["stop_reason"] == "end_turn"  # the agent goes on


def test_dst_cancel_interrupts_the_llm_call_in_flight() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        llm.latency = (30.0, 30.0)
        started = await service.send_async(agent, {"input": "go"})
        await trio.sleep(1)
        before = trio.current_time()
        outcome = await service.cancel_runs(agent, {"run_ids": [started["id"]]})
        await wait_until(lambda: finished(service, started["id"]))
        waited = trio.current_time() - before
        messages = await service.run_messages(started["id"], page())
        again = await service.cancel_runs(agent, {"run_ids": [started["id"], "run-x"]})
        return outcome, waited, messages, again, await service.get_run(started["id"])

    outcome, waited, messages, again, run = simulate(13, scenario, script=[text("late")])
    assert outcome == {run["id"]: "cancelled"} and run["status"] == "cancelled"
    assert waited < 1  # not after the model's 30 s
    assert [m["message_type"] for m in messages] == ["user_message"]
    assert again == {run["id"]: "cancelled", "run-x": "not_found"}


def test_cancel_of_an_unknown_agent_is_not_found() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        with pytest.raises(NotFound):
            await service.cancel_runs("agent-00000000-0000-4000-8000-000000000000", None)

    simulate(14, scenario)


def test_dst_tools_run_directly_edit_memory_and_report_errors() -> None:
    roll = 'def roll(sides: int) -> int:\n    """Roll.\n\n    Args:\n        sides: sides\n    """\n    return 1\n'  # noqa: E501

    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        tool = await service.create_tool({"source_code": roll})
        agent = await new_agent(service, tool_ids=[tool.id])
        edit = await service.run_tool(agent, "memory_insert",
                                      {"args": {"label": "human", "new_str": "Tea."}})  # fmt: skip
        bad = await service.run_tool(agent, "memory_insert", {"args": {"label": "nope"}})
        custom = await service.run_tool(agent, "roll", {"args": {"sides": 6}})
        with pytest.raises(NotFound):
            await service.run_tool(agent, "no_such_tool", {"args": {}})
        return edit, bad, custom, await service.agent_block(agent, "human")

    edit, bad, custom, block = simulate(15, scenario, tools=lambda tool, args: args["sides"] * 7)
    assert edit["status"] == "success" and block.value == "Name: Ada\nTea."
    assert bad["status"] == "error" and bad["stderr"]
    assert (custom["status"], custom["func_return"]) == ("success", "42")


def test_deleting_an_agent_deletes_its_messages_and_runs() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        reply = await service.send_message(agent, {"input": "hi"})
        run_id = reply["usage"]["run_ids"][0]
        await service.delete_agent(agent)
        with pytest.raises(NotFound):
            await service.get_run(run_id)
        return await history_of(service, agent), await service.list_runs(page())

    history, listed = simulate(16, scenario, script=[text("hello")])
    assert history == [] and listed == []


def test_dst_a_turn_the_actor_keeps_failing_on_ends_with_stop_reason_error() -> None:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service)
        world.faults.enabled = True
        with pytest.raises(RuntimeFailure):  # a send waits, and is told
            await service.send_message(agent, {"input": "hi"}, idempotency_key="k")
        nothing = await service.list_runs(page(), agent_id=agent)  # nothing half-made
        started = await service.send_async(agent, {"input": "later"})  # a run, stored first
        await wait_until(lambda: finished(service, started["id"]))
        world.faults.enabled = False
        failed = await service.get_run(started["id"])
        again = await service.send_message(agent, {"input": "hi"}, idempotency_key="k")
        return nothing, failed, again

    nothing, failed, again = simulate(
        17, scenario, FaultConfig({FaultType.AGENT_LOOP_PANIC: 1.0}), script=[text("hello")]
    )
    assert nothing == []
    assert (failed["status"], failed["stop_reason"]) == ("failed", "error")
    assert "injected agent loop panic" in failed["metadata"]["error"]
    assert again["stop_reason"]["stop_reason"] == "end_turn"  # the retry runs it, once


def test_dst_turns_survive_panics_of_their_actor() -> None:
    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            agent = await new_agent(service, agent_type="memgpt_v2_agent")
            world.faults.enabled = True
            replies = []
            for i in range(6):
                body = {"messages": [{"role": "user", "content": f"m{i}", "otid": f"o{i}"}]}
                replies.append(await send_until_answered(service, agent, body))
            world.faults.enabled = False
            return replies, await history_of(service, agent)

        replies, history = simulate(seed, scenario, FaultConfig({FaultType.AGENT_LOOP_PANIC: 0.2}))
        assert [m.content for m in history if m.role == "user"] == [f"m{i}" for i in range(6)]
        for reply in replies:
            assert reply["stop_reason"]["stop_reason"] in ("end_turn", "max_steps", "error")
            run_id = reply["usage"]["run_ids"][0]
            assert [m.id for m in history if m.run_id == run_id] == list(
                dict.fromkeys(m["id"] for m in reply["messages"])
            )

    run_seeds(one, 10)


def test_dst_tools_run_directly_land_whole_or_fail_cleanly_under_storage_faults() -> None:
    """A memory tool run directly is one fenced transaction: each call the client was
    told succeeded is in the block once; a call that failed cleanly may or may not have
    landed, but never twice and never in part."""
    faults = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.2))
    outcomes = {"ok": 0, "failed": 0}

    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            agent = await new_agent(service)
            service.store.max_attempts = 2  # type: ignore[attr-defined]  # errors to see
            world.faults.enabled = True
            told_ok: list[str] = []
            failed: list[str] = []
            for i in range(8):
                args = {"args": {"label": "human", "new_str": f"fact {i}"}}
                try:
                    result = await service.run_tool(agent, "memory_insert", args)
                    assert result["status"] == "success", result
                    told_ok.append(f"fact {i}")
                except CLEAN_ERRORS:
                    failed.append(f"fact {i}")
            world.faults.enabled = False
            return told_ok, failed, (await service.agent_block(agent, "human")).value

        told_ok, failed, value = simulate(seed, scenario, faults)
        lines = value.split("\n")[1:]  # after "Name: Ada"
        assert set(told_ok) <= set(lines) <= set(told_ok) | set(failed)
        assert len(lines) == len(set(lines))  # none twice
        outcomes["ok"] += len(told_ok)
        outcomes["failed"] += len(failed)

    run_seeds(one, 10)
    assert outcomes["ok"] and outcomes["failed"]  # both paths really ran


def test_dst_a_send_delivered_again_continues_its_run_and_never_restarts_it() -> None:
    """A send without otid or key: its first transaction stores the run and the user's
    message, then the handler fails (here the model's client raises something that is not
    a provider error), and the runtime restarts the actor and delivers the send again. The
    redelivery finds the run by its id and goes on with it: one user message, one turn,
    under storage faults."""

    def one(seed: int) -> None:
        raised: list[bool] = []

        def fails_once(request: Any) -> Any:
            if not raised:
                raised.append(True)
                raise RuntimeError("the model's client broke after the run started")
            return text("Hello.")

        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            agent = await new_agent(service)
            world.faults.enabled = True
            body = {"messages": [{"role": "user", "content": "hi"}]}
            reply = await service.send_message(agent, body)
            world.faults.enabled = False
            return reply, await history_of(service, agent)

        reply, history = simulate(
            seed, scenario, FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.03)),
            script=[fails_once, *[lambda request: text("Hello.")] * 10],
        )  # fmt: skip
        assert raised  # the handler did fail once, after the run had started
        assert reply["stop_reason"]["stop_reason"] == "end_turn"
        assert [m.content for m in history if m.role == "user"] == ["hi"]
        assert len({m.run_id for m in history}) == 1

    run_seeds(one, 10)
