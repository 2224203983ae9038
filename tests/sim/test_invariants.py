"""The commit-level invariants the simulator checks in every run (sim/invariants.py)."""

from __future__ import annotations

from kelpie_trio.sim import SimWorld
from kelpie_trio.sim.invariants import InvariantViolation, unfenced_history_writes
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import (
    CommitRequest,
    Mutation,
    MutationKind,
    Transaction,
    key_after,
)

LEASE = keys.LEASES.pack(("agent-a",))
HISTORY = keys.MESSAGES.pack(("agent-a", 0))


def request(
    *, reads: list[bytes], sets: list[bytes], clears: tuple[bytes, ...] = ()
) -> CommitRequest:
    return CommitRequest(
        read_version=1,
        read_ranges=[(k, key_after(k)) for k in reads],
        cleared_ranges=[(k, key_after(k)) for k in clears],
        mutations=[Mutation(MutationKind.SET, k, b"m") for k in sets],
    )


def test_a_history_write_that_read_the_lease_is_fenced() -> None:
    assert unfenced_history_writes(request(reads=[LEASE], sets=[HISTORY])) == []


def test_a_history_write_without_the_lease_read_is_flagged() -> None:
    other_lease = keys.LEASES.pack(("agent-b",))
    assert unfenced_history_writes(request(reads=[other_lease], sets=[HISTORY])) == ["agent-a"]


def test_clearing_a_history_is_not_a_write_that_needs_the_lease() -> None:
    # Deleting an agent clears its history from the service, outside any activation.
    assert unfenced_history_writes(request(reads=[], sets=[], clears=[HISTORY])) == []


def test_an_unfenced_history_write_fails_the_run() -> None:
    async def main(world: SimWorld) -> None:
        node = world.new_node("n")

        async def write(tr: Transaction) -> None:
            tr.set(HISTORY, b"m")

        await node.store.transact(write)

    try:
        SimWorld(7).run(main)
    except InvariantViolation as violation:
        assert "FencedWrites" in str(violation)
    else:
        raise AssertionError("an unfenced write passed")


def _stored_lease(world: SimWorld, epoch: int) -> None:
    """Commit agent-a's lease at `epoch` straight to the world's engine."""
    from kelpie_trio.nursery.lease import Lease

    value = Lease("agent-a", "n0", 1, epoch).encode()
    engine = world.engine
    write = Mutation(MutationKind.SET, LEASE, value)
    engine.commit(CommitRequest(engine.read_version(), [], [], [write]), 0.0)


def test_an_activation_reported_after_a_takeover_is_superseded_not_a_violation() -> None:
    """Epoch 7 reported after epoch 8, while the store holds 8: the node that took epoch 7
    was taken over before it reported (a skewed clock), its writes are fenced; epochs
    never went back. Reported while the store holds the lower epoch, they did: flagged."""
    from kelpie_trio.sim.cluster import InvariantChecker

    world = SimWorld(1)
    checker = InvariantChecker(world)
    _stored_lease(world, 8)
    checker.activated("n0.2", "agent-a", 8)
    checker.activated("n2.1", "agent-a", 7)
    assert (checker.violations, checker.superseded) == ([], 1)

    _stored_lease(world, 6)  # the lease went back: a fencing token reused
    checker.activated("n1.1", "agent-a", 6)
    assert [v.split(":")[0] for v in checker.violations] == ["FencingTokenMonotonic"]
