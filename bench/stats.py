"""Numbers from samples: percentiles, throughput, a server's CPU per message."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from bench.load import Sample
from bench.procs import Usage

__all__ = ["percentiles", "summarize", "throughput_series", "usage_delta"]


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank, of values already sorted."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | None]:
    """p50, p95, p99, mean and max, times `scale` (seconds to ms by default)."""
    ordered = sorted(values)

    def at(q: float) -> float | None:
        v = percentile(ordered, q)
        return None if v is None else round(v * scale, 3)

    mean = round(sum(ordered) / len(ordered) * scale, 3) if ordered else None
    top = round(ordered[-1] * scale, 3) if ordered else None
    return {"p50": at(50), "p95": at(95), "p99": at(99), "mean": mean, "max": top}


def throughput_series(samples: Sequence[Sample], start: float, bucket: float = 1.0) -> list[int]:
    """Completed messages per `bucket` seconds since `start`."""
    if not samples:
        return []
    end = max(s.end for s in samples)
    series = [0] * (int((end - start) / bucket) + 1)
    for s in samples:
        if s.ok:
            series[max(0, int((s.end - start) / bucket))] += 1
    return series


def usage_delta(before: Usage | None, after: Usage | None, count: int) -> dict[str, Any]:
    """CPU seconds used between two readings, per item, and the RSS at the end."""
    if before is None or after is None:
        return {"cpu_s": None, "cpu_ms_per_msg": None, "rss_mb": None}
    cpu = after.cpu_since(before)
    return {
        "cpu_s": round(cpu, 4),
        "cpu_ms_per_msg": round(cpu / count * 1000, 4) if count else None,
        "rss_mb": round(after.rss / 2**20, 2),
    }


def summarize(samples: Sequence[Sample], provider_latency: float) -> dict[str, Any]:
    """Throughput, latency and server overhead (latency minus the provider's own, per LLM call
    the turn reported) over a window of samples."""
    ok = [s for s in samples if s.ok]
    window = max(s.end for s in samples) - min(s.start for s in samples) if samples else 0.0
    overhead = [max(0.0, s.latency - s.steps * provider_latency) for s in ok]
    return {
        "messages": len(samples),
        "errors": len(samples) - len(ok),
        "error_statuses": sorted({s.status for s in samples if not s.ok}),
        "window_s": round(window, 3),
        "msgs_per_s": round(len(ok) / window, 2) if window > 0 else None,
        "latency_ms": percentiles([s.latency for s in ok]),
        "overhead_ms": percentiles(overhead),
        "llm_calls_per_msg": round(sum(s.steps for s in ok) / len(ok), 3) if ok else None,
    }


def fitted_growth(ratios: Sequence[float | None]) -> float | None:
    """A straight line through the ratios (window k at x = k; None left out), its value at
    the last window over its value at the first: one noisy window moves it less than it
    moves a first/last pair. None with fewer than three ratios known."""
    known = [(k, r) for k, r in enumerate(ratios) if r is not None]
    if len(known) < 3:
        return None
    line = statistics.linear_regression([k for k, _ in known], [r for _, r in known])
    first, last = line.intercept, line.intercept + line.slope * (len(ratios) - 1)
    return last / first if first > 0 else None
