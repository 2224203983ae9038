"""The ring of a node's recent runtime events (nursery/recent.py), without trio."""

from __future__ import annotations

import pytest

from kelpie_trio.nursery.recent import RecentEvents


def test_the_newest_are_kept_newest_first_and_every_one_is_counted() -> None:
    times = iter(range(100, 200))
    ring = RecentEvents(lambda: float(next(times)), size=3)
    for n in range(5):
        ring.record("restart", f"agent-{n}", detail="handler failed: RuntimeError")
    assert ring.recorded == 5 and ring.size == 3
    assert [(e.seq, e.key, e.at) for e in ring.newest_first()] == [
        (5, "agent-4", 104.0),
        (4, "agent-3", 103.0),
        (3, "agent-2", 102.0),
    ]


def test_an_event_carries_what_its_kind_needs() -> None:
    ring = RecentEvents(lambda: 7.0, size=10)
    ring.record("transfer_out", "agent-a", run_id="run-1", peer="agent-b")
    ring.record("transfer_in", "agent-b", run_id="run-1", peer="agent-a", iteration=2)
    ring.record("recovery", "conv-1", run_id="run-2", iteration=0)
    into, out = ring.newest_first()[1:]
    assert (out.kind, out.peer, out.iteration) == ("transfer_out", "agent-b", None)
    assert (into.kind, into.peer, into.iteration) == ("transfer_in", "agent-a", 2)
    assert ring.newest_first()[0].key == "conv-1"


def test_a_ring_holds_at_least_one() -> None:
    with pytest.raises(ValueError):
        RecentEvents(lambda: 0.0, size=0)
