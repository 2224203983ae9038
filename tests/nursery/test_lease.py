"""Lease and heartbeat decisions, as plain functions over values, and the fence on a store."""

from __future__ import annotations

import pytest

from kelpie_trio.nursery import lease as leases
from kelpie_trio.nursery.errors import LeaseLost
from kelpie_trio.nursery.lease import Acquired, HeldElsewhere, Lease, decide_acquire
from kelpie_trio.nursery.membership import Membership, NodeInfo, decide_join, decide_renew
from kelpie_trio.storage import MemoryStore, Transaction

ME = Membership("n1", incarnation=2, live_until=110)


def test_a_free_agent_is_taken_at_epoch_one_by_this_incarnation() -> None:
    assert decide_acquire(None, None, "a", ME, now=100) == Acquired(Lease("a", "n1", 2, 1))


def test_a_lease_of_a_node_whose_heartbeat_is_live_is_left_alone() -> None:
    held = Lease("a", "n2", 1, 4)
    n2 = NodeInfo("n2", "http://n2", 99, incarnation=1, expires_at=105)
    assert decide_acquire(held, n2, "a", ME, now=100) == HeldElsewhere(held, "http://n2")


def test_a_lease_of_a_node_whose_heartbeat_expired_is_taken_with_the_next_epoch() -> None:
    held = Lease("a", "n2", 1, 4)
    n2 = NodeInfo("n2", "http://n2", 89, incarnation=1, expires_at=99)
    assert decide_acquire(held, n2, "a", ME, now=100) == Acquired(Lease("a", "n1", 2, 5))


def test_a_lease_of_an_ended_incarnation_is_taken_though_its_node_lives_again() -> None:
    held = Lease("a", "n2", 1, 4)
    n2 = NodeInfo("n2", "http://n2", 99, incarnation=2, expires_at=109)  # joined again
    assert decide_acquire(held, n2, "a", ME, now=100) == Acquired(Lease("a", "n1", 2, 5))


def test_a_released_lease_is_taken_at_once() -> None:
    held = Lease("a", "n2", 1, 4, released=True)
    n2 = NodeInfo("n2", "http://n2", 99, incarnation=1, expires_at=109)
    assert decide_acquire(held, n2, "a", ME, now=100) == Acquired(Lease("a", "n1", 2, 5))


def test_a_node_retaking_its_own_lease_still_gets_a_new_epoch() -> None:
    mine = Lease("a", "n1", 1, 4)  # also from its own earlier incarnation
    assert decide_acquire(mine, None, "a", ME, now=100) == Acquired(Lease("a", "n1", 2, 5))


def test_a_node_joins_as_the_incarnation_after_every_earlier_one() -> None:
    assert decide_join(None, "n1", "http://n1", now=100, ttl=10) == NodeInfo(
        "n1", "http://n1", 100, 1, 110
    )
    old = NodeInfo("n1", "http://n1", 50, incarnation=3, expires_at=60)
    assert decide_join(old, "n1", "http://x", now=100, ttl=10).incarnation == 4


def test_a_live_heartbeat_is_renewed_for_its_own_incarnation_at_its_address() -> None:
    renewed = decide_renew(ME, "http://n1:8283", now=103, ttl=10)
    assert renewed == NodeInfo("n1", "http://n1:8283", 103, 2, 113)


def test_a_heartbeat_found_expired_is_not_revived() -> None:
    """Another node may have taken any of its agents: that incarnation must join again."""
    assert decide_renew(ME, "http://n1", now=110, ttl=10) is None


def test_records_round_trip_through_bytes_and_old_ones_are_never_live() -> None:
    lease = Lease("agent-1", "node-9", 3, 12, released=True)
    assert Lease.decode("agent-1", lease.encode()) == lease
    node = NodeInfo("node-9", "http://x", 1767225600.5, 3, 1767225610.5)
    assert NodeInfo.decode("node-9", node.encode()) == node
    # Written by the version with a per-agent expiry: incarnation 0 matches no heartbeat.
    assert Lease.decode("a", b'["node-9",12,1767225600.5]') == Lease("a", "node-9", 0, 12)
    assert not NodeInfo.decode("node-9", b'["http://x",1767225600.5]').live(0)


async def _take(store: MemoryStore, me: Membership, now: float = 100) -> Lease:
    async def fn(tr: Transaction) -> Acquired | HeldElsewhere:
        return await leases.acquire(tr, "a", me, now)

    decision = await store.transact(fn)
    assert isinstance(decision, Acquired)
    return decision.lease


async def _fenced_write(store: MemoryStore, mine: Lease, me: Membership, now: float) -> None:
    async def fenced(tr: Transaction) -> None:
        await leases.fence(tr, mine, me, now)
        tr.set(b"state", b"written")

    await store.transact(fenced)


async def test_fence_refuses_a_transaction_once_the_lease_moved() -> None:
    store = MemoryStore()
    first = await _take(store, ME)
    second = await _take(store, Membership("n2", 1, 200))  # n1's record is not even stored

    with pytest.raises(LeaseLost, match="n2 epoch 2"):
        await _fenced_write(store, first, ME, now=101)
    assert second.epoch == first.epoch + 1


async def test_fence_refuses_every_write_once_the_node_heartbeat_expired() -> None:
    store = MemoryStore()
    mine = await _take(store, ME)
    await _fenced_write(store, mine, ME, now=109.9)  # still live: the write commits
    with pytest.raises(LeaseLost, match="heartbeat expired"):
        await _fenced_write(store, mine, ME, now=110)  # nobody took the agent, still refused
    rejoined = Membership("n1", incarnation=3, live_until=200)
    with pytest.raises(LeaseLost, match="heartbeat expired"):
        await _fenced_write(store, mine, rejoined, now=120)  # the old incarnation's lease


async def test_a_node_that_is_not_a_live_member_activates_nothing() -> None:
    store = MemoryStore()
    with pytest.raises(LeaseLost, match="not a live member"):
        await _take(store, ME, now=110)
    assert await store.transact(lambda tr: leases.read_lease(tr, "a")) is None
