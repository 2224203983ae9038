"""The runtime's metrics, in Prometheus text format at /metrics.

One registry per node (not prometheus_client's global one), so several nodes
in one process (tests, the simulator) never mix their numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kelpie_trio.mcp.sessions import McpObserver
from kelpie_trio.nursery.observer import RuntimeObserver

__all__ = ["RuntimeMetrics"]


class RuntimeMetrics(RuntimeObserver, McpObserver):
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active = Gauge("kelpie_active_actors", "Agents active on this node", registry=r)
        self.activations = Counter("kelpie_activations", "Agent activations", registry=r)
        self.deactivations = Counter("kelpie_deactivations", "Agent deactivations", registry=r)
        self.restarts = Counter(
            "kelpie_actor_restarts", "Actor restarts after a failed handler", registry=r
        )
        self.forwards = Counter(
            "kelpie_forwards", "Messages forwarded to the node owning the agent", registry=r
        )
        self.mailbox_depth = Histogram(
            "kelpie_mailbox_depth",
            "Mailbox depth seen as each message is queued",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.lease_renew_seconds = Histogram(
            "kelpie_lease_renew_seconds",
            "Time one round of lease renewals took",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=r,
        )
        self.leases_held = Gauge(
            "kelpie_leases_held", "Leases renewed in the last round", registry=r
        )

        # MCP servers' sessions and calls (kelpie_trio/mcp/sessions.py), by server type.
        kind = ("server_type",)
        self.mcp_open = Gauge(
            "kelpie_mcp_sessions_open", "MCP server connections open", kind, registry=r
        )
        self.mcp_calls = Counter("kelpie_mcp_calls", "MCP tool calls", kind, registry=r)
        self.mcp_failures = Counter(
            "kelpie_mcp_call_failures",
            "MCP tool calls that failed, by reason: tool_error (the tool's error result), "
            "timeout, tool_gone (removed upstream), failed (connect, connection or request)",
            (*kind, "reason"),
            registry=r,
        )
        self.mcp_reconnects = Counter(
            "kelpie_mcp_reconnects",
            "MCP sessions started again after the last one failed",
            kind,
            registry=r,
        )

    def activated(self, node_id: str, agent_id: str, epoch: int) -> None:
        self.activations.inc()
        self.active.inc()

    def deactivated(self, node_id: str, agent_id: str, epoch: int) -> None:
        self.deactivations.inc()
        self.active.dec()

    def restarted(self, node_id: str, agent_id: str) -> None:
        self.restarts.inc()

    def forwarded(self, from_node: str, to_node: str, agent_id: str) -> None:
        self.forwards.inc()

    def enqueued(self, node_id: str, agent_id: str, depth: int) -> None:
        self.mailbox_depth.observe(depth)

    def leases_renewed(self, node_id: str, count: int, seconds: float) -> None:
        self.lease_renew_seconds.observe(seconds)
        self.leases_held.set(count)

    def mcp_session_opened(self, server_type: str) -> None:
        self.mcp_open.labels(server_type).inc()

    def mcp_session_closed(self, server_type: str) -> None:
        self.mcp_open.labels(server_type).dec()

    def mcp_reconnecting(self, server_type: str) -> None:
        self.mcp_reconnects.labels(server_type).inc()

    def mcp_called(self, server_type: str, outcome: str) -> None:
        self.mcp_calls.labels(server_type).inc()
        if outcome != "ok":
            self.mcp_failures.labels(server_type, outcome).inc()

    def watch_store(self, store: Any) -> None:
        """Report `store.counts` at each scrape: commits, and retries by their cause (a high
        share of `NotCommitted` says writers of one key meet: conflicts)."""
        self.registry.register(_StoreCounts(store))

    def watch_indexer(self, indexer: Any) -> None:
        """Report the search indexer's progress at each scrape (search/indexer.py)."""
        self.registry.register(_IndexerState(indexer))

    def render(self) -> bytes:
        return generate_latest(self.registry)


_NOT_RETRIES = frozenset({"commit", "read_only", "reads"})  # Store.counts' other keys


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    """One unlabelled counter of a store's counts."""
    family = CounterMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


class _StoreCounts(Collector):
    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[CounterMetricFamily]:
        counts = self.store.counts
        yield _counter(
            "kelpie_store_commits",
            "Writing transactions committed through this node's store",
            counts.get("commit", 0),
        )
        yield _counter(
            "kelpie_store_read_only",
            "Transactions that wrote nothing, finished through this node's store (beside "
            "kelpie_store_commits: every transaction is one or the other, or failed)",
            counts.get("read_only", 0),
        )
        yield _counter(
            "kelpie_store_reads",
            "Reads that went to the store's backend, each a round trip (on SQLite, a hop to "
            "its thread); reads a transaction answers from its own writes are not counted",
            counts.get("reads", 0),
        )
        stats = getattr(self.store, "stats", None)  # SQLite's: its batches and thread hops
        if stats is not None and hasattr(stats, "hops"):
            yield _counter(
                "kelpie_store_batches",
                "Batches the SQLite store ran (reads and commits queued at once share one), "
                "on the trio thread or its own",
                stats.batches,
            )
            yield _counter(
                "kelpie_store_hops",
                "Of kelpie_store_batches, those run on the SQLite store's thread, each one "
                "hop (the others ran on the trio thread: only commits, on storage that "
                "syncs fast)",
                stats.hops,
            )
            yield _counter(
                "kelpie_store_slow_inline_commits",
                "COMMITs on the trio thread slower than their batch's allowance; each sends "
                "the batches after it to the SQLite store's thread for a while (its hold)",
                stats.slow_inline_commits,
            )
        retries = CounterMetricFamily(
            "kelpie_store_retries",
            "Transaction attempts retried, by the error that caused it (NotCommitted: a "
            "conflict with another writer)",
            labels=["error"],
        )
        for error, count in sorted(counts.items()):
            if error not in _NOT_RETRIES:
                retries.add_metric([error], count)
        yield retries


class _IndexerState(Collector):
    def __init__(self, indexer: Any) -> None:
        self.indexer = indexer

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield _counter(
            "kelpie_search_batches_applied",
            "Batches of outbox entries the search indexer applied to its index",
            self.indexer.applied,
        )
        yield GaugeMetricFamily(
            "kelpie_search_caught_up",
            "1 while the search indexer waits with every outbox entry committed through "
            "this node applied; 0 while it drains, or a commit woke it",
            value=int(self.indexer.caught_up),
        )
