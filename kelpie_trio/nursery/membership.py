"""Membership: one heartbeat record per node, and the incarnation it names.

Liveness is per node, not per agent (Orleans' membership table is the model): each node
keeps one record in the store, `NODES(node_id)` -> its address, its incarnation and the
expiry of its heartbeat, and rewrites it every ttl/3. An agent's lease names the node and
the incarnation that holds it (lease.py) and is live exactly while that node's record
names the same incarnation and is unexpired. So an idle node writes one record per
renewal period, whatever the number of agents it hosts.

Only a node writes its own record, so its own copy of it (`Membership`) is exact: the
fence of every actor transaction checks it there, with no store read, and a renewal is a
blind write decided on it. A node that finds its heartbeat already expired when it comes
to renew it (cut off from the store, or
stalled, for longer than a ttl) does not revive it: another node may have taken over any
of its agents meanwhile. It stops every actor and joins again as a new incarnation, so
nothing of the old one commits again.

The decisions are plain functions over values (`decide_*`), tested without trio.
"""

from __future__ import annotations

import attrs
import orjson

from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = [
    "Membership",
    "NodeInfo",
    "decide_join",
    "decide_renew",
    "expired_peers",
    "read_node",
    "read_nodes",
]


@attrs.frozen
class NodeInfo:
    """A node's record: where it listens, and which incarnation lives until when."""

    node_id: str
    address: str
    heartbeat_at: float
    incarnation: int = 0  # 0: a record of an older version, never live
    expires_at: float = 0.0  # wall-clock seconds, as the node's own clock saw it

    def live(self, now: float) -> bool:
        return now < self.expires_at

    def encode(self) -> bytes:
        return orjson.dumps([self.address, self.heartbeat_at, self.incarnation, self.expires_at])

    @classmethod
    def decode(cls, node_id: str, raw: bytes) -> NodeInfo:
        fields = orjson.loads(raw)
        if len(fields) == 2:  # written before nodes had incarnations: not a live member
            return cls(node_id, fields[0], fields[1])
        address, heartbeat_at, incarnation, expires_at = fields
        return cls(node_id, address, heartbeat_at, incarnation, expires_at)


@attrs.frozen
class Membership:
    """This node's own copy of its record's incarnation and expiry (exact: only it writes)."""

    node_id: str
    incarnation: int
    live_until: float

    def live(self, now: float) -> bool:
        return now < self.live_until


def decide_join(current: NodeInfo | None, node_id: str, address: str, now: float, ttl: float):
    """The record of a new incarnation of this node: after every one it had before."""
    incarnation = current.incarnation + 1 if current is not None else 1
    return NodeInfo(node_id, address, now, incarnation, now + ttl)


def decide_renew(mine: Membership, address: str, now: float, ttl: float) -> NodeInfo | None:
    """The renewed record, or None: the heartbeat has expired already (another node may
    have taken agents over: this incarnation is over). Decided on the node's own copy, so
    the renewal is one blind write: no read, nothing for it to conflict with."""
    if not mine.live(now):
        return None
    return NodeInfo(mine.node_id, address, now, mine.incarnation, now + ttl)


def node_key(node_id: str) -> bytes:
    return keys.NODES.pack((node_id,))


async def read_node(tr: Transaction, node_id: str) -> NodeInfo | None:
    raw = await tr.get(node_key(node_id))
    return None if raw is None else NodeInfo.decode(node_id, raw)


async def read_nodes(tr: Transaction) -> list[NodeInfo]:
    """Every node's record (one per node that ever joined: a short range)."""
    return [
        NodeInfo.decode(keys.NODES.unpack(key)[0], raw)
        for key, raw in await tr.get_prefix(keys.NODES.key())
    ]


def expired_peers(
    records: list[NodeInfo], me: str | None, now: float
) -> frozenset[tuple[str, int]]:
    """The incarnations of other nodes whose heartbeat has run out by this node's clock:
    their agents' leases are free to take (lease.py judges them the same way), so any
    run they left open may be resumed here. A watcher compares two of these sets: an
    incarnation in the new one and not the old has expired since it last looked."""
    return frozenset(
        (r.node_id, r.incarnation) for r in records if r.node_id != me and not r.live(now)
    )
