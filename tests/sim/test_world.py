"""SimWorld: deterministic scheduling, virtual time, deadlocks that fail at once, crashes."""

from __future__ import annotations

import signal
import time

import pytest
import trio
import trio._core._run as trio_run
import trio.lowlevel

from kelpie_trio.sim import FaultConfig, FaultType, SimDeadlock, SimNode, SimWorld
from kelpie_trio.storage import NodeFenced, Transaction


async def racers(world: SimWorld) -> list[int]:
    """50 tasks racing to append: the order is the scheduler's choice."""
    order: list[int] = []

    async def racer(i: int) -> None:
        for _ in range(3):
            await trio.lowlevel.checkpoint()
            order.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(racer, i)
    return order


def test_dst_determinism_same_seed_same_result() -> None:
    a, b, c = SimWorld(42), SimWorld(42), SimWorld(43)
    order_a, order_b, order_c = a.run(racers), b.run(racers), c.run(racers)
    assert order_a == order_b
    assert a.hexdigest() == b.hexdigest()
    assert order_a != order_c
    assert a.hexdigest() != c.hexdigest()


def test_trio_scheduler_state_is_restored_after_a_run() -> None:
    flag, state = trio_run._ALLOW_DETERMINISTIC_SCHEDULING, trio_run._r.getstate()
    SimWorld(1).run(racers)
    assert flag == trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    assert trio_run._r.getstate() == state


def test_virtual_time_passes_without_wall_time() -> None:
    async def long_nap(world: SimWorld) -> float:
        await trio.sleep(3 * 24 * 3600)
        return trio.current_time()

    started = time.monotonic()
    assert SimWorld(0, time_limit=4 * 24 * 3600).run(long_nap) >= 3 * 24 * 3600
    assert time.monotonic() - started < 5


def test_a_deadlock_fails_at_once_with_the_seed() -> None:
    async def deadlock(world: SimWorld) -> None:
        await trio.Event().wait()

    started = time.monotonic()
    with pytest.raises(SimDeadlock, match="seed 9"):
        SimWorld(9, time_limit=60).run(deadlock)
    assert time.monotonic() - started < 5


def test_ids_and_timestamps_come_from_the_seed() -> None:
    async def draw(world: SimWorld) -> tuple[str, float]:
        await trio.sleep(10)
        return world.env.new_id("agent"), world.env.now()

    first, again, other = SimWorld(5).run(draw), SimWorld(5).run(draw), SimWorld(6).run(draw)
    assert first == again and first[0] != other[0]
    assert first[0].startswith("agent-") and len(first[0]) == len("agent-") + 36
    assert first[1] == world_epoch() + 10


def world_epoch() -> float:
    from kelpie_trio.env import SIM_EPOCH

    return SIM_EPOCH


def test_crashed_node_is_fenced_even_inside_a_shielded_scope() -> None:
    async def scenario(world: SimWorld) -> list[str]:
        node = world.new_node("n")
        seen: list[str] = []

        async def write(tr: Transaction) -> None:
            tr.set(b"k", b"v")

        async def life(node: SimNode) -> None:
            await node.store.transact(write)
            seen.append("wrote")
            node.crash("test")
            with trio.CancelScope(shield=True):
                try:
                    await node.store.transact(write)
                except NodeFenced:
                    seen.append("fenced")
            await trio.sleep(1)
            seen.append("never: the crash cancelled the node")

        survived = await world.run_node(node, life)
        seen.append(f"returned={survived}")
        return seen

    assert SimWorld(0).run(scenario) == ["wrote", "fenced", "returned=False"]


def test_crash_mid_commit_lands_whole_or_not_at_all() -> None:
    config = FaultConfig({FaultType.CRASH_DURING_TRANSACTION: 1.0})
    outcomes = set()
    for seed in range(40):

        async def scenario(world: SimWorld) -> tuple[bytes | None, bytes | None]:
            node = world.new_node("n")

            async def write_pair(tr: Transaction) -> None:
                tr.set(b"a", b"1")
                tr.set(b"b", b"1")

            await world.run_node(node, lambda n: n.store.transact(write_pair))
            snapshot = world.engine.snapshot()
            return snapshot.get(b"a"), snapshot.get(b"b")

        a, b = SimWorld(seed, config).run(scenario)
        assert a == b  # never half
        outcomes.add(a)
    assert outcomes == {None, b"1"}  # and both fates happen


def test_restarted_node_is_a_new_incarnation_with_a_working_store() -> None:
    async def scenario(world: SimWorld) -> list[str]:
        first = world.new_node("n")
        first.crash("test")
        second = world.new_node("n")

        async def write(tr: Transaction) -> None:
            tr.set(b"k", b"v")

        await second.store.transact(write)
        return [first.id, second.id]

    assert SimWorld(0).run(scenario) == ["n.1", "n.2"]


@pytest.mark.parametrize("how", ["signal", "raised in a task"])
def test_ctrl_c_stops_a_run_as_a_keyboard_interrupt_not_as_a_failed_seed(how: str) -> None:
    """A Ctrl-C comes out of `run` as itself: inside an exception group, pytest and
    `run_seeds` took it for a failed seed and went on with the next one."""

    async def interrupted(world: SimWorld) -> None:
        async def node_task() -> None:
            if how == "signal":
                signal.raise_signal(signal.SIGINT)
            else:
                raise KeyboardInterrupt
            await trio.sleep(10)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(node_task)
            nursery.start_soon(trio.sleep, 10)

    # Python's own Ctrl-C handler, which trio takes over during a run: a process started
    # in the background (CI's) may have SIGINT ignored, and then no signal arrives.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            SimWorld(3, time_limit=60).run(interrupted)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_task_that_loops_without_letting_the_clock_move_fails_as_a_livelock() -> None:
    """A loop through checkpoints at one instant (here a `sleep_until` of a time already
    past, as McpSessions' idle wait did during a long call) stops the mock clock, so the
    time limit never comes: the run fails as a livelock instead of spinning forever."""

    async def spin(world: SimWorld) -> None:
        async def stale_wait() -> None:
            deadline = trio.current_time() + 1
            while True:  # noqa: ASYNC110 - the bug under test is exactly this loop
                await trio.sleep_until(deadline)  # past after the first second: no wait

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stale_wait)
            await trio.sleep(10)  # would end the run, were the clock to get there

    started = time.monotonic()
    with pytest.raises(SimDeadlock, match=r"seed 4: virtual time stopped at 1\.0+"):
        SimWorld(4, time_limit=60, livelock_rounds=20_000).run(spin)
    assert time.monotonic() - started < 5
