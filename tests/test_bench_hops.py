"""`python -m bench.hops`: the store's round trips of one message, a budget that holds."""

from __future__ import annotations

from bench.hops import count


async def test_a_steady_message_keeps_within_its_store_round_trips() -> None:
    first, *steady = await count(3)
    for row in steady:
        # 2 writing transactions (the run's start, the step with its end) and the step's
        # read of the agent; 2 batches, one per commit, its reads all served on the trio
        # thread (16 SQLite thread hops before issue 23's work, 12 later, 2 until commits
        # ran on the loop: a disk whose fsync is slow still sends them to the thread).
        assert row["commit"] == 2
        assert row["read_only"] <= 1
        assert row["batches"] == 2
        assert row["hops"] <= 2
        # Its reads in 3 SQLite snapshots: the run's start, the step's view (the agent,
        # its blocks and folders read ahead together), the step's commit.
        assert row["snapshots"] <= 3
        # One message at a time: no batch holds the writer's connection in the thread
        # while it reads, so every snapshot runs there, on a warm page cache.
        assert row["on_writer"] == row["snapshots"]
    assert first["batches"] == 2  # with its activation: its lease is in its first commit
