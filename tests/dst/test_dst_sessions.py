"""Sessions in the simulator: a checkpoint after every iteration, recovery from a crash
at any point of an iteration, transfer between agents, pause across a crash.

The plan's names: test_dst_session_checkpoint_every_iteration,
test_dst_crash_recovery_resume_from_checkpoint, test_dst_session_handoff_between_agents,
test_dst_fdb_agent_crud. A session here is a run (kelpie_trio/agent/runs.py).
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from typing import Any

import pytest
import trio

from kelpie_trio.agent.runs import load_run
from kelpie_trio.errors import Conflict, Invalid, NotFound
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig, SimWorld
from kelpie_trio.sim.agent_scenarios import (
    ROLL,
    SESSIONS_FAULTS,
    TAKEOVER,
    TRANSFER_FAULTS,
    roll_then_answer,
    sessions,
    transfer,
)
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.llm import text, tool_call, tool_calls
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage.base import Transaction
from tests.dst.agent_harness import (
    CLEAN,
    AgentCluster,
    history_of,
    new_agent,
    page,
    simulate_cluster,
    wait_until,
)

FAST_TAKEOVER = TAKEOVER


def chain(steps: int, *, custom_every: int = 0) -> list:
    """A memgpt heartbeat chain: memory edits (and now and then a custom tool), then an answer."""
    script = []
    for i in range(steps):
        if custom_every and i % custom_every == 1:
            script.append(tool_call("roll", {"n": i, "request_heartbeat": True}, call_id=f"r{i}"))
        else:
            beat = {"label": "human", "content": f"fact {i}", "request_heartbeat": True}
            script.append(tool_call("core_memory_append", beat, call_id=f"c{i}"))
    return [*script, text("All done.")]


def keyed_to_step(replies: list) -> list:
    """The same replies, each chosen by the step that asks (the assistant messages already
    in the prompt of this one-turn history), not by the order of calls: a call that a crash
    cut short does not shift the rest of the turn. Spares, since any call may be repeated."""

    def reply(request: Any) -> Any:
        return replies[sum(m.role == "assistant" for m in request.messages)]

    return [reply] * (4 * len(replies))


async def snapshot(service: AgentService, run_id: str, agent_id: str) -> tuple[Any, list]:
    """The run and its agent's history, read in one transaction (what a crash would leave)."""
    from kelpie_trio.agent.history import read_history

    async def read(tr: Transaction) -> tuple[Any, list]:
        return await load_run(tr, run_id), await read_history(tr, agent_id)

    return await service.store.transact(read)


def check_checkpoint_matches_history(run: Any, history: list) -> None:
    """The checkpoint says exactly which iterations of the run are stored."""
    mine = [m for m in history if m.run_id == run.id]
    steps = sorted({m.step for m in mine if m.role == "assistant"})
    done = run.checkpoint.iteration
    pending = run.checkpoint.pending_seq
    assert steps[:done] == list(range(1, done + 1)), (steps, done)
    extra = steps[done:]
    assert extra == ([] if pending is None else [done + 1]), (extra, pending)
    for m in mine:
        if m.role == "assistant" and m.step <= done:  # a completed step has all its results
            results = {r.tool_call_id for r in mine if r.role == "tool"}
            assert {c.id for c in m.tool_calls} <= results


