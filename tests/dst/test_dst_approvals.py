"""Parked runs in the simulator: calls that wait for approval, under storage faults, LLM
faults, actor panics and node crashes between the request, the approval and the tools'
results, on two nodes.

The custom tool checks, each time it runs, the store as committed at that instant: its call
has a recorded approval, and no result of it is stored yet. So no call runs without its
approval, and none runs again once its result is stored. At the end: every waiting request
was answered once, a new message sent while a run waited was refused with Letta's 409, a
second answer was refused, denied calls never ran, and each call has one result.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import trio

from kelpie_trio.agent.history import decode_messages
from kelpie_trio.errors import PendingApproval, Relayed, ServiceError
from kelpie_trio.llm.types import LlmRequest, LlmResponse
from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.nursery.errors import RuntimeFailure
from kelpie_trio.sim import FaultConfig, FaultType
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.llm import text, tool_calls
from kelpie_trio.sim.seeds import across_seeds, run_seeds
from kelpie_trio.storage import StoreError, keys
from tests.dst.agent_harness import AgentCluster, history_of, new_agent, simulate_cluster

WIRE = '''
def wire(ref: str) -> str:
    """Send money.

    Args:
        ref: the payment's reference
    """
    return ref
'''
RULES = [{"type": "requires_approval", "tool_name": "wire"}]
FAST_TAKEOVER = RuntimeConfig(lease_ttl=3.0, renew_interval=1.0)
FAULTS = FaultConfig(
    {**dict.fromkeys(STORAGE_FAULTS, 0.03), FaultType.LLM_FAILURE: 0.03,
     FaultType.AGENT_LOOP_PANIC: 0.03}
)  # fmt: skip
TURNS = 3
TRANSIENT = (StoreError, RuntimeFailure)


def model(request: LlmRequest) -> LlmResponse:
    """Pays three times and searches in one step after each user message; then says it is
    done. The test approves two payments (a crash while the second runs comes after the
    first one's result is stored) and denies the third."""
    last = request.messages[-1]
    if last.role != "user":
        return text("Done.")
    turn = last.content
    return tool_calls(
        (f"{turn}-a", "wire", {"ref": f"{turn}-a"}),
        (f"{turn}-s", "conversation_search", {"query": "pay"}),
        (f"{turn}-c", "wire", {"ref": f"{turn}-c"}),
        (f"{turn}-b", "wire", {"ref": f"{turn}-b"}),
    )


class Ledger:
    """What the tool saw of the store each time it ran; and, with `crash_chance`, a crash of
    the node running the agent while a tool runs or the model writes (restarted soon)."""

    def __init__(self, crash_chance: float = 0.0) -> None:
        self.sim: AgentCluster | None = None
        self.agent = ""
        self.ran: Counter[str] = Counter()
        self.crash_chance = crash_chance
        self.crashes = 0
        self.rng: random.Random | None = None  # one stream per seed

    def maybe_crash(self) -> None:
        sim = self.sim
        assert sim is not None
        if self.rng is None:
            self.rng = sim.world.rng("crashes")
        if self.crashes >= 4 or self.rng.random() >= self.crash_chance:
            return
        hosts = [n for n, svc in sim.services.items()
                 if svc.dispatcher is not None and self.agent in svc.dispatcher.active_agents
                 and not sim.nodes[n].crashed]  # fmt: skip
        if not hosts:
            return
        self.crashes += 1
        sim.crash(hosts[0])

        async def restart() -> None:
            await trio.sleep(0.5)
            await sim.start_node(hosts[0])

        assert sim.world.system_nursery is not None
        sim.world.system_nursery.start_soon(restart)

    def model(self, request: LlmRequest) -> LlmResponse:
        if request.messages[-1].role == "tool":  # after the approved calls' results
            self.maybe_crash()
        return model(request)

    def committed(self) -> list[Any]:
        assert self.sim is not None
        engine = self.sim.world.engine
        begin, end = keys.prefix_range(keys.MESSAGES.pack((self.agent,)))
        return decode_messages(engine.get_range(begin, end, 0, False, engine.version))

    def wire(self, tool: Any, args: dict) -> str:
        ref = args["ref"]
        self.ran[ref] += 1
        history = self.committed()
        approved = any(
            a.tool_call_id == ref and a.kind == "approval" and a.approve
            for m in history if m.role == "approval" for a in m.approvals or []
        )  # fmt: skip
        assert self.sim is not None
        if not approved:
            self.sim.world.violate(f"{ref} ran without a recorded approval")
        if any(m.role == "tool" and m.tool_call_id == ref for m in history):
            self.sim.world.violate(f"{ref} ran again after its result was stored")
        self.maybe_crash()  # before its result is stored: it runs again, at least once
        return f"paid {ref}"


async def answer(sim: AgentCluster, node: str, agent: str, body: dict) -> Any:
    """Send until the server answers: a reply, or a refusal (a 4xx is an answer too)."""
    for _ in range(100):
        with trio.move_on_after(30):  # the node that ran it crashed: ask again
            try:
                return await sim.service(node).send_message(agent, body)
            except (PendingApproval, Relayed) as refused:
                return refused
            except (*TRANSIENT, ServiceError, KeyError):  # KeyError: the node is restarting
                pass
        await trio.sleep(1)
    raise AssertionError("no answer after 100 tries")


async def crash_and_restart(sim: AgentCluster, name: str, after: float) -> None:
    await trio.sleep(after)
    sim.crash(name)
    await trio.sleep(0.5)
    await sim.start_node(name)


def parked_turns(seed: int, ledger: Ledger) -> tuple[dict[str, Any], list[Any]]:
    """TURNS turns that park, are probed with a new message, answered (approve two, deny
    one) while a node crashes, and answered again; under FAULTS and the ledger's crashes."""
    ledger.ran.clear()
    ledger.crashes = 0
    ledger.rng = None

    async def scenario(sim: AgentCluster) -> Any:
        ledger.sim = sim
        rng = sim.world.rng("scenario")
        sim.world.faults.enabled = False
        tool = await sim.service("n0").create_tool({"source_code": WIRE})
        agent = await new_agent(sim.service("n0"), tool_ids=[tool.id], tool_rules=RULES)
        ledger.agent = agent
        sim.world.faults.enabled = True
        outcomes: dict[str, Any] = {}
        for i in range(TURNS):
            turn = f"t{i}"
            asked = await answer(sim, "n0", agent, {
                "messages": [{"role": "user", "content": turn, "otid": f"u{i}"}]})  # fmt: skip
            stop = asked["stop_reason"]["stop_reason"]
            outcomes[turn] = {"asked": stop}
            if stop != "requires_approval":
                continue  # the LLM failed for good: nothing waits
            # A parked run survives a crash of either node; a new message is refused.
            victim, other = rng.sample(["n0", "n1"], 2)
            await crash_and_restart(sim, victim, 0.0)
            probe = await answer(sim, other, agent, {"input": "hello?"})
            outcomes[turn]["probe"] = probe
            body = {"messages": [{"type": "approval", "otid": f"a{i}", "approvals": [
                {"type": "approval", "tool_call_id": f"{turn}-a", "approve": True},
                {"type": "approval", "tool_call_id": f"{turn}-c", "approve": True},
                {"type": "approval", "tool_call_id": f"{turn}-b", "approve": False,
                 "reason": "twice"}]}]}  # fmt: skip
            async with trio.open_nursery() as nursery:  # a crash while it is answered
                nursery.start_soon(crash_and_restart, sim, victim, rng.uniform(0, 0.3))
                done = await answer(sim, other, agent, body)
            outcomes[turn]["answered"] = done
            body["messages"][0]["otid"] = f"again{i}"
            outcomes[turn]["again"] = await answer(sim, other, agent, body)
        sim.world.faults.enabled = False
        return outcomes, await history_of(sim.service("n1"), agent)

    return simulate_cluster(  # type: ignore[no-any-return]
        seed, scenario, FAULTS, nodes=2, script=[ledger.model] * 200, tools=ledger.wire,
        config=FAST_TAKEOVER,
    )  # fmt: skip


def test_dst_parked_runs_under_faults_and_crashes() -> None:
    ledger = Ledger(crash_chance=0.3)
    crashed: list[int] = []
    reran: list[int] = []

    def one(seed: int) -> None:
        outcomes, history = parked_turns(seed, ledger)
        assert [m.seq for m in history] == list(range(len(history))), "a gap or a duplicate"
        results = Counter(m.tool_call_id for m in history if m.role == "tool")
        assert all(n == 1 for n in results.values()), results
        for turn, seen in outcomes.items():
            if seen["asked"] != "requires_approval":
                continue
            probe = seen["probe"]
            assert isinstance(probe, Relayed) and probe.status == 409, probe
            assert probe.detail()["code"] == "PENDING_APPROVAL"  # type: ignore[index]
            done = seen["answered"]
            assert isinstance(done, dict), done
            again = seen["again"]
            assert isinstance(again, Relayed) and again.status == 400, again
            answers = [m for m in history if m.role == "approval" and m.otid == f"a{turn[1:]}"]
            assert len(answers) == 1, f"{turn} answered {len(answers)} times"
            assert ledger.ran[f"{turn}-b"] == 0, "a denied call ran"
            if done["stop_reason"]["stop_reason"] == "end_turn":
                assert {f"{turn}-a", f"{turn}-s", f"{turn}-c", f"{turn}-b"} <= set(results)
                assert ledger.ran[f"{turn}-a"] >= 1 and ledger.ran[f"{turn}-c"] >= 1
        crashed.append(ledger.crashes)
        reran.append(sum(n - 1 for n in ledger.ran.values()))

    ran = run_seeds(one, 8)
    # The crashes hit: between a tool's run and its stored result (it ran again), and while
    # the model was asked after the results.
    if across_seeds(ran, 8):
        assert sum(crashed) >= 5 and sum(reran) >= 1, (crashed, reran)


def test_dst_a_parked_run_outlives_crashes_and_a_stored_result_is_not_run_again() -> None:
    """A run parks on n0; n0 crashes and restarts; the approval of both calls comes; n0
    dies while the second call runs (the first one's result stored). Answered again on n1
    with the same otid, the run goes on from its checkpoint: the first call does not run
    again, the cut one does, the model is asked once more, and the turn ends."""
    ledger = Ledger()

    def wire(tool: Any, args: dict) -> str:
        out = ledger.wire(tool, args)
        if args["ref"] == "t0-b" and ledger.ran["t0-b"] == 1:
            assert ledger.sim is not None
            ledger.sim.crash("n0")  # the node dies while this call runs
        return out

    async def scenario(sim: AgentCluster) -> Any:
        ledger.sim = sim
        tool = await sim.service("n0").create_tool({"source_code": WIRE})
        agent = await new_agent(sim.service("n0"), tool_ids=[tool.id], tool_rules=RULES)
        ledger.agent = agent
        asked = await answer(sim, "n0", agent, {"input": "t0"})
        await crash_and_restart(sim, "n0", 0.0)
        body = {"messages": [{"type": "approval", "otid": "a0", "approvals": [
            {"type": "approval", "tool_call_id": "t0-a", "approve": True},
            {"type": "approval", "tool_call_id": "t0-c", "approve": True},
            {"type": "approval", "tool_call_id": "t0-b", "approve": True}]}]}  # fmt: skip
        with trio.move_on_after(30):
            try:
                await sim.service("n0").send_message(agent, body)
            except (*TRANSIENT, ServiceError):
                pass
        done = await answer(sim, "n1", agent, body)
        return asked, done, await history_of(sim.service("n1"), agent), len(sim.llm.requests)

    asked, done, history, llm_asked = simulate_cluster(
        3, scenario, nodes=2, script=[model] * 10, tools=wire, config=FAST_TAKEOVER
    )
    assert asked["stop_reason"]["stop_reason"] == "requires_approval"
    assert ledger.ran == {"t0-a": 1, "t0-c": 1, "t0-b": 2}  # stored results do not run again
    assert done["stop_reason"]["stop_reason"] == "end_turn" and llm_asked == 2
    assert [(m.role, m.tool_call_id) for m in history] == [
        ("user", None), ("assistant", None), ("approval", None), ("tool", "t0-a"),
        ("tool", "t0-s"), ("tool", "t0-c"), ("tool", "t0-b"), ("assistant", None),
    ]  # fmt: skip


async def _source_and_target(sim: AgentCluster, ledger: Ledger) -> tuple[str, str]:
    """Two agents whose `wire` calls wait for approval; the ledger watches the target."""
    home = sim.service("n0")
    tool = await home.create_tool({"source_code": WIRE})
    source = await new_agent(home, tool_ids=[tool.id], tool_rules=RULES)
    target = await new_agent(home, tool_ids=[tool.id], tool_rules=RULES)
    ledger.sim, ledger.agent = sim, target
    return source, target


def test_dst_a_parked_run_moves_with_its_session_and_is_answered_there() -> None:
    """A parked session transferred to another agent waits there: the target refuses a new
    message, takes the answer, runs the approved call, and its history holds the session."""
    ledger = Ledger()

    async def scenario(sim: AgentCluster) -> Any:
        home, away = sim.service("n0"), sim.service("n1")
        source, target = await _source_and_target(sim, ledger)
        asked = await answer(sim, "n0", source, {"input": "t0"})
        run_id = asked["messages"][-1]["run_id"]
        await away.transfer_session(source, run_id, {"target_agent_id": target})
        probe = await answer(sim, "n1", target, {"input": "hello?"})
        stale = await answer(sim, "n1", source, {"messages": approve_all()})
        done = await answer(sim, "n1", target, {"messages": approve_all()})
        return probe, stale, done, await history_of(home, target)

    probe, stale, done, history = simulate_cluster(
        5, scenario, nodes=2, script=[model] * 10, tools=ledger.wire, config=FAST_TAKEOVER
    )
    assert isinstance(probe, Relayed) and probe.status == 409
    assert isinstance(stale, Relayed) and stale.status == 400  # the source has nothing waiting
    assert done["stop_reason"]["stop_reason"] == "end_turn"
    assert ledger.ran == {"t0-a": 1, "t0-c": 1, "t0-b": 1}
    assert [(m.role, m.tool_call_id) for m in history] == [
        ("user", None), ("assistant", None), ("approval", None), ("tool", "t0-a"),
        ("tool", "t0-s"), ("tool", "t0-c"), ("tool", "t0-b"), ("assistant", None),
    ]  # fmt: skip


STORAGE_ONLY = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.03))


