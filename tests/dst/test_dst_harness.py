"""The agent harness's own checks fail when what they guard breaks, and say what broke.

EveryRequestAnswered (a hang is reported as one, a crash under a request is a reset
connection), SingleActivation at commit (a write landing after a newer activation took
the lease), and `kelpie-trio sim` running the named agent scenarios: one seed, a sweep,
and the replay command of a failing seed.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import pytest
import trio

from kelpie_trio.nursery.lease import Lease
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim import cli as sim_cli
from kelpie_trio.sim.cluster import runtime_storm
from kelpie_trio.sim.invariants import InvariantViolation, stale_history_writes
from kelpie_trio.sim.scenarios import SCENARIOS, Scenario
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import CommitRequest, Mutation, MutationKind, Transaction
from kelpie_trio.storage.engine import MemoryEngine
from kelpie_trio.storage.errors import RetryLimitReached
from tests.dst.agent_harness import (
    AgentCluster,
    NodeDown,
    Unanswered,
    new_agent,
    simulate_cluster,
)


def test_a_request_that_never_ends_is_reported_as_a_hang_not_retried() -> None:
    retried: list[str] = []

    async def scenario(sim: AgentCluster) -> None:
        for _ in range(3):  # a client's retry loop: it must not swallow the hang
            try:
                await sim.call("stuck request", trio.sleep_forever)
            except (NodeDown, RuntimeError):
                retried.append("again")

    with pytest.raises(InvariantViolation, match="EveryRequestAnswered: stuck request "
                       "pending for 300 s"):  # fmt: skip
        simulate_cluster(1, scenario)
    assert retried == []


def test_the_hang_check_raises_unanswered_to_its_caller() -> None:
    async def scenario(sim: AgentCluster) -> str:
        sim.requests.bound = 10
        try:
            await sim.call("stuck", trio.sleep_forever)
        except Unanswered as hung:
            return f"{trio.current_time():.0f} {hung}"
        return "answered"

    world = SimWorld(2)
    from kelpie_trio.sim.agents import cluster_main

    with pytest.raises(InvariantViolation):
        world.run(cluster_main(scenario))
    assert world.violations == ["EveryRequestAnswered: stuck pending for 10 s"]


def test_a_node_crashing_under_a_request_resets_the_connection_at_once() -> None:
    async def scenario(sim: AgentCluster) -> tuple[str, float, dict]:
        agent = await new_agent(sim.service("n0"))
        sim.llm.latency = (100.0, 100.0)  # the turn is still running when n0 dies
        body = {"messages": [{"role": "user", "content": "hi", "otid": "o"}]}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_crash_at, sim, "n0", 1.0)
            try:
                await sim.send("n0", agent, body)
                what = "answered"
            except NodeDown as reset:
                what = str(reset)
        return what, trio.current_time(), sim.requests.counts()

    what, when, counts = simulate_cluster(3, scenario, nodes=2)
    assert what == "n0.1 crashed while answering: connection reset"
    assert when == pytest.approx(1.0, abs=0.01)
    assert counts == {"error": 1}


async def _crash_at(sim: AgentCluster, name: str, at: float) -> None:
    await trio.sleep_until(at)
    sim.crash(name)


# -- SingleActivation at commit ------------------------------------------------------


def _history_write(agent: str) -> CommitRequest:
    key = keys.MESSAGES.pack((agent, 0))
    lease = keys.LEASES.pack((agent,))
    return CommitRequest(
        read_version=None,
        read_ranges=[(lease, lease + b"\x00")],
        cleared_ranges=[],
        mutations=[Mutation(MutationKind.SET, key, b"m")],
    )


def test_a_write_is_stale_only_if_another_holder_took_the_lease_before_it_landed() -> None:
    write = _history_write("a")
    assert stale_history_writes(write, {"a": ("n0", 1)}, {"a": ("n0", 1)}) == []
    assert stale_history_writes(write, {"a": ("n0", 1)}, {"a": None}) == []  # released
    assert stale_history_writes(write, {}, {"a": ("n1", 2)}) == []  # unfenced: not this one
    [problem] = stale_history_writes(write, {"a": ("n0", 1)}, {"a": ("n1", 2)})
    assert problem == (
        "SingleActivation: a: node n0 (epoch 1) wrote its history after node n1 took "
        "the lease at epoch 2"
    )
    [same_node] = stale_history_writes(write, {"a": ("n0", 1)}, {"a": ("n0", 2)})
    assert "epoch 2" in same_node  # a later activation on the same node counts too


def _superseded_write(world: SimWorld) -> Any:
    """n0 reads its lease (epoch 1) and writes history; n1 takes the lease (epoch 2)
    before n0's commit lands."""

    async def main(world: SimWorld) -> str:
        old, new = world.new_node("n0"), world.new_node("n1")
        lease_key = keys.LEASES.pack(("a",))
        await new.store.transact(
            _set(lease_key, Lease("a", old.id, incarnation=1, epoch=1).encode())
        )
        took = trio.Event()

        async def write(tr: Transaction) -> None:
            await tr.get(lease_key)  # the fence's read
            await took.wait()
            tr.set(keys.MESSAGES.pack(("a", 0)), b"late")

        async def take_over() -> None:
            await trio.sleep(0.1)
            await new.store.transact(
                _set(lease_key, Lease("a", new.id, incarnation=1, epoch=2).encode())
            )
            took.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take_over)
            try:
                await old.store.transact(write, max_attempts=1)
            except RetryLimitReached:  # the conflict, after its one attempt
                return "refused"
        return "landed"

    return world.run(main)


