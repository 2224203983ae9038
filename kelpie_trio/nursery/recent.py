"""The runtime's recent events, by name: a small ring per node, for the console.

`/metrics` counts activations and messages; what a person wants to read one by one is
rarer and says more: a session that moved to another agent (out of one actor, into
another), a run that went on from its checkpoint after a crash, an actor restarted after
a failure. Each is one append to a bounded deque when it happens (nothing per message),
stamped by the node's injected clock (virtual time in the simulator). The ring lives in
the node's memory: a restarted node starts an empty one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import attrs

__all__ = ["KINDS", "RecentEvents", "RuntimeEvent"]

# transfer_out: a session left this actor (peer: the agent it went to); transfer_in: a
# session came to this actor (peer: the agent it came from); recovery: an unfinished
# run went on after its checkpoint (iteration), left so by a crash, a lost lease or a
# failed handler; restart: the actor was built again from stored state (detail: why).
KINDS = ("transfer_out", "transfer_in", "recovery", "restart")


@attrs.frozen
class RuntimeEvent:
    seq: int  # 1, 2, ... on this node: the oldest one's seq says how many were let go
    at: float  # the node's clock (env.now), seconds since the epoch
    kind: str
    key: str  # the actor key: an agent id (its default conversation) or a conversation id
    run_id: str | None = None
    peer: str | None = None
    iteration: int | None = None
    detail: str | None = None


class RecentEvents:
    """The last `size` events of one node, oldest dropped first."""

    def __init__(self, clock: Callable[[], float], size: int) -> None:
        if size < 1:
            raise ValueError("the ring of recent events holds at least one")
        self._clock = clock
        self._ring: deque[RuntimeEvent] = deque(maxlen=size)
        self.recorded = 0  # since this node started, kept or not

    def record(
        self,
        kind: str,
        key: str,
        *,
        run_id: str | None = None,
        peer: str | None = None,
        iteration: int | None = None,
        detail: str | None = None,
    ) -> RuntimeEvent:
        assert kind in KINDS, kind
        self.recorded += 1
        event = RuntimeEvent(
            self.recorded, self._clock(), kind, key, run_id, peer, iteration, detail
        )
        self._ring.append(event)
        return event

    def newest_first(self) -> list[RuntimeEvent]:
        return list(reversed(self._ring))

    @property
    def size(self) -> int:
        return self._ring.maxlen or 0