def test_dst_a_parked_run_moved_to_an_agent_already_awake_still_waits_there() -> None:
    """As above, but the target has run a turn already, so its actor is active and knows
    its own runs: a session moved in is still found (the move counts itself on the
    target's thread), a new message is refused while it waits, and the answer runs it."""
    ledger = Ledger()

    def waking(request: LlmRequest) -> LlmResponse:
        last = request.messages[-1]
        return text("Awake.") if last.role == "user" and last.content == "wake" else model(request)

    async def scenario(sim: AgentCluster) -> Any:
        home, away = sim.service("n0"), sim.service("n1")
        source, target = await _source_and_target(sim, ledger)
        awake = await answer(sim, "n1", target, {"input": "wake"})
        asked = await answer(sim, "n0", source, {"input": "t0"})
        run_id = asked["messages"][-1]["run_id"]
        await away.transfer_session(source, run_id, {"target_agent_id": target})
        probe = await answer(sim, "n1", target, {"input": "hello?"})
        done = await answer(sim, "n1", target, {"messages": approve_all()})
        return awake, probe, done, await history_of(home, target)

    def one(seed: int) -> None:
        awake, probe, done, history = simulate_cluster(
            seed, scenario, STORAGE_ONLY, nodes=2, script=[waking] * 10, tools=ledger.wire,
            config=FAST_TAKEOVER,
        )  # fmt: skip
        assert awake["stop_reason"]["stop_reason"] == "end_turn"
        assert isinstance(probe, Relayed) and probe.status == 409
        assert done["stop_reason"]["stop_reason"] == "end_turn"
        assert [(m.role, m.tool_call_id) for m in history] == [
            ("user", None), ("assistant", None),  # the target's own turn
            ("user", None), ("assistant", None), ("approval", None), ("tool", "t0-a"),
            ("tool", "t0-s"), ("tool", "t0-c"), ("tool", "t0-b"), ("assistant", None),
        ]  # fmt: skip

    run_seeds(one, 5)


