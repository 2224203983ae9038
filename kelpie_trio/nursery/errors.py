"""What the actor runtime tells a caller when it cannot deliver a reply.

Each error says whether a retry may help; the API maps them to HTTP statuses
(429 with Retry-After for a full mailbox, 503 for the rest).
"""

from __future__ import annotations

__all__ = [
    "ActorFailed",
    "AgentUnavailable",
    "LeaseLost",
    "MailboxFull",
    "NodeShuttingDown",
    "NotOwner",
    "RuntimeFailure",
]


class RuntimeFailure(Exception):
    """Base of the runtime's errors."""

    retryable = True


class MailboxFull(RuntimeFailure):
    """The agent's mailbox is full: back off and retry (HTTP 429 with Retry-After)."""

    def __init__(self, agent_id: str, retry_after: float) -> None:
        super().__init__(f"agent {agent_id} is busy: its mailbox is full; retry later")
        self.agent_id = agent_id
        self.retry_after = retry_after


class ActorFailed(RuntimeFailure):
    """The agent's handler failed on this message every time it was tried."""

    retryable = False

    def __init__(self, agent_id: str, attempts: int, cause: str) -> None:
        super().__init__(f"agent {agent_id} failed on this message {attempts} times: {cause}")
        self.agent_id = agent_id
        self.attempts = attempts
        self.cause = cause


class AgentUnavailable(RuntimeFailure):
    """No node could take the message now (storage down, owner unreachable): retry."""


class NodeShuttingDown(RuntimeFailure):
    """This node is stopping and takes no new work; another node (or a retry) will."""


class LeaseLost(RuntimeFailure):
    """This node no longer holds the agent's lease: another node may own it now."""


class NotOwner(RuntimeFailure):
    """A forwarded message reached a node that does not own the agent (any longer)."""
