"""Guarantees that only a precise fault reaches, each pinned by a test that fails when
the guarantee is removed (see `python -m kelpie_trio.sim.mutate`).

- A cancel landing inside a checkpoint write (the node stopping with a grace of 0 while
  the commit of a tool's result is in flight) does not cut it: the result is stored, and
  the turn, resumed on the other node, does not run the tool again.
- Transactions that only write, through commits of unknown result that land late,
  apply once: the idempotency marker's read conflict stops the late landing.
- A node cut off from the store while another (its clock ahead) took its agent over
  does not renew the lease back when it returns: one owner, epochs only going up.
- A crash while the j-th of a step's k tools runs, then a new message through the other
  node: the unfinished turn ends first, apart, its stored tool results not run again.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import trio

from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.cluster import SimAgentEnv
from kelpie_trio.sim.llm import send_message, tool_call, tool_calls
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import StoreError, keys
from kelpie_trio.storage.base import CommitRequest, MutationKind, Transaction, decode_counter
from tests.dst.agent_harness import CLEAN, AgentCluster, history_of, new_agent, simulate_cluster

TAKEOVER = RuntimeConfig(lease_ttl=3.0, renew_interval=1.0)
ROLL = '''
def roll(n: int) -> int:
    """Roll.

    Args:
        n: which roll
    """
    return n
'''


def _rolls(count: int) -> Any:
    """`count` rolls, one per step, then an answer; chosen by the request, not call order."""

    def reply(request: Any) -> Any:
        done = sum(m.role == "tool" for m in request.messages)
        if done < count:
            return tool_call("roll", {"n": done + 1, "request_heartbeat": True},
                             call_id=f"r{done + 1}")  # fmt: skip
        return send_message("rolled", call_id="s")

    return [reply] * 40


def _writes_tool_result(request: CommitRequest, agent: str) -> bool:
    history = keys.MESSAGES.range()
    return any(
        m.kind is MutationKind.SET and history.start <= m.key < history.stop
        and keys.MESSAGES.unpack(m.key)[0] == agent
        for m in request.mutations
    )  # fmt: skip


def _cancel_inside_checkpoint(seed: int, rolls: int, armed_at: int) -> tuple[Counter, list]:
    """The `armed_at`-th roll's result is being committed when n0 stops with no grace."""
    ran: Counter[int] = Counter()
    state: dict[str, Any] = {"armed": False}

    def roll(tool: Any, args: dict) -> int:
        ran[args["n"]] += 1
        if args["n"] == armed_at and ran[args["n"]] == 1:
            state["armed"] = True  # the next history commit of n0 is this result's
        return args["n"]

    async def scenario(sim: AgentCluster) -> Any:
        home = sim.service("n0")
        tool = await home.create_tool({"source_code": ROLL})
        agent = await new_agent(home, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
        store = sim.nodes["n0"].store
        commit = store.commit

        async def cancelled_midway(request: CommitRequest, *args: Any) -> None:
            if state["armed"] and _writes_tool_result(request, agent):
                state["armed"] = False
                assert sim.world.system_nursery is not None
                sim.world.system_nursery.start_soon(home.dispatcher.shutdown, 0)
                await trio.sleep(0.01)  # in flight when the cancel lands
                state["cancelled_in_flight"] = True
            await commit(request, *args)

        store.commit = cancelled_midway  # type: ignore[method-assign]
        body = {"messages": [{"role": "user", "content": "roll", "otid": "o"}],
                "max_steps": rolls + 2}  # fmt: skip
        with contextlib.suppress(*CLEAN):  # the node is stopping
            await sim.send("n0", agent, body)
        for _ in range(30):
            try:
                reply = await sim.send("n1", agent, body)
                break
            except CLEAN:
                await trio.sleep(1)
        assert state.get("cancelled_in_flight"), "the cancel did not land in a checkpoint"
        return reply, await history_of(sim.service("n1"), agent)

    reply, history = simulate_cluster(
        seed, scenario, nodes=2, script=_rolls(rolls), tools=roll, config=TAKEOVER
    )
    assert reply["stop_reason"]["stop_reason"] == "end_turn"
    return ran, history


def test_a_cancel_inside_the_checkpoint_of_a_tool_result_does_not_cut_it() -> None:
    ran, history = _cancel_inside_checkpoint(60, rolls=2, armed_at=1)
    assert ran == {1: 1, 2: 1}  # the result committed under the cancel is not run again
    results = [m.tool_call_id for m in history if m.role == "tool"]
    assert results == ["r1", "r2", "s"]


def test_dst_cancels_inside_checkpoints_at_any_roll_never_run_a_stored_tool_again() -> None:
    def one(seed: int) -> None:
        rng = __import__("random").Random(seed)  # the test's own choice, from the seed
        rolls = rng.randint(1, 4)
        ran, history = _cancel_inside_checkpoint(seed, rolls, armed_at=rng.randint(1, rolls))
        assert ran == dict.fromkeys(range(1, rolls + 1), 1), ran
        results = [m.tool_call_id for m in history if m.role == "tool"]
        assert results == [f"r{i}" for i in range(1, rolls + 1)] + ["s"]

    run_seeds(one, 8)


# -- idempotent commits: the marker's read conflict -----------------------------------

BLIND = keys.SIM["blind"]


def test_dst_blind_writes_through_unknown_results_land_once() -> None:
    """Transactions that only write (a counter added to, a record set), under
    CommitUnknownResult whose commits land now, never, or late, after the retry: the
    retry's marker makes a late landing of the earlier attempt conflict, so the counter
    always equals the records (a blind write cannot conflict on what it read: it read
    nothing but the marker)."""
    faults = FaultConfig({FaultType.COMMIT_UNKNOWN_RESULT: 0.3})

    def one(seed: int) -> None:
        async def main(world: SimWorld) -> tuple[int, int, int]:
            node = world.new_node("writer")
            acked = 0
            for i in range(40):

                async def write(tr: Transaction, i: int = i) -> None:
                    tr.add(BLIND.pack(("count",)), 1)
                    tr.set(BLIND["record"].pack((i,)), b"x")

                try:
                    await node.store.transact(write)
                    acked += 1
                except StoreError:
                    pass  # gave up: landed or not, the counter must still agree
            await trio.sleep(1)  # every late landing has landed or died by now
            world.faults.enabled = False

            async def read(tr: Transaction) -> tuple[bytes | None, list]:
                records = BLIND["record"].range()
                return (await tr.get(BLIND.pack(("count",))),
                        await tr.get_range(records.start, records.stop))  # fmt: skip

            count, records = await node.store.transact(read)
            return decode_counter(count), len(records), acked

        count, records, acked = SimWorld(seed, faults).run(main)
        assert count == records, f"counter {count} != {records} records: applied twice"
        assert records >= acked

    run_seeds(one, 20)


# -- after a takeover: the old owner never writes again -----------------------------------


def _renewal_after_takeover(seed: int, cut: float, skew: float) -> SimAgentEnv:
    """node0 hosts agent-a and is cut off from the store for `cut` s; node1, its clock
    `skew` s ahead, takes the lease over meanwhile (by its clock, node0's heartbeat has run
    out). When node0 reaches the store again, its heartbeat renews (by its own clock it
    never lapsed), but its activation's next write must find the lease gone and stop: it
    never writes after node1, and nothing it renews puts its lease back over node1's."""

    async def main(world: SimWorld) -> SimAgentEnv:
        env = SimAgentEnv(world, nodes=2, config=RuntimeConfig(lease_ttl=5.0,
                                                               renew_interval=1.0))  # fmt: skip
        async with trio.open_nursery() as nursery:
            await env.start(nursery)
            await env.send("agent-a", "m0", via="node0")
            env.nodes["node0"].cut_off_store(cut)
            env.nodes["node1"].env.clock_skew = skew
            await trio.sleep(0.5)
            taken = await env.send("agent-a", "m1", via="node1")
            await trio.sleep(cut + 2)  # node0 is back and has run its renewal
            for i in range(3):
                await env.send("agent-a", f"m{2 + i}", via="node0")
                await env.send("agent-a", f"n{2 + i}", via="node1")
            nursery.cancel_scope.cancel()
        assert taken.acked, taken
        await env.check()  # the journal's epochs never go down; one owner per epoch
        return env

    return SimWorld(seed).run(main)


def test_a_node_whose_lease_was_taken_over_does_not_renew_it_back() -> None:
    env = _renewal_after_takeover(70, cut=3.0, skew=10.0)
    assert all(o.acked for o in env.outcomes)


def test_dst_renewals_after_takeovers_at_any_skew_keep_one_owner() -> None:
    def one(seed: int) -> None:
        rng = __import__("random").Random(seed)
        _renewal_after_takeover(seed, cut=rng.uniform(1.0, 4.0), skew=rng.uniform(6.0, 20.0))

    run_seeds(one, 8)


# -- a crash while one of a step's tools runs; a new message arrives first ----------------


def test_dst_a_crash_mid_step_then_a_new_message_keeps_tools_once_and_runs_apart() -> None:
    """A step calls `k` custom tools (2 to 4); the node dies while the `j`-th runs (j
    from 2: the earlier results are stored). Before anything resumes that turn, a new
    message arrives through the other node: the unfinished turn is finished first (its
    stored results not run again, the cut one run again), then the new one; each
    run's messages stay together."""

    def one(seed: int) -> None:
        rng = __import__("random").Random(seed)
        k = rng.randint(2, 4)
        j = rng.randint(2, k)
        ran: Counter[int] = Counter()
        cluster: list[AgentCluster] = []

        def roll(tool: Any, args: dict) -> int:
            ran[args["n"]] += 1
            if args["n"] == j and ran[j] == 1:
                cluster[0].crash("n0")  # the node dies while this tool runs
            return args["n"]

        def reply(request: Any) -> Any:  # by the request: the first step rolls, then answer
            if request.messages[-1].role == "tool":
                return send_message("rolled", call_id=f"s{len(request.messages)}")
            calls = [(f"r{i}", "roll", {"n": i}) for i in range(1, k + 1)]
            calls[-1][2]["request_heartbeat"] = True
            if request.messages[-1].content == "second":
                return send_message("second answered", call_id="s2")
            return tool_calls(*calls)

        async def scenario(sim: AgentCluster) -> Any:
            cluster.append(sim)
            home = sim.service("n0")
            tool = await home.create_tool({"source_code": ROLL})
            agent = await new_agent(home, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
            first = {"messages": [{"role": "user", "content": "first", "otid": "o1"}]}
            with contextlib.suppress(*CLEAN):
                await sim.send("n0", agent, first)
            second = {"messages": [{"role": "user", "content": "second", "otid": "o2"}]}
            for _ in range(30):
                try:
                    answer = await sim.send("n1", agent, second)
                    break
                except CLEAN:
                    await trio.sleep(1)
            return answer, await history_of(sim.service("n1"), agent)

        answer, history = simulate_cluster(
            seed, scenario, nodes=2, script=[reply] * 30, tools=roll, config=TAKEOVER
        )
        assert answer["stop_reason"]["stop_reason"] == "end_turn"
        expected = dict.fromkeys(range(1, k + 1), 1)
        expected[j] = 2  # cut short by the crash: run again; the stored ones are not
        assert ran == expected, (k, j, ran)
        assert [m.content for m in history if m.role == "user"] == ["first", "second"]
        order = [m.run_id for m in history]
        assert order == sorted(order, key=order.index) and len(set(order)) == 2  # apart
        first_run = [m.tool_call_id for m in history if m.run_id == order[0]
                     and m.role == "tool"]  # fmt: skip
        assert first_run[:k] == [f"r{i}" for i in range(1, k + 1)]

    run_seeds(one, 8)