def approve_all() -> list[dict]:
    return [{"type": "approval", "approvals": [
        {"type": "approval", "tool_call_id": "t0-a", "approve": True},
        {"type": "approval", "tool_call_id": "t0-c", "approve": True},
        {"type": "approval", "tool_call_id": "t0-b", "approve": True}]}]  # fmt: skip


def test_dst_the_resume_sweep_leaves_a_parked_run_waiting() -> None:
    """Nodes that sweep for unfinished runs, restarted meanwhile, neither resume nor end a
    run that waits for its client: nothing runs and the model is not asked until the answer
    comes, 40 minutes later, and then the turn goes on."""
    ledger = Ledger()

    async def scenario(sim: AgentCluster) -> Any:
        ledger.sim = sim
        tool = await sim.service("n0").create_tool({"source_code": WIRE})
        agent = await new_agent(sim.service("n0"), tool_ids=[tool.id], tool_rules=RULES)
        ledger.agent = agent
        asked = await answer(sim, "n0", agent, {"input": "t0"})
        await crash_and_restart(sim, "n0", 5.0)
        await trio.sleep(40 * 60)
        waited = (len(sim.llm.requests), dict(ledger.ran))
        run = await sim.service("n1").get_run(asked["messages"][-1]["run_id"])
        done = await answer(sim, "n1", agent, {"messages": approve_all()})
        return waited, run, done

    (asked, ran), run, done = simulate_cluster(
        9, scenario, nodes=2, script=[model] * 10, tools=ledger.wire, config=FAST_TAKEOVER,
        resume_interval=1.0,
    )  # fmt: skip
    assert (asked, ran) == (1, {})
    assert (run["status"], run["stop_reason"]) == ("completed", "requires_approval")
    assert done["stop_reason"]["stop_reason"] == "end_turn"


def test_dst_parked_runs_replay_the_same_for_the_same_seed() -> None:
    first = parked_turns(4, Ledger(crash_chance=0.3))
    again = parked_turns(4, Ledger(crash_chance=0.3))
    other = parked_turns(5, Ledger(crash_chance=0.3))

    def digest(run: Any) -> list[Any]:
        return [(m.id, m.seq, m.role, m.tool_call_id, m.content) for m in run[1]]

    assert digest(first) == digest(again) and digest(first) != digest(other)
