"""Hooks the runtime calls as actors come and go: metrics in production, invariant
checkers in the simulator. Every hook is synchronous and cheap; the default does nothing."""

from __future__ import annotations

__all__ = ["Observers", "RuntimeObserver"]


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


class Observers(RuntimeObserver):
    """Several observers as one (metrics and the simulator's checkers, say)."""

    def __init__(self, *observers: RuntimeObserver) -> None:
        self.observers = observers

    def activated(self, node_id: str, agent_id: str, epoch: int) -> None:
        for o in self.observers:
            o.activated(node_id, agent_id, epoch)

    def deactivated(self, node_id: str, agent_id: str, epoch: int) -> None:
        for o in self.observers:
            o.deactivated(node_id, agent_id, epoch)

    def restarted(self, node_id: str, agent_id: str) -> None:
        for o in self.observers:
            o.restarted(node_id, agent_id)

    def forwarded(self, from_node: str, to_node: str, agent_id: str) -> None:
        for o in self.observers:
            o.forwarded(from_node, to_node, agent_id)

    def enqueued(self, node_id: str, agent_id: str, depth: int) -> None:
        for o in self.observers:
            o.enqueued(node_id, agent_id, depth)

    def leases_renewed(self, node_id: str, count: int, seconds: float) -> None:
        for o in self.observers:
            o.leases_renewed(node_id, count, seconds)
