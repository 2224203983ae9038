"""Leases: at most one activation of an agent across all nodes.

A lease (agent, node, epoch, expiry) lives in the store. A node activates an
agent only by taking its lease in a transaction: free, expired or already its
own, the lease passes to it with the epoch plus one. Every transaction that
writes the agent's state reads the lease (`fence`), so it commits only while
the lease still names this node and epoch: a node that lost its lease cannot
write, even if it still believes it owns the agent, because the new owner's
acquisition conflicts with (or is seen by) the old owner's transaction.
Expiry only decides when another node may take over (liveness); the epoch
check is what keeps two owners from both writing (safety), so a node whose
clock is skewed may take over too early, but never corrupts.

The decisions are plain functions over values (`decide_*`), tested without
trio; the `async` helpers apply them inside a caller's transaction.
"""

from __future__ import annotations

import attrs
import orjson

from kelpie_trio.nursery.errors import LeaseLost
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = [
    "Acquired",
    "HeldElsewhere",
    "Lease",
    "acquire",
    "decide_acquire",
    "decide_renew",
    "fence",
    "read_lease",
    "release",
    "renew",
]


@attrs.frozen
class Lease:
    agent_id: str
    node_id: str
    epoch: int  # the fencing token: +1 at every activation, never reused
    expires_at: float  # wall-clock seconds, as the holder's clock saw it when it renewed

    def live(self, now: float) -> bool:
        return now < self.expires_at

    def encode(self) -> bytes:
        return orjson.dumps([self.node_id, self.epoch, self.expires_at])

    @classmethod
    def decode(cls, agent_id: str, raw: bytes) -> Lease:
        node_id, epoch, expires_at = orjson.loads(raw)
        return cls(agent_id, node_id, epoch, expires_at)


@attrs.frozen
class Acquired:
    lease: Lease


@attrs.frozen
class HeldElsewhere:
    lease: Lease  # the live lease of another node: forward there


def decide_acquire(
    current: Lease | None, agent_id: str, node_id: str, now: float, ttl: float
) -> Acquired | HeldElsewhere:
    if current is not None and current.node_id != node_id and current.live(now):
        return HeldElsewhere(current)
    epoch = current.epoch + 1 if current is not None else 1
    return Acquired(Lease(agent_id, node_id, epoch, now + ttl))


def decide_renew(current: Lease | None, mine: Lease, now: float, ttl: float) -> Lease | None:
    """The renewed lease, or None if `mine` is no longer the stored one (lost)."""
    if current is None or (current.node_id, current.epoch) != (mine.node_id, mine.epoch):
        return None
    return attrs.evolve(mine, expires_at=now + ttl)


def _key(agent_id: str) -> bytes:
    return keys.LEASES.pack((agent_id,))


async def read_lease(tr: Transaction, agent_id: str) -> Lease | None:
    raw = await tr.get(_key(agent_id))
    return None if raw is None else Lease.decode(agent_id, raw)


async def acquire(
    tr: Transaction, agent_id: str, node_id: str, now: float, ttl: float
) -> Acquired | HeldElsewhere:
    decision = decide_acquire(await read_lease(tr, agent_id), agent_id, node_id, now, ttl)
    if isinstance(decision, Acquired):
        tr.set(_key(agent_id), decision.lease.encode())
    return decision


async def fence(tr: Transaction, mine: Lease) -> None:
    """Make this transaction commit only while `mine` is still the agent's lease."""
    current = await read_lease(tr, mine.agent_id)
    if current is None or (current.node_id, current.epoch) != (mine.node_id, mine.epoch):
        owner = f"{current.node_id} epoch {current.epoch}" if current else "nobody"
        raise LeaseLost(
            f"node {mine.node_id} lost agent {mine.agent_id} (epoch {mine.epoch}) to {owner}"
        )


async def renew(tr: Transaction, mine: Lease, now: float, ttl: float) -> Lease | None:
    renewed = decide_renew(await read_lease(tr, mine.agent_id), mine, now, ttl)
    if renewed is not None:
        tr.set(_key(mine.agent_id), renewed.encode())
    return renewed


async def release(tr: Transaction, mine: Lease) -> None:
    """Expire the lease now so another node may take over at once; the epoch stays."""
    if decide_renew(await read_lease(tr, mine.agent_id), mine, 0.0, 0.0) is not None:
        tr.set(_key(mine.agent_id), attrs.evolve(mine, expires_at=0.0).encode())
