"""SimStore: storage faults surface as the store's errors; retries stay exactly-once."""

from __future__ import annotations

import pytest

from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import RetryLimitReached, StorageUnavailable, Transaction, decode_counter


def test_commit_unknown_results_including_late_landings_apply_exactly_once() -> None:
    """Blind atomic adds are the hardest case: they read nothing that could conflict."""
    config = FaultConfig({FaultType.COMMIT_UNKNOWN_RESULT: 0.5, FaultType.STORAGE_LATENCY: 0.3})

    def one(seed: int) -> None:
        async def scenario(world: SimWorld) -> tuple[int, int]:
            node = world.new_node("n")

            async def bump(tr: Transaction) -> None:
                tr.add(b"counter", 1)

            for _ in range(30):
                await node.store.transact(bump)
            # Let any commit still in flight land (or fail) before reading.
            import trio

            await trio.sleep(1)
            world.faults.enabled = False

            async def read(tr: Transaction) -> int:
                return decode_counter(await tr.get(b"counter"))

            return await node.store.transact(read), world.faults.fired[
                FaultType.COMMIT_UNKNOWN_RESULT
            ]

        value, unknowns = SimWorld(seed, config).run(scenario)
        assert unknowns > 0
        assert value == 30

    run_seeds(one, 30)


def test_storage_failures_exhaust_retries_into_a_clear_error() -> None:
    config = FaultConfig({FaultType.STORAGE_WRITE_FAIL: 1.0})

    async def scenario(world: SimWorld) -> None:
        node = world.new_node("n")

        async def write(tr: Transaction) -> None:
            tr.set(b"k", b"v")

        await node.store.transact(write, max_attempts=5)

    with pytest.raises(RetryLimitReached) as raised:
        SimWorld(0, config).run(scenario)
    assert isinstance(raised.value.__cause__, StorageUnavailable)


def test_read_failures_are_retried_transparently() -> None:
    config = FaultConfig({FaultType.STORAGE_READ_FAIL: 0.5})

    async def scenario(world: SimWorld) -> list[bytes | None]:
        node = world.new_node("n")

        async def write(tr: Transaction) -> None:
            tr.set(b"k", b"v")

        await node.store.transact(write)
        out = []
        for _ in range(20):

            async def read(tr: Transaction) -> bytes | None:
                return await tr.get(b"k")

            out.append(await node.store.transact(read))
        return out

    world = SimWorld(1, config)
    assert world.run(scenario) == [b"v"] * 20
    assert world.faults.fired[FaultType.STORAGE_READ_FAIL] > 0
