"""Invariants the simulator checks on every commit, whatever the scenario.

FencedWrites: a commit that writes an agent's history (`MESSAGES(agent, seq)`) read
that agent's lease in the same transaction. With the store's conflict check, that is
what makes the write land only while its writer still holds the lease: an activation
that lost its lease (to a crash takeover, a partition, a skewed clock) cannot write
after its successor started. Checked on the commit request itself, so a missing fence
is caught at the first write, not only when a takeover happens to race it.
"""

from __future__ import annotations

from kelpie_trio.storage import keys
from kelpie_trio.storage.base import CommitRequest, MutationKind

__all__ = ["InvariantViolation", "unfenced_history_writes"]


class InvariantViolation(AssertionError):
    """A simulation ended in a state the system promises never to reach."""


def _covers(ranges: list[tuple[bytes, bytes]], key: bytes) -> bool:
    return any(begin <= key < end for begin, end in ranges)


def unfenced_history_writes(request: CommitRequest) -> list[str]:
    """The agents whose history this commit writes without having read their lease."""
    history = keys.MESSAGES.range()
    agents = {
        keys.MESSAGES.unpack(m.key)[0]
        for m in request.mutations
        if m.kind is MutationKind.SET and history.start <= m.key < history.stop
    }
    return sorted(a for a in agents if not _covers(request.read_ranges, keys.LEASES.pack((a,))))