def test_dst_session_checkpoint_every_iteration() -> None:
    """A reader watching the store all through a turn always sees the checkpoint and
    the messages agree; the iteration goes up by one per step, never down."""

    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service()
        tool = await service.create_tool({"source_code": ROLL})
        agent = await new_agent(service, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
        started = await service.send_async(agent, {"input": "go", "max_steps": 20})
        seen = []

        async def watched() -> bool:
            run, history = await snapshot(service, started["id"], agent)
            if run.first_seq is not None:
                check_checkpoint_matches_history(run, history)
                seen.append(run.checkpoint.iteration)
            return run.finished

        await wait_until(watched, every=0.002)
        return seen, await service.get_run_record(started["id"])

    seen, run = simulate_cluster(50, scenario, script=chain(6, custom_every=2))
    assert seen == sorted(seen) and seen[-1] == 7
    assert set(seen) == set(range(8))  # every iteration was seen on its own
    assert run.checkpoint.stop_reason == "end_turn"


def test_dst_crash_recovery_resume_from_checkpoint() -> None:
    """The node running a session crashes mid-turn at a point drawn from the seed; the
    client sends again with the same otid through the other node: the session goes on
    from its checkpoint there and ends once. A custom tool whose result was stored
    before the crash is not run again."""
    runs_of_roll: Counter[int] = Counter()

    def roll(tool: Any, args: dict) -> int:
        runs_of_roll[args["n"]] += 1
        return args["n"]

    def one(seed: int) -> None:
        runs_of_roll.clear()

        async def scenario(sim: AgentCluster) -> Any:
            home, away = sim.service("n0"), sim.service("n1")
            tool = await home.create_tool({"source_code": ROLL})
            agent = await new_agent(home, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
            body = {"messages": [{"role": "user", "content": "go", "otid": "o1"}],
                    "max_steps": 20}  # fmt: skip
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_quietly, sim, "n0", agent, body)
                await trio.sleep(sim.world.rng("crash").uniform(0.05, 2.0))
                sim.crash("n0")
            stored_before = {m.tool_call_id for m in (await history_of(away, agent))
                             if m.role == "tool"}  # fmt: skip
            reply = await _send_until_answered(sim, "n1", agent, body)
            return reply, stored_before, await history_of(away, agent)

        reply, stored_before, history = simulate_cluster(
            seed, scenario, nodes=2, script=keyed_to_step(chain(8, custom_every=2)), tools=roll,
            config=FAST_TAKEOVER,
        )  # fmt: skip
        assert reply["stop_reason"]["stop_reason"] == "end_turn"
        assert [m.role for m in history].count("user") == 1
        assert [m.seq for m in history] == list(range(len(history)))
        assert len({m.id for m in history}) == len(history)
        steps = [m.step for m in history if m.role == "assistant"]
        assert steps == list(range(1, 10)), steps  # each iteration once: none redone
        for call_id in stored_before:
            if call_id.startswith("r"):
                assert runs_of_roll[int(call_id[1:])] == 1, call_id
        assert all(count <= 2 for count in runs_of_roll.values())  # at least once, not more

    run_seeds(one, 12)


def test_dst_a_tool_result_stored_before_a_crash_is_not_run_again() -> None:
    """A step calls two custom tools; the node dies while the second runs. Resumed on
    the other node, the step goes on from its checkpoint: the model is not asked
    again, the first tool (its result stored) does not run again, the second does."""
    ran: Counter[int] = Counter()
    cluster: list[AgentCluster] = []

    def roll(tool: Any, args: dict) -> int:
        ran[args["n"]] += 1
        if args["n"] == 2 and ran[2] == 1:
            cluster[0].crash("n0")  # the node dies while this tool runs
        return args["n"]

    both = tool_calls(("r1", "roll", {"n": 1}), ("r2", "roll", {"n": 2, "request_heartbeat": True}))

    async def scenario(sim: AgentCluster) -> Any:
        cluster.append(sim)
        home, away = sim.service("n0"), sim.service("n1")
        tool = await home.create_tool({"source_code": ROLL})
        agent = await new_agent(home, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
        body = {"messages": [{"role": "user", "content": "roll", "otid": "o"}]}
        await _send_quietly(sim, "n0", agent, body)
        reply = await _send_until_answered(sim, "n1", agent, body)
        return reply, await history_of(away, agent), len(sim.llm.requests)

    reply, history, asked = simulate_cluster(
        54, scenario, nodes=2, script=[both, text("Rolled.")], tools=roll, config=FAST_TAKEOVER
    )
    assert ran == {1: 1, 2: 2}  # the stored result is not run again; the cut one is
    assert asked == 2  # the step's reply came from the checkpoint, not from the model again
    assert [(m.role, m.tool_call_id) for m in history] == [
        ("user", None), ("assistant", None), ("tool", "r1"), ("tool", "r2"), ("assistant", None),
    ]  # fmt: skip
    assert reply["stop_reason"]["stop_reason"] == "end_turn"


async def _send_quietly(sim: AgentCluster, name: str, agent: str, body: dict) -> None:
    """A send whose node dies under it: a clean error is fine, a hang fails the run
    (EveryRequestAnswered, recorded by the harness)."""
    with contextlib.suppress(*CLEAN):
        await sim.send(name, agent, body)


async def _send_until_answered(sim: AgentCluster, name: str, agent: str, body: dict) -> dict:
    """Retry clean errors (a takeover in progress); a hang is not retried: it fails."""
    for _ in range(60):
        try:
            return await sim.send(name, agent, body)
        except CLEAN:
            await trio.sleep(1)
    raise AssertionError("no answer after 60 tries")


def test_dst_crash_at_every_await_point_of_an_iteration() -> None:
    """Storage-level crashes (before, during, after a commit), at points the seed picks,
    with the crashed node restarted, and the LLM failing now and then, during recovery
    too: each turn ends with one answer, the history has no gap and no duplicate, and
    no iteration runs twice."""
    fired: Counter[str] = Counter()

    def one(seed: int) -> None:
        report = SimWorld(seed, SESSIONS_FAULTS).run(sessions)
        fired["crash"] += report.nodes_crashed
        replies, history = report.replies, report.history
        assert [m.content for m in history if m.role == "user"] == ["m0", "m1", "m2"]
        assert [m.seq for m in history] == list(range(len(history)))
        assert len({m.id for m in history}) == len(history)
        for reply in replies:
            run_id = reply["usage"]["run_ids"][0]
            steps = [m.step for m in history if m.run_id == run_id and m.role == "assistant"]
            assert steps == list(range(1, len(steps) + 1))  # no iteration twice
            assert reply["stop_reason"]["stop_reason"] in ("end_turn", "max_steps", "llm_api_error")

    if run_seeds(one, 25, scenario="sessions") > 1:  # a replayed seed may crash nothing
        assert fired["crash"] > 5  # crashes really happened, in many seeds


def test_dst_session_handoff_between_agents() -> None:
    """A session of agent A moves to agent B (on another node) after two iterations:
    B copies its messages, goes on from the checkpoint with its own memory, and the
    caller that waited on A gets the whole turn."""

    async def scenario(sim: AgentCluster) -> Any:
        a_node, b_node = sim.service("n0"), sim.service("n1")
        source = await new_agent(a_node, agent_type="memgpt_v2_agent")
        bob = [{"label": "human", "value": "Name: Bob"}]
        target = await new_agent(b_node, agent_type="memgpt_v2_agent", memory_blocks=bob)
        await b_node.send_message(target, {"input": "wake up on n1"})
        caller: dict[str, Any] = {}

        async def wait_on_a() -> None:
            caller["reply"] = await a_node.send_message(source, {"input": "go", "max_steps": 10})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_on_a)
            await wait_until(lambda: _open_with_steps(a_node, source, 2))
            [session] = await a_node.list_sessions(source, page())
            moved = await a_node.transfer_session(source, session["session_id"],
                                                  {"target_agent_id": target})  # fmt: skip
        run = await b_node.get_run_record(session["session_id"])
        return (caller["reply"], moved, run, await history_of(b_node, source),
                await history_of(b_node, target), sim.llm.requests)  # fmt: skip

    reply, moved, run, a_history, b_history, requests = simulate_cluster(
        51, scenario, nodes=2, script=[text("Hi."), *chain(5)]
    )
    assert moved["agent_id"] == run.agent_id and run.checkpoint.stop_reason == "end_turn"
    session = [m for m in b_history if m.run_id == run.id]
    assert [m.step for m in session if m.role == "assistant"] == [1, 2, 3, 4, 5, 6]
    before = [m for m in a_history if m.run_id == run.id]
    assert [m.id for m in session[: len(before)]] == [m.id for m in before]  # copied whole
    assert [m.seq for m in b_history] == list(range(len(b_history)))
    assert [m["id"] for m in reply["messages"]] == list(dict.fromkeys(m.id for m in session))
    assert all("Name: Bob" in r.messages[0].content for r in requests[-2:])  # B's memory


async def _open_with_steps(service: AgentService, agent: str, steps: int) -> bool:
    runs = await service.list_runs(page(), agent_id=agent, active=True)
    if not runs:
        return False
    return (await service.get_run_record(runs[0]["id"])).checkpoint.iteration >= steps


def test_transfers_that_cannot_happen_are_refused_and_change_nothing() -> None:
    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service()
        a = await new_agent(service)
        b = await new_agent(service)
        done = await service.send_message(a, {"input": "hi"})
        finished = done["usage"]["run_ids"][0]
        missing = "run-00000000-0000-4000-8000-000000000000"
        nobody = "agent-00000000-0000-4000-8000-000000000000"
        sim.llm.latency = (100.0, 100.0)
        await service.send_async(b, {"input": "thinking"})  # b is busy from now on
        open_a = await service.send_async(a, {"input": "slow"})
        await trio.sleep(1)
        refusals = []
        for source, session, target, error in [
            (a, finished, b, Conflict),
            (a, missing, b, NotFound),
            (nobody, finished, b, NotFound),
            (a, open_a["id"], nobody, NotFound),
            (a, open_a["id"], b, Conflict),  # b is busy
            (a, open_a["id"], a, Invalid),
            (b, open_a["id"], a, NotFound),  # not b's session
        ]:
            with pytest.raises(error):
                await service.transfer_session(source, session, {"target_agent_id": target})
            refusals.append(error.__name__)
        after = await service.get_run_record(open_a["id"])
        return refusals, after, a

    refusals, after, a = simulate_cluster(52, scenario, script=[text("x")] * 5)
    assert len(refusals) == 7
    assert after.agent_id == a and after.transfer_to is None and not after.finished


def test_dst_transfer_under_faults_leaves_the_session_in_one_place() -> None:
    """A running session moves between agents on two nodes while a node crashes or the
    network splits: it ends in one place, whole. And the sweep checks the scenario does
    what it says: sessions do move (under each kind of chaos), across the network."""
    moved: Counter[str] = Counter()
    carried: list[int] = []

    def one(seed: int) -> None:
        report = SimWorld(seed, TRANSFER_FAULTS).run(transfer)
        if report.run.agent_id == report.target:
            moved[report.chaos] += 1
        carried.append(report.network_messages)
        outcome, source, target, run = report.outcome, report.source, report.target, report.run
        histories, open_entries = report.histories, report.open_entries
        assert run.finished and open_entries == []  # ended, and open nowhere
        assert run.agent_id in (source, target)
        if outcome == "moved":
            assert run.agent_id == target
        for history in histories.values():
            assert [m.seq for m in history] == list(range(len(history)))
            assert len({m.id for m in history}) == len(history)
        session = [m for m in histories[run.agent_id] if m.run_id == run.id]
        steps = [m.step for m in session if m.role == "assistant"]
        assert steps == list(range(1, len(steps) + 1))  # whole, each iteration once
        if run.agent_id == target:  # what happened at the source came along, in order
            at_source = [m.id for m in histories[source] if m.run_id == run.id]
            assert [m.id for m in session[: len(at_source)]] == at_source

    seeds = run_seeds(one, 20, scenario="transfer")
    if seeds > 1:  # a replayed seed checks only itself
        assert sum(moved.values()) >= seeds * 3 // 4, moved
        assert set(moved) == {"none", "crash-source", "crash-target", "partition"}, moved
        # forwarded across nodes, not run on one (a crash may leave both on one node)
        assert sum(1 for n in carried if n > 0) >= seeds * 3 // 4, carried


async def _settled(service: AgentService, run_id: str) -> bool:
    try:
        return (await service.get_run_record(run_id)).finished
    except CLEAN:
        return False


def test_dst_a_paused_session_resumes_at_pause_until_even_across_a_crash() -> None:
    pause = tool_call("pause_heartbeats", {"minutes": 2, "request_heartbeat": True}, call_id="p")

    async def scenario(sim: AgentCluster) -> Any:
        service = sim.service("n0")
        agent = await new_agent(service, agent_type="memgpt_v2_agent", tools=["pause_heartbeats"])
        first = await service.send_message(agent, {"input": "wait for it"})
        answered_at = trio.current_time()
        paused = await service.get_run_record(first["usage"]["run_ids"][0])
        sim.crash("n0")
        await trio.sleep(10)
        await sim.start_node("n0")
        await wait_until(lambda: _settled(sim.service("n1"), paused.id), every=1)
        waited = trio.current_time() - answered_at
        return first, paused, await sim.service("n1").get_run_record(paused.id), waited

    first, paused, done, waited = simulate_cluster(
        53, scenario, nodes=2, script=[pause, text("Back.")], config=FAST_TAKEOVER,
        resume_interval=5.0,
    )  # fmt: skip
    assert first["stop_reason"]["stop_reason"] == "end_turn"  # the caller is answered now
    assert paused.checkpoint.is_paused and not paused.finished
    assert done.checkpoint.stop_reason == "end_turn" and done.checkpoint.iteration == 2
    assert 119 <= waited <= 120 + 5 + 2  # at pause_until, give or take one sweep


def test_dst_determinism_of_a_crash_and_recover_scenario() -> None:
    def run(seed: int) -> str:
        async def scenario(sim: AgentCluster) -> Any:
            home = sim.service("n0")
            agent = await new_agent(home, agent_type="memgpt_v2_agent")
            body = {"messages": [{"role": "user", "content": "go", "otid": "o"}]}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_quietly, sim, "n0", agent, body)
                await trio.sleep(0.5)
                sim.crash("n0")
            await _send_until_answered(sim, "n1", agent, body)
            return sim.world.hexdigest()

        return simulate_cluster(seed, scenario, "llm", nodes=2, config=FAST_TAKEOVER)

    import os

    seed = int(os.environ.get("DST_SEED", "12345"))
    assert run(seed) == run(seed)
    assert run(seed) != run(seed + 1)


