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
        decision = (await leases.look(tr, "a", me, now)).decision
        if isinstance(decision, Acquired):
            leases.take(tr, decision.lease)
        return decision

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


def test_only_a_lease_nobody_holds_is_left_to_the_first_write() -> None:
    free = leases.Look(Acquired(Lease("a", "n1", 2, 1)), None)
    released = leases.Look(Acquired(Lease("a", "n1", 2, 6)), Lease("a", "n2", 1, 5, True))
    ended = leases.Look(Acquired(Lease("a", "n1", 2, 6)), Lease("a", "n2", 1, 5))
    mine = leases.Look(Acquired(Lease("a", "n1", 2, 6)), Lease("a", "n1", 2, 5))
    elsewhere = leases.Look(HeldElsewhere(Lease("a", "n2", 1, 5), "http://n2"), None)
    assert free.may_defer and released.may_defer
    # Held, if by a holder that ended: a late commit of it could still land after the
    # activation's reads, so the lease is written at once, which that commit conflicts with.
    assert not ended.may_defer and not mine.may_defer and not elsewhere.may_defer


async def _look(store: MemoryStore, me: Membership) -> leases.Look:
    async def fn(tr: Transaction) -> leases.Look:
        return await leases.look(tr, "a", me, 100)

    return await store.transact(fn)


async def _first_write(
    store: MemoryStore, found: leases.Look, me: Membership, now: float = 101
) -> bool:
    assert isinstance(found.decision, Acquired)
    pending = found.decision.lease

    async def fn(tr: Transaction) -> bool:
        tr.set(b"state", pending.node_id.encode())
        return await leases.take_at_first_write(tr, pending, found.seen, me, now)

    return await store.transact(fn)


async def test_looking_writes_nothing_and_the_first_write_takes_the_lease() -> None:
    store = MemoryStore()
    found = await _look(store, ME)
    assert await store.transact(lambda tr: leases.read_lease(tr, "a")) is None
    assert await _first_write(store, found, ME)  # taken, with the write
    assert not await _first_write(store, found, ME)  # already this activation's: go on
    stored = await store.transact(lambda tr: leases.read_lease(tr, "a"))
    assert stored == Lease("a", "n1", 2, 1)


async def test_a_first_write_after_another_activation_took_the_lease_writes_nothing() -> None:
    store = MemoryStore()
    other = Membership("n2", 1, 200)
    mine, theirs = await _look(store, ME), await _look(store, other)  # both see it free
    assert await _first_write(store, theirs, other)
    with pytest.raises(LeaseLost, match="n2 epoch 1"):
        await _first_write(store, mine, ME)
    assert await store.transact(lambda tr: tr.get(b"state")) == b"n2"


async def test_a_first_write_refuses_even_when_the_other_activation_has_let_go() -> None:
    """Taken and released again in between: the record is not the one the activation
    decided on, so what it read may be older than the other activation's writes."""
    store = MemoryStore()
    other = Membership("n2", 1, 200)
    mine, theirs = await _look(store, ME), await _look(store, other)
    assert await _first_write(store, theirs, other)
    assert isinstance(theirs.decision, Acquired)

    async def release(tr: Transaction) -> None:
        await leases.release(tr, theirs.decision.lease)  # type: ignore[union-attr]

    await store.transact(release)
    with pytest.raises(LeaseLost):
        await _first_write(store, mine, ME)


async def test_fence_refuses_a_write_after_its_own_release() -> None:
    store = MemoryStore()
    mine = await _take(store, ME)

    async def release(tr: Transaction) -> None:
        await leases.release(tr, mine)

    await store.transact(release)
    with pytest.raises(LeaseLost, match="its own release"):
        await _fenced_write(store, mine, ME, now=101)
