"""Who waits on whom, across requests: the wait-for graph of agent-to-agent waits.

A thread's actor runs one turn at a time. While a turn's step waits for another agent's
reply (send_message_to_agent_and_wait_for_reply, or a tag fan-out), the thread is blocked,
and the message it sent sits in the target's mailbox until the target's current turn
ends. The chain stored on a run (`Run.waiting_chain`, agent/multi_agent.py) catches a
cycle along one chain of calls; two separate requests can close one too: a user's turn
of A waits on B while another user's turn of B waits on A. Neither can ever answer.

So every wait is an edge in the store, `WAITS(waiting thread, run, call, target)`, written
by `register` in the transaction that checks, by following the live edges from the
target, that the new edge closes no cycle. Two waits that would close one commit in some
order (both read what the other writes, so the store serializes them): the second finds
the first's edge and is refused, with the path. That is the wait that closed the cycle,
the innermost one; the first goes on waiting and gets its answer once the refused turn
ends.

An edge is live while its run is open and the call is still pending in the run's
checkpoint (a wait resumed after a crash waits again, on the same edge). `unregister`
removes it when the wait ends; an edge left by a crash or a deleted run is stale, ignored
and removed by the next walk that meets it.
"""

from __future__ import annotations

from collections.abc import Mapping

from kelpie_trio.agent import runs
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = ["WAITS", "cycle_through", "forget_thread", "register", "unregister"]

WAITS = keys.ROOT["index"]["waits"]  # (waiting thread, run_id, call_id, target thread) -> b""
_MAX_HOPS = 64  # threads a walk visits at most (a chain of waits is a few agents long)


def cycle_through(edges: Mapping[str, list[str]], start: str, goal: str) -> list[str] | None:
    """A path start -> ... -> goal over `edges` (thread -> the threads it waits on), or
    None. Sans-IO: the walk over edges already read."""
    stack: list[list[str]] = [[start]]
    seen = {start}
    while stack:
        path = stack.pop()
        if path[-1] == goal:
            return path
        for nxt in reversed(edges.get(path[-1], [])):
            if nxt not in seen:
                seen.add(nxt)
                stack.append([*path, nxt])
    return None


async def _live_targets(tr: Transaction, thread: str) -> list[str]:
    """The threads `thread` waits on now (stale edges are removed on the way)."""
    targets: list[str] = []
    for key, _ in await tr.get_prefix(WAITS.pack((thread,))):
        _, run_id, call_id, target = WAITS.unpack(key)
        run = await runs.load_run(tr, run_id)
        pending = (
            run is not None
            and run.thread == thread  # a session moved to another agent waits from there
            and run.checkpoint.stop_reason is None
            and any(c.id == call_id for c in run.checkpoint.pending_tool_calls)
        )
        if pending:
            targets.append(target)
        else:
            tr.clear(key)
    return targets


async def register(
    tr: Transaction, *, thread: str, run_id: str, call_id: str, target: str
) -> list[str] | None:
    """Record that `thread` (its run's call) waits on `target`, unless that would close a
    cycle of waits: then nothing is written and the cycle is returned, as the threads
    thread -> target -> ... -> thread."""
    edges: dict[str, list[str]] = {}
    frontier = [target]
    while frontier and len(edges) < _MAX_HOPS:
        current = frontier.pop()
        if current in edges or current == thread:
            continue
        edges[current] = await _live_targets(tr, current)
        frontier.extend(edges[current])
    path = cycle_through(edges, target, thread)
    if path is not None:
        return [thread, *path]
    tr.set(WAITS.pack((thread, run_id, call_id, target)), b"")
    return None


def unregister(tr: Transaction, *, thread: str, run_id: str, call_id: str, target: str) -> None:
    tr.clear(WAITS.pack((thread, run_id, call_id, target)))


def forget_thread(tr: Transaction, thread: str) -> None:
    """A thread deleted (its agent or conversation): the waits it had go with it."""
    tr.clear_range(*keys.prefix_range(WAITS.pack((thread,))))
