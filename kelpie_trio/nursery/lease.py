"""Leases: at most one activation of an agent across all nodes.

A lease (agent, node, incarnation, epoch) lives in the store. It carries no expiry of its
own: it is live while the node's heartbeat record names that incarnation and is unexpired
(membership.py), so liveness costs one write per node per renewal period, not one per
agent. A node activates an agent only by taking its lease: free, released, its own, or
held by an incarnation that is no longer live, the lease passes to it with the epoch plus
one. A lease still held (this node's, or an ended incarnation's) is taken in the
activation's first transaction. A lease nobody holds (never taken, or released) is taken
by the activation's first write instead (`take_at_first_write`), in the same commit, if
it is still exactly the record the activation read: every writer takes the lease first
and a holder writes nothing once it has released, so an unchanged record means nothing
was written since the activation's reads. That saves a cold message a commit of its own.
Every transaction that writes the agent's state runs the `fence`: it reads the lease, so
it commits only while the lease still names this node, incarnation and epoch, unreleased
(a takeover writes the lease, so it conflicts with, or is seen by, the old owner's
transaction), and it checks this node's own heartbeat is still live, so a node whose
heartbeat expired commits nothing for any of its agents. Expiry only decides when
another node may take over (liveness); the epoch is what keeps two owners from both
writing (safety), so a node whose clock is skewed may take over too early, but never
corrupts.

The decisions are plain functions over values (`decide_*`), tested without trio; the
`async` helpers apply them inside a caller's transaction.
"""

from __future__ import annotations

import attrs
import orjson

from kelpie_trio.nursery.errors import LeaseLost
from kelpie_trio.nursery.membership import Membership, NodeInfo, read_node
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = [
    "Acquired",
    "HeldElsewhere",
    "Lease",
    "Look",
    "check_heartbeat",
    "decide_acquire",
    "fence",
    "holds",
    "lapsed",
    "lease_key",
    "look",
    "read_lease",
    "release",
    "take",
    "take_at_first_write",
]


@attrs.frozen
class Lease:
    agent_id: str
    node_id: str
    incarnation: int  # the holder node's incarnation: live while its heartbeat names it
    epoch: int  # the fencing token: +1 at every activation, never reused
    released: bool = False  # let go by its holder: anyone may take it at once

    def encode(self) -> bytes:
        return orjson.dumps([self.node_id, self.epoch, self.incarnation, self.released])

    @classmethod
    def decode(cls, agent_id: str, raw: bytes) -> Lease:
        fields = orjson.loads(raw)
        if len(fields) == 3:  # written before node heartbeats: no incarnation ever matches
            return cls(agent_id, fields[0], 0, fields[1])
        node_id, epoch, incarnation, released = fields
        return cls(agent_id, node_id, incarnation, epoch, released)

    @property
    def holder(self) -> tuple[str, int, int]:
        return self.node_id, self.incarnation, self.epoch


@attrs.frozen
class Acquired:
    lease: Lease


@attrs.frozen
class HeldElsewhere:
    lease: Lease  # the live lease of another node: forward there
    address: str  # where that node listens (from its heartbeat record)


def holds(lease: Lease, node: NodeInfo | None, now: float) -> bool:
    """Whether `lease` is live: not released, and its node's record names its incarnation
    and is unexpired by `now`."""
    return (
        not lease.released
        and node is not None
        and node.incarnation == lease.incarnation
        and node.live(now)
    )


def decide_acquire(
    current: Lease | None, holder: NodeInfo | None, agent_id: str, me: Membership, now: float
) -> Acquired | HeldElsewhere:
    """`holder`: the record of `current`'s node (None if not read: it is this node)."""
    if current is not None and current.node_id != me.node_id and holds(current, holder, now):
        assert holder is not None
        return HeldElsewhere(current, holder.address)
    epoch = current.epoch + 1 if current is not None else 1
    return Acquired(Lease(agent_id, me.node_id, me.incarnation, epoch))


def lapsed(mine: Lease, me: Membership | None, now: float) -> bool:
    """Whether the node incarnation that took `mine` is no longer live by its own record."""
    return me is None or me.incarnation != mine.incarnation or not me.live(now)


