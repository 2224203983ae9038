"""What the runtime view calls live: decided by build_snapshot, without trio."""

from __future__ import annotations

from kelpie_trio.nursery.lease import Lease
from kelpie_trio.nursery.membership import NodeInfo
from kelpie_trio.nursery.snapshot import build_snapshot

NOW = 1000.0


def _snapshot(**overrides):  # type: ignore[no-untyped-def]
    given = {
        "node_id": "node-a",
        "address": "http://a",
        "now": NOW,
        "lease_ttl": 10.0,
        "nodes": [],
        "actors": [],
        "leases": [],
        "leases_truncated": False,
        "counters": {},
    }
    return build_snapshot(**{**given, **overrides})


def test_a_node_is_live_while_its_heartbeat_is_unexpired() -> None:
    snap = _snapshot(
        nodes=[
            NodeInfo("node-c", "http://c", NOW - 10.5, 1, NOW - 0.5),  # expired
            NodeInfo("node-b", "http://b", NOW - 9.5, 1, NOW + 0.5),
            NodeInfo("node-a", "http://a", NOW - 30.0, 1, NOW - 20),  # this node: alive
        ]
    )
    assert [(n.node_id, n.live, n.this_node) for n in snap.nodes] == [
        ("node-a", True, True),
        ("node-b", True, False),
        ("node-c", False, False),
    ]


def test_a_node_counts_only_the_leases_it_holds_now() -> None:
    snap = _snapshot(
        nodes=[
            NodeInfo("node-a", "http://a", NOW, 1, NOW + 10),
            NodeInfo("node-b", "http://b", NOW, 2, NOW + 5),
            NodeInfo("node-c", "http://c", NOW - 11, 1, NOW - 1),  # its heartbeat expired
        ],
        leases=[
            Lease("agent-1", "node-b", 2, 3),
            Lease("agent-2", "node-b", 1, 1),  # an incarnation of node-b that ended
            Lease("agent-3", "node-b", 2, 2, released=True),  # released at deactivation
            Lease("agent-4", "node-a", 1, 7),
            Lease("agent-5", "node-c", 1, 4),  # its node's heartbeat expired
        ],
    )
    assert [(n.node_id, n.leases) for n in snap.nodes] == [
        ("node-a", 1),
        ("node-b", 1),
        ("node-c", 0),
    ]
    assert [lv.live for lv in snap.leases] == [True, False, False, True, False]
    assert [lv.expires_at for lv in snap.leases] == [NOW + 5, 0.0, 0.0, NOW + 10, NOW - 1]


def test_actors_are_listed_by_key_with_their_lease_and_mailbox() -> None:
    snap = _snapshot(
        actors=[(Lease("conv-2", "node-a", 1, 4), 2), (Lease("agent-1", "node-a", 1, 1), 0)]
    )
    assert [(a.key, a.epoch, a.mailbox_depth) for a in snap.actors] == [
        ("agent-1", 1, 0),
        ("conv-2", 4, 2),
    ]


def test_without_a_runtime_no_node_is_this_one() -> None:
    snap = _snapshot(
        node_id=None, lease_ttl=None, nodes=[NodeInfo("node-b", "http://b", NOW - 20, 1, NOW - 5)]
    )
    assert [(n.live, n.this_node) for n in snap.nodes] == [(False, False)]
