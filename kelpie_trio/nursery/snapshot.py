"""A read-only picture of the actor runtime, for the web console's runtime view.

What `/metrics` cannot say in numbers alone: which nodes are registered and alive, which
actors this node runs (lease epoch and expiry, mailbox depth), and every lease in the store
(who holds which actor key), and this node's recent transfers, recoveries and restarts
(nursery/recent.py), newest first. `build_snapshot` is a plain function over values, so what
"live" means is decided in one place and tested without trio; `read_snapshot` is the shell
that reads the store and the dispatcher.
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.nursery.lease import Lease, holds
from kelpie_trio.nursery.membership import NodeInfo
from kelpie_trio.nursery.recent import RuntimeEvent
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Store, Transaction

__all__ = [
    "MAX_LEASES",
    "ActorView",
    "LeaseView",
    "NodeView",
    "RuntimeSnapshot",
    "build_snapshot",
    "read_snapshot",
]

# Leases listed at most: the view is for people, and one read stays far inside FDB's limits.
MAX_LEASES = 500

# Counters and gauges of nursery/metrics.py, by the names the snapshot gives them.
_SAMPLES = {
    "active_actors": "kelpie_active_actors",
    "activations": "kelpie_activations_total",
    "deactivations": "kelpie_deactivations_total",
    "restarts": "kelpie_actor_restarts_total",
    "forwards": "kelpie_forwards_total",
    "leases_held": "kelpie_leases_held",
}


@attrs.frozen
class NodeView:
    node_id: str
    address: str
    heartbeat_at: float
    live: bool  # its heartbeat is unexpired: its leases are live
    this_node: bool
    leases: int  # live leases it holds


@attrs.frozen
class ActorView:
    key: str  # the actor key: an agent id (its default conversation) or a conversation id
    epoch: int
    expires_at: float  # its node's heartbeat's expiry (a lease lives as long as that)
    mailbox_depth: int


@attrs.frozen
class LeaseView:
    key: str
    node_id: str
    epoch: int
    expires_at: float  # its node's heartbeat's expiry; 0 once released or its incarnation ended
    live: bool  # only its holder may run the actor now


@attrs.frozen
class RuntimeSnapshot:
    node_id: str | None  # None: this server runs no actors (an API-only app)
    address: str | None
    now: float
    lease_ttl: float | None
    nodes: list[NodeView]
    actors: list[ActorView]
    leases: list[LeaseView]
    leases_truncated: bool
    counters: dict[str, float]
    # This node's recent transfers, recoveries and restarts, newest first; `events_recorded`
    # counts every one since the node started (the ring keeps the last few).
    events: list[RuntimeEvent] = attrs.field(factory=list)
    events_recorded: int = 0


def build_snapshot(
    *,
    node_id: str | None,
    address: str | None,
    now: float,
    lease_ttl: float | None,
    nodes: list[NodeInfo],
    actors: list[tuple[Lease, int]],
    leases: list[Lease],
    leases_truncated: bool,
    counters: dict[str, float],
    events: list[RuntimeEvent] | None = None,
    events_recorded: int = 0,
) -> RuntimeSnapshot:
    """The view from what was read: `nodes` as their heartbeat records, `actors` as (lease,
    mailbox depth) of this node's activations, `leases` as stored. A lease lives as long as
    its node's heartbeat names its incarnation (lease.py)."""
    records = {n.node_id: n for n in nodes}

    def expiry(lease: Lease) -> float:
        node = records.get(lease.node_id)
        if node is None or lease.released or node.incarnation != lease.incarnation:
            return 0.0
        return node.expires_at

    lease_views = [
        LeaseView(
            le.agent_id, le.node_id, le.epoch, expiry(le), holds(le, records.get(le.node_id), now)
        )
        for le in leases
    ]
    held: dict[str, int] = {}
    for lv in lease_views:
        if lv.live:
            held[lv.node_id] = held.get(lv.node_id, 0) + 1
    node_views = [
        NodeView(
            n.node_id,
            n.address,
            n.heartbeat_at,
            # This node is alive by definition; another one while its heartbeat is.
            live=n.node_id == node_id or n.live(now),
            this_node=n.node_id == node_id,
            leases=held.get(n.node_id, 0),
        )
        for n in sorted(nodes, key=lambda n: n.node_id)
    ]
    actor_views = sorted(
        (ActorView(le.agent_id, le.epoch, expiry(le), depth) for le, depth in actors),
        key=lambda a: a.key,
    )
    return RuntimeSnapshot(
        node_id=node_id,
        address=address,
        now=now,
        lease_ttl=lease_ttl,
        nodes=node_views,
        actors=actor_views,
        leases=lease_views,
        leases_truncated=leases_truncated,
        counters=counters,
        events=list(events or []),
        events_recorded=events_recorded,
    )


async def read_snapshot(
    store: Store, dispatcher: Any = None, metrics: Any = None, *, now: float
) -> RuntimeSnapshot:
    """Read the node registry and the leases in one transaction, and this node's actors."""

    async def read(tr: Transaction) -> tuple[list, list]:
        nodes, leases = keys.NODES.range(), keys.LEASES.range()
        node_rows = await tr.get_range(nodes.start, nodes.stop)
        lease_rows = await tr.get_range(leases.start, leases.stop, limit=MAX_LEASES + 1)
        return node_rows, lease_rows

    node_rows, lease_rows = await store.transact(read, max_attempts=3)
    nodes = [NodeInfo.decode(keys.NODES.unpack(key)[0], value) for key, value in node_rows]
    leases = [
        Lease.decode(keys.LEASES.unpack(key)[0], value) for key, value in lease_rows[:MAX_LEASES]
    ]
    counters: dict[str, float] = {}
    if metrics is not None:
        for name, sample in _SAMPLES.items():
            value = metrics.registry.get_sample_value(sample)
            if value is not None:
                counters[name] = value
    actors = []
    events: list[RuntimeEvent] = []
    recorded = 0
    if dispatcher is not None:
        actors = [(host.lease, host.mailbox_depth) for host in dispatcher.actors]
        events, recorded = dispatcher.recent.newest_first(), dispatcher.recent.recorded
    return build_snapshot(
        node_id=dispatcher.node_id if dispatcher is not None else None,
        address=dispatcher.address if dispatcher is not None else None,
        now=now,
        lease_ttl=dispatcher.config.lease_ttl if dispatcher is not None else None,
        nodes=nodes,
        actors=actors,
        leases=leases,
        leases_truncated=len(lease_rows) > MAX_LEASES,
        counters=counters,
        events=events,
        events_recorded=recorded,
    )
