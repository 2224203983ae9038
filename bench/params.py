"""Each scenario's sizes (default and `--smoke`), and the issue's targets printed beside them.

Flags of `python -m bench` override the sizes; the targets are reported, never asserted.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULTS", "SMOKE", "TARGETS"]


# Per scenario: agents, messages, concurrency, provider latency (s). Flags override them.
DEFAULTS: dict[str, dict[str, Any]] = {
    "steady": {"agents": 200, "messages": 4000, "concurrency": 200, "latency": 0.5},
    # one history of 1,000 messages; CPU per message read per window of window_messages.
    "hot-agent": {
        "agents": 1,  # and a background agent and a reference per window (bench/hot_agent.py)
        "messages": 1000,
        "concurrency": 1,
        "latency": 0.0,
        "window_messages": 100,
        "background_s": 15.0,  # another agent's messages first (bench/hot_agent.py)
    },
    "cold-activation": {
        "agents": 10_000,  # stored; --agents 100000 for the full size
        "messages": 1000,  # agents activated at random, each one cold then warm message
        "concurrency": 4,
        "latency": 0.0,
    },
    "streaming": {"agents": 50, "messages": 1000, "concurrency": 50, "latency": 0.2},
    "idle-footprint": {"agents": 2000, "messages": 0, "concurrency": 32, "latency": 0.0},
    "two-nodes": {"agents": 100, "messages": 2000, "concurrency": 100, "latency": 0.2},
    # agents: askers, each with a worker of its own; every message is one agent-to-agent hop.
    "agents-messaging": {"agents": 50, "messages": 1000, "concurrency": 50, "latency": 0.0},
    # every message one tool call approved by its client: two requests, two turns.
    "approvals": {"agents": 50, "messages": 1000, "concurrency": 50, "latency": 0.0},
    # every message's turn calls a tool of a real stdio MCP server (bench/mcp_echo.py).
    "mcp-calls": {"agents": 50, "messages": 1000, "concurrency": 50, "latency": 0.0},
    # steady's 200 clients, each in a conversation of its own: 20 agents, 10 threads each.
    "conversations": {
        "agents": 20,
        "threads": 10,
        "messages": 4000,
        "concurrency": 200,
        "latency": 0.5,
    },
    # agents: the most active at once (measured at 0, 200 and this); no message in the window.
    # A minute: the idle node's periodic work runs every 3.3, 10, 30 and 60 s (RESULTS.md),
    # and a shorter window holds a 30 s job's round or not.
    "idle": {"agents": 2000, "messages": 0, "concurrency": 32, "latency": 0.0, "window": 60.0},
    # messages: files uploaded (the corpus's and a generated Markdown of size_kb, in turn).
    "file-ingestion": {"messages": 240, "concurrency": 4, "latency": 0.0, "size_kb": 64},
    # messages: one-time schedules over the agents, all due at one instant `lead` s after
    # their creation began; concurrency: the relay floor's clients (the firer sends at once).
    "schedules": {
        "agents": 50,
        "messages": 1000,
        "concurrency": 50,
        "latency": 0.0,
        "lead": 20.0,
    },
}
SMOKE: dict[str, dict[str, Any]] = {
    "steady": {"agents": 10, "messages": 60, "concurrency": 10, "latency": 0.05},
    "hot-agent": {
        "agents": 1,
        "messages": 20,
        "concurrency": 1,
        "latency": 0.0,
        "window_messages": 5,
        "background_s": 0.5,
    },
    "cold-activation": {"agents": 60, "messages": 20, "concurrency": 2, "latency": 0.0},
    "streaming": {"agents": 5, "messages": 20, "concurrency": 5, "latency": 0.02},
    "idle-footprint": {"agents": 80, "messages": 0, "concurrency": 8, "latency": 0.0},
    "two-nodes": {"agents": 10, "messages": 40, "concurrency": 10, "latency": 0.02},
    "agents-messaging": {"agents": 5, "messages": 20, "concurrency": 5, "latency": 0.0},
    "approvals": {"agents": 5, "messages": 20, "concurrency": 5, "latency": 0.0},
    "mcp-calls": {"agents": 3, "messages": 12, "concurrency": 3, "latency": 0.0},
    "conversations": {
        "agents": 2,
        "threads": 3,
        "messages": 24,
        "concurrency": 6,
        "latency": 0.02,
    },
    "idle": {
        "agents": 20,
        "messages": 0,
        "concurrency": 5,
        "latency": 0.0,
        "window": 2.0,
        "settle_min_s": 0.0,
        "settle_step_s": 1.0,
    },
    "file-ingestion": {"messages": 12, "concurrency": 2, "latency": 0.0, "size_kb": 16},
    "schedules": {"agents": 3, "messages": 12, "concurrency": 3, "latency": 0.0, "lead": 4.0},
}

# The targets, reported next to the numbers (never asserted).
TARGETS = {
    "cpu_vs_relay": 1.3,  # steady: CPU per message / relay CPU per request
    "one_client_cpu_vs_steady": 1.5,  # one client, 200 ms provider: CPU per message / steady's
    "one_client_added_p50_ms": 5.0,  # one client: latency beyond the provider's, p50
    "one_client_added_p99_ms": 15.0,  # and p99
    "overhead_p99_ms": 25.0,  # steady at 200 conversations, 500 ms provider
    "activation_p99_ms": 10.0,  # cold-activation, 100,000 agents stored
    "rss_kb_per_idle_agent": 50.0,  # idle-footprint, 10,000 active agents
    "idle_cpu_ms_per_s": 0.5,  # idle: CPU per second of wall time, whatever the active agents
    "hot_agent_growth": 1.10,  # hot-agent: CPU per message, last window / first window
}
