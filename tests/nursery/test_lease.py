"""Lease decisions, as plain functions over values (no trio, no store)."""

from __future__ import annotations

import pytest
import trio

from kelpie_trio.nursery import lease as leases
from kelpie_trio.nursery.errors import LeaseLost
from kelpie_trio.nursery.lease import Acquired, HeldElsewhere, Lease, decide_acquire, decide_renew
from kelpie_trio.storage import MemoryStore, Transaction


def test_a_free_agent_is_taken_at_epoch_one() -> None:
    assert decide_acquire(None, "a", "n1", now=100, ttl=10) == Acquired(Lease("a", "n1", 1, 110))


def test_a_live_lease_of_another_node_is_left_alone() -> None:
    held = Lease("a", "n2", 4, expires_at=105)
    assert decide_acquire(held, "a", "n1", now=100, ttl=10) == HeldElsewhere(held)


def test_an_expired_lease_is_taken_over_with_the_next_epoch() -> None:
    expired = Lease("a", "n2", 4, expires_at=99)
    assert decide_acquire(expired, "a", "n1", now=100, ttl=10) == Acquired(Lease("a", "n1", 5, 110))


def test_a_node_retaking_its_own_lease_still_gets_a_new_epoch() -> None:
    mine = Lease("a", "n1", 4, expires_at=105)
    assert decide_acquire(mine, "a", "n1", now=100, ttl=10) == Acquired(Lease("a", "n1", 5, 110))


def test_renewal_extends_only_the_lease_still_stored() -> None:
    mine = Lease("a", "n1", 4, expires_at=105)
    assert decide_renew(mine, mine, now=103, ttl=10) == Lease("a", "n1", 4, 113)
    assert decide_renew(Lease("a", "n2", 5, 120), mine, now=103, ttl=10) is None
    assert decide_renew(None, mine, now=103, ttl=10) is None


def test_lease_round_trips_through_bytes() -> None:
    lease = Lease("agent-1", "node-9", 12, 1767225600.5)
    assert Lease.decode("agent-1", lease.encode()) == lease


async def test_fence_refuses_a_transaction_once_the_lease_moved() -> None:
    store = MemoryStore()

    async def take(node: str):
        async def fn(tr: Transaction):
            return await leases.acquire(tr, "a", node, trio.current_time(), ttl=0.0)

        return (await store.transact(fn)).lease

    first = await take("n1")
    second = await take("n2")  # the first expired at once (ttl 0): taken over

    async def fenced(tr: Transaction) -> None:
        await leases.fence(tr, first)
        tr.set(b"state", b"stale")

    with pytest.raises(LeaseLost, match="n2 epoch 2"):
        await store.transact(fenced)
    assert second.epoch == first.epoch + 1
