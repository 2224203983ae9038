"""The agent-cluster harness lives in the package (kelpie_trio/sim/agents.py), where
`kelpie-trio sim` runs it too; this module keeps the tests' import path."""

from kelpie_trio.sim.agents import (
    CLEAN,
    AgentCluster,
    NodeDown,
    Panicky,
    Request,
    RequestLog,
    Unanswered,
    cluster_main,
    history_of,
    kinds,
    live_service,
    new_agent,
    page,
    restart_crashed,
    send_anywhere,
    simulate,
    simulate_cluster,
    wait_until,
)

__all__ = [
    "CLEAN",
    "AgentCluster",
    "NodeDown",
    "Panicky",
    "Request",
    "RequestLog",
    "Unanswered",
    "cluster_main",
    "history_of",
    "kinds",
    "live_service",
    "new_agent",
    "page",
    "restart_crashed",
    "send_anywhere",
    "simulate",
    "simulate_cluster",
    "wait_until",
]