def lease_key(agent_id: str) -> bytes:
    return keys.LEASES.pack((agent_id,))


_key = lease_key


async def read_lease(tr: Transaction, agent_id: str) -> Lease | None:
    raw = await tr.get(_key(agent_id))
    return None if raw is None else Lease.decode(agent_id, raw)


@attrs.frozen
class Look:
    """What an activation found: its decision, and the stored record it decided on."""

    decision: Acquired | HeldElsewhere
    seen: Lease | None

    @property
    def may_defer(self) -> bool:
        """Whether the lease may be taken by the activation's first write rather than now:
        nobody holds it (never taken, or released), so no earlier holder can still write."""
        return isinstance(self.decision, Acquired) and (self.seen is None or self.seen.released)


async def look(tr: Transaction, agent_id: str, me: Membership | None, now: float) -> Look:
    """Decide whether this node's live incarnation `me` may take the agent's lease (and at
    which epoch) or who holds it, without writing."""
    if me is None or not me.live(now):
        # Not a live member (starting, or its heartbeat lapsed): it could not fence a write.
        raise LeaseLost(f"node {me.node_id if me else '?'} is not a live member: cannot activate")
    current = await read_lease(tr, agent_id)
    holder = None
    if current is not None and current.node_id != me.node_id and not current.released:
        holder = await read_node(tr, current.node_id)
    return Look(decide_acquire(current, holder, agent_id, me, now), current)


def take(tr: Transaction, lease: Lease) -> None:
    tr.set(_key(lease.agent_id), lease.encode())


async def take_at_first_write(
    tr: Transaction, pending: Lease, seen: Lease | None, me: Membership | None, now: float
) -> bool:
    """The fence of a write by an activation that decided on `pending` from the record
    `seen` (nobody's) but has not written it yet: take it in this transaction if the
    stored record is still `seen` (True); go on if it is `pending` already, taken by an
    earlier write of this activation (False); otherwise LeaseLost, since another
    activation took it since, and what this one read may be out of date."""
    check_heartbeat(pending, me, now)
    current = await read_lease(tr, pending.agent_id)
    if current == seen:
        take(tr, pending)
        return True
    if current is not None and current.holder == pending.holder and not current.released:
        return False
    owner = f"{current.node_id} epoch {current.epoch}" if current else "nobody"
    raise LeaseLost(
        f"node {pending.node_id} could not take agent {pending.agent_id} at epoch "
        f"{pending.epoch}: it is {owner}'s now"
    )


def check_heartbeat(mine: Lease, me: Membership | None, now: float) -> None:
    """LeaseLost unless this node's incarnation that took `mine` is still live, by this
    node's own copy of its record (exact: only it writes it). No read."""
    if lapsed(mine, me, now):
        raise LeaseLost(
            f"node {mine.node_id} incarnation {mine.incarnation}: its heartbeat expired, "
            f"so agent {mine.agent_id} (epoch {mine.epoch}) may be another node's now"
        )


async def fence(tr: Transaction, mine: Lease, me: Membership | None, now: float) -> None:
    """Make this transaction commit only while this node's incarnation is live and `mine`
    is still the agent's lease. The heartbeat is checked on this node's own copy of its
    record, exact since only it writes it; the lease is read, so a takeover conflicts."""
    check_heartbeat(mine, me, now)
    current = await read_lease(tr, mine.agent_id)
    # Released: this activation let it go, and a successor's first write may take it
    # without a new record in between (take_at_first_write), so nothing may land after.
    if current is None or current.holder != mine.holder or current.released:
        owner = f"{current.node_id} epoch {current.epoch}" if current else "nobody"
        if current is not None and current.holder == mine.holder:
            owner = "its own release"
        raise LeaseLost(
            f"node {mine.node_id} lost agent {mine.agent_id} (epoch {mine.epoch}) to {owner}"
        )


async def release(tr: Transaction, mine: Lease) -> None:
    """Mark the lease released so another node may take over at once; the epoch stays."""
    current = await read_lease(tr, mine.agent_id)
    if current is not None and current.holder == mine.holder:
        tr.set(_key(mine.agent_id), attrs.evolve(mine, released=True).encode())
