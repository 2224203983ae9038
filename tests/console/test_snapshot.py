"""What the runtime view calls live: decided by build_snapshot, without trio."""

from __future__ import annotations

from kelpie_trio.nursery.lease import Lease
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


def test_a_node_is_live_while_it_renewed_within_one_lease_ttl() -> None:
    snap = _snapshot(
        nodes=[
            ("node-c", "http://c", NOW - 10.5),  # silent for longer than the ttl
            ("node-b", "http://b", NOW - 9.5),
            ("node-a", "http://a", NOW - 30.0),  # this node: alive, whatever it wrote
        ]
    )
    assert [(n.node_id, n.live, n.this_node) for n in snap.nodes] == [
        ("node-a", True, True),
        ("node-b", True, False),
        ("node-c", False, False),
    ]


def test_a_node_counts_only_the_leases_it_holds_now() -> None:
    snap = _snapshot(
        nodes=[("node-a", "http://a", NOW), ("node-b", "http://b", NOW)],
        leases=[
            Lease("agent-1", "node-b", 3, NOW + 5),
            Lease("agent-2", "node-b", 1, NOW - 1),  # expired: anyone may take it
            Lease("agent-3", "node-b", 2, 0.0),  # released at deactivation
            Lease("agent-4", "node-a", 7, NOW + 1),
        ],
    )
    assert [(n.node_id, n.leases) for n in snap.nodes] == [("node-a", 1), ("node-b", 1)]
    assert [lv.live for lv in snap.leases] == [True, False, False, True]


def test_actors_are_listed_by_key_with_their_lease_and_mailbox() -> None:
    snap = _snapshot(
        actors=[(Lease("conv-2", "node-a", 4, NOW + 3), 2), (Lease("agent-1", "node-a", 1, NOW), 0)]
    )
    assert [(a.key, a.epoch, a.mailbox_depth) for a in snap.actors] == [
        ("agent-1", 1, 0),
        ("conv-2", 4, 2),
    ]


def test_without_a_runtime_no_node_is_this_one() -> None:
    snap = _snapshot(node_id=None, lease_ttl=None, nodes=[("node-b", "http://b", NOW)])
    assert [(n.live, n.this_node) for n in snap.nodes] == [(False, False)]