def test_dst_fdb_agent_crud() -> None:
    """Agent CRUD through the service on the simulator's store, which has FoundationDB's
    semantics (optimistic conflicts, commits of unknown result that land now, late or
    never, the 5 s transaction limit), under storage faults. Checked against what the
    clients were told: an acknowledged create exists unless an acknowledged delete came
    after; the name shown is one a linearizable history allows; nothing half-written
    (every agent has its blocks)."""
    faults = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.1))
    never = float("inf")

    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> Any:
            service = sim.service()
            rng = sim.world.rng("crud")
            clock = itertools.count()  # one logical clock: the order clients saw things in
            exists: dict[str, bool | None] = {}  # None: a delete whose outcome is unknown
            # agent -> [name, invoked, answered]; an unanswered write may land at any time.
            writes: dict[str, list[list[Any]]] = {}

            async def client(c: int) -> None:
                for i in range(8):
                    op = rng.choice(["create", "create", "rename", "delete"])
                    known = [a for a, e in exists.items() if e]
                    try:
                        if op == "create" or not known:
                            blocks = [{"label": "human", "value": "v"}]
                            body = {"name": f"c{c}-{i}", "memory_blocks": blocks}
                            invoked = next(clock)
                            view = await service.create_agent(body)
                            exists[view.agent.id] = True
                            writes[view.agent.id] = [[f"c{c}-{i}", invoked, next(clock)]]
                        elif op == "rename":
                            agent = rng.choice(known)
                            write = [f"r{c}-{i}", next(clock), never]
                            writes[agent].append(write)
                            await service.update_agent(agent, {"name": write[0]})
                            write[2] = next(clock)
                        else:
                            agent = rng.choice(known)
                            exists[agent] = None
                            await service.delete_agent(agent)
                            exists[agent] = False
                    except NotFound:
                        pass  # deleted by another client meanwhile
                    except CLEAN:
                        pass  # may or may not have landed: the model allows both

            async with trio.open_nursery() as nursery:
                for c in range(4):
                    nursery.start_soon(client, c)
            sim.world.faults.enabled = False
            listed = {v.agent.id: v for v in await service.list_agents(page())}
            return exists, writes, listed

        exists, writes, listed = simulate_cluster(seed, scenario, faults)
        for agent, state in exists.items():
            if state is True:
                assert agent in listed, f"acknowledged {agent} is gone"
                # Linearizable: the last write is one that no acknowledged write follows
                # in real time (invoked after it was answered).
                allowed = {
                    name
                    for name, _, answered in writes[agent]
                    if not any(
                        later_answered != never and later_invoked > answered
                        for _, later_invoked, later_answered in writes[agent]
                    )
                }
                assert listed[agent].agent.name in allowed, (listed[agent].agent.name, allowed)
            elif state is False:
                assert agent not in listed, f"deleted {agent} is back"
        for view in listed.values():
            assert [b.label for b in view.blocks] == ["human"]  # never half an agent

    run_seeds(one, 15)


