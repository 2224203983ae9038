"""Hooks the runtime calls as actors come and go: metrics in production, invariant
checkers in the simulator. Every hook is synchronous and cheap; the default does nothing."""

from __future__ import annotations

__all__ = ["RuntimeObserver"]


class RuntimeObserver:
    def activated(self, node_id: str, agent_id: str, epoch: int) -> None:
        """An activation started (its lease taken at `epoch`)."""

    def deactivated(self, node_id: str, agent_id: str, epoch: int) -> None:
        """An activation ended (idle, shutdown, lease lost or crash of the actor)."""

    def restarted(self, node_id: str, agent_id: str) -> None:
        """A handler (or an activation) failed and the actor is being restarted."""

    def forwarded(self, from_node: str, to_node: str, agent_id: str) -> None:
        """A message went to the node that owns the agent."""

    def enqueued(self, node_id: str, agent_id: str, depth: int) -> None:
        """A message entered a mailbox, which now holds `depth` messages."""

    def leases_renewed(self, node_id: str, count: int, seconds: float) -> None:
        """One renewal round of a node's leases took `seconds`."""