def _set(key: bytes, value: bytes) -> Any:
    async def fn(tr: Transaction) -> None:
        tr.set(key, value)

    return fn


def test_the_store_refuses_a_superseded_write_and_nothing_is_flagged() -> None:
    world = SimWorld(4)
    assert _superseded_write(world) == "refused"
    assert world.violations == []


def test_a_superseded_write_that_lands_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MemoryEngine, "check", lambda self, request: None)  # no conflicts
    world = SimWorld(4)
    with pytest.raises(InvariantViolation, match="SingleActivation: a: node n0.1 "
                       r"\(epoch 1\) wrote its history after node n1.1"):  # fmt: skip
        _superseded_write(world)


def _cancelled_commit(seed: int) -> tuple[bool, bytes | None, bytes | None]:
    """A commit of two keys whose caller is cancelled while it is on its way to the store:
    (did the caller see it land, what the store holds afterwards)."""

    async def main(world: SimWorld) -> tuple[bool, bytes | None, bytes | None]:
        node = world.new_node("n0")

        async def write(tr: Transaction) -> None:
            tr.set(b"k1", b"v1")
            tr.set(b"k2", b"v2")

        returned = False
        with trio.move_on_after(0.0001):  # inside the store's round trip (0.5 ms)
            await node.store.transact(write)
            returned = True
        await trio.sleep(1)  # long after any late landing

        async def read(tr: Transaction) -> tuple[bytes | None, bytes | None]:
            return await tr.get(b"k1"), await tr.get(b"k2")

        return (returned, *await node.store.transact(read))

    return SimWorld(seed).run(main)


def test_a_cancelled_commit_lands_later_or_never_and_never_in_part() -> None:
    outcomes = {_cancelled_commit(seed) for seed in range(20)}
    # The caller never sees it land; the store holds all of it or none, and both happen.
    assert outcomes == {(False, b"v1", b"v2"), (False, None, None)}


# -- kelpie-trio sim ------------------------------------------------------------------


def _args(**kw: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sim_cli.add_arguments(parser)
    argv = [f"--{k}={v}" for k, v in kw.items()]
    return parser.parse_args(argv)


def test_sim_runs_an_agent_scenario_and_its_trace_is_a_function_of_the_seed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sim_cli.main(_args(scenario="turns", seed=3)) == 0
    first = capsys.readouterr().out
    assert sim_cli.main(_args(scenario="turns", seed=3)) == 0
    again = capsys.readouterr().out
    assert "turns: 6 answered" in first and "faults (fired/drawn):" in first
    assert first.splitlines()[-1] == again.splitlines()[-1]
    assert first.splitlines()[-1].startswith("trace ")


def test_a_preset_changes_what_an_agent_scenario_meets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sim_cli.main(_args(scenario="turns", seed=3, faults="network")) == 0
    out = capsys.readouterr().out
    assert "NetworkDelay" in out and "StorageWriteFail" not in out


def test_a_sweep_sums_the_faults_and_a_failing_seed_prints_its_replay_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def breaks_on_two(world: SimWorld) -> None:
        await trio.sleep(1)
        if world.seed == 2:
            raise InvariantViolation(f"seed {world.seed}: broken on purpose")

    monkeypatch.setitem(SCENARIOS, "broken", Scenario(breaks_on_two, "none", "fails"))
    assert sim_cli.main(_args(scenario="broken", seeds=4)) == 1
    out = capsys.readouterr()
    assert "  broken          4 runs     1 failed" in out.out
    assert "kelpie-trio sim --seed 2 --scenario broken\n" in out.out  # and no pytest line
    assert "DST_SEED" not in out.out
    assert "FAILED broken seed 2: InvariantViolation: seed 2: broken on purpose" in out.out
    assert "replay: kelpie-trio sim --seed 2 --scenario broken" in out.out
    assert "sim: 4/4 runs" in out.err


def test_a_preset_leaves_out_the_faults_a_scenario_does_not_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sim_cli.main(_args(scenario="search", seed=1, faults="crash")) == 0
    out = capsys.readouterr().out
    assert "left out: CrashBeforeWrite, CrashAfterWrite, CrashDuringTransaction" in out


def test_the_runtime_storm_on_a_filling_disk_fails_cleanly_and_restarts_nodes() -> None:
    """A node whose registration a full disk refuses exits (and comes back); a message
    refused by the full disk is a clean error to its sender, not a crash of the run."""
    storm = functools.partial(runtime_storm, agents=50, messages=200)
    report = SimWorld(1, FaultConfig({FaultType.STORAGE_FULL: 0.01})).run(storm)
    assert report.acked > 0 and report.failed > 0