def test_dst_a_new_message_waits_for_the_run_a_crash_left_unfinished() -> None:
    """The node dies while a custom tool of a turn runs (the model's reply stored, the call
    pending). Before anything resumes that turn, a different message arrives through the
    other node: the unfinished turn is finished first, then the new one runs. Each run's
    messages stay together, and the new message never takes the place that the pending
    call's result was to have."""
    cluster: list[AgentCluster] = []

    def roll(tool: Any, args: dict) -> int:
        if not cluster[1:]:
            cluster.append(cluster[0])  # once: the node dies while this tool runs
            cluster[0].crash("n0")
        return args["n"]

    async def scenario(sim: AgentCluster) -> Any:
        cluster.append(sim)
        home, away = sim.service("n0"), sim.service("n1")
        tool = await home.create_tool({"source_code": ROLL})
        agent = await new_agent(home, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
        first = {"messages": [{"role": "user", "content": "first", "otid": "o1"}]}
        await _send_quietly(sim, "n0", agent, first)
        second = {"messages": [{"role": "user", "content": "second", "otid": "o2"}]}
        reply = await _send_until_answered(sim, "n1", agent, second)
        return reply, await history_of(away, agent)

    reply, history = simulate_cluster(
        55, scenario, nodes=2, script=[roll_then_answer] * 20, tools=roll, config=FAST_TAKEOVER
    )
    assert reply["stop_reason"]["stop_reason"] == "end_turn"
    assert [m.content for m in history if m.role == "user"] == ["first", "second"]
    assert [m.seq for m in history] == list(range(len(history)))
    runs_in_order = [m.run_id for m in history]
    assert runs_in_order == sorted(runs_in_order, key=runs_in_order.index)  # not interleaved
    assert len(set(runs_in_order)) == 2
    first_run = [(m.role, m.tool_call_id) for m in history if m.run_id == runs_in_order[0]]
    assert first_run == [("user", None), ("assistant", None), ("tool", "r2"),
                         ("assistant", None), ("tool", "s4")]  # fmt: skip
