"""Invariants the simulator checks on every commit, whatever the scenario.

FencedWrites: a commit that writes an agent's history (`MESSAGES(agent, seq)`) or its
context record (`CONTEXT(agent)`: where the history the model sees starts, and the
summary of what came before) read that agent's lease in the same transaction. With
the store's conflict check, that is what makes the write land only while its writer
still holds the lease: an activation that lost its lease (to a crash takeover, a
partition, a skewed clock) cannot write after its successor started. Checked on the
commit request itself, so a missing fence is caught at the first write, not only when
a takeover happens to race it.

SingleActivation (the semantic half): two activations of one agent may overlap in
time (a node that lost its lease learns it only at its next store call), and that is
harmless as long as the older one never writes once the newer one holds the lease.
So a history write is flagged exactly when, at the instant it lands, the agent's
stored lease names another holder (node, epoch) than the one the writing transaction
read: the newer activation took the lease between the old one's read and its commit.
A write landing after its own activation released the lease, with nobody newer yet,
is not flagged: no two activations wrote at once. This is independent of the
engine's conflict check, so it catches a store (or a mutation of one) that lets a
stale transaction through.
"""

from __future__ import annotations

from collections.abc import Mapping

from kelpie_trio.storage import keys
from kelpie_trio.storage.base import CommitRequest, MutationKind

__all__ = [
    "Holder",
    "InvariantViolation",
    "history_agents",
    "holder_of",
    "stale_history_writes",
    "unfenced_history_writes",
]

# Who holds an agent's lease: (node id, epoch); None when nobody does.
Holder = tuple[str, int] | None


class InvariantViolation(AssertionError):
    """A simulation ended in a state the system promises never to reach."""


def _covers(ranges: list[tuple[bytes, bytes]], key: bytes) -> bool:
    return any(begin <= key < end for begin, end in ranges)


def history_agents(request: CommitRequest) -> set[str]:
    """The agents whose history (or context record) this commit writes."""
    agents = set()
    for subspace in (keys.MESSAGES, keys.CONTEXT):
        written = subspace.range()
        agents |= {
            subspace.unpack(m.key)[0]
            for m in request.mutations
            if m.kind is MutationKind.SET and written.start <= m.key < written.stop
        }
    return agents


def unfenced_history_writes(request: CommitRequest) -> list[str]:
    """The agents whose history this commit writes without having read their lease."""
    agents = history_agents(request)
    return sorted(a for a in agents if not _covers(request.read_ranges, keys.LEASES.pack((a,))))


def holder_of(raw: bytes | None) -> Holder:
    """The (node, epoch) of a stored lease value (nursery/lease.py's encoding)."""
    if raw is None:
        return None
    from kelpie_trio.nursery.lease import Lease  # the runtime's own decoding, not a copy

    lease = Lease.decode("", raw)
    return lease.node_id, lease.epoch


def stale_history_writes(
    request: CommitRequest, read: Mapping[str, Holder], stored: Mapping[str, Holder]
) -> list[str]:
    """SingleActivation at a commit: the history writes of this commit whose activation
    was superseded before it landed. `read`: the lease holder the transaction read per
    agent; `stored`: the holder stored at the instant the commit lands."""
    problems = []
    for agent in sorted(history_agents(request)):
        if agent not in read:
            continue  # unfenced: FencedWrites reports it
        mine, now = read[agent], stored.get(agent)
        if mine is not None and now is not None and now != mine:
            problems.append(
                f"SingleActivation: {agent}: node {mine[0]} (epoch {mine[1]}) wrote its "
                f"history after node {now[0]} took the lease at epoch {now[1]}"
            )
    return problems
