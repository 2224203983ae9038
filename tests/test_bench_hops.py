"""`python -m bench.hops`: the store's round trips of one message, a budget that holds."""

from __future__ import annotations

from bench.hops import count


async def test_a_steady_message_keeps_within_its_store_round_trips() -> None:
    first, *steady = await count(3)
    for row in steady:
        # 2 writing transactions (the run's start, the step with its end) and the step's
        # read of the agent; 12 SQLite hops (16 before issue 23's work).
        assert row["commit"] == 2
        assert row["read_only"] <= 1
        assert row["hops"] <= 12
        # Its reads in 3 SQLite snapshots: the run's start, the step's view (the agent,
        # its blocks and folders read ahead together), the step's commit.
        assert row["snapshots"] <= 3
    assert first["hops"] <= 18  # with its activation: one transaction takes the lease
