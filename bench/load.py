"""The load generator: C concurrent clients, each on its own keep-alive connection.

A worker is one conversation: worker w sends its k-th message to agent
`agents[(w + k * C) % N]`, so while C <= N no two workers talk to one agent at once (a
conversation waits for its reply before it speaks again), and every agent gets its share.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio

from bench.http1 import Connection, HttpError, Reply

__all__ = [
    "Sample", "create_agents", "index_caught_up", "message_body", "read_metrics", "run_load",
    "steps_of",
]  # fmt: skip


@attrs.define
class Sample:
    start: float  # perf_counter() when the request was sent
    end: float  # ... when the whole reply was in
    status: int
    steps: int = 0  # LLM calls the turn made (usage.step_count)
    first_chunk: float | None = None  # streaming: perf_counter() of the first body chunk
    chunk_times: list[float] = attrs.field(factory=list)
    agent: str = ""

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def message_body(text: str, *, streaming: bool = False) -> bytes:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
    if streaming:
        body["streaming"] = True
    return json.dumps(body).encode()


def steps_of(reply: Reply) -> int:
    """How many LLM calls the turn made, from its usage statistics (JSON or SSE)."""
    try:
        if reply.headers.get("content-type", "").startswith("text/event-stream"):
            for line in reply.body.split(b"\n"):
                if line.startswith(b"data: {") and b"usage_statistics" in line:
                    return int(json.loads(line[6:]).get("step_count") or 0)
            return 0
        return int((json.loads(reply.body).get("usage") or {}).get("step_count") or 0)
    except (ValueError, AttributeError):
        return 0


async def run_load(
    base_url: str,
    agents: Sequence[str],
    *,
    total: int,
    concurrency: int,
    path_for: Callable[[str], str] = lambda agent: f"/v1/agents/{agent}/messages",
    streaming: bool = False,
    headers: dict[str, str] | None = None,
    on_done: Callable[[Sample], None] | None = None,
    base_urls: Sequence[str] | None = None,
    reply_within: float = 120.0,
    one_each: bool = False,
    exchange: Callable[[Connection, str, bytes], Awaitable[Reply]] | None = None,
) -> list[Sample]:
    """Send `total` messages from `concurrency` workers; every sample, in completion order.

    With `one_each`, message i goes to `agents[i]`: every agent gets exactly one (activating
    each agent once, whatever the concurrency).

    With `base_urls`, request i goes to `base_urls[i % len]` (two nodes: half the requests land
    on the node that does not hold the agent and are forwarded).

    With `exchange`, one unit of load is `exchange(conn, agent, body)` instead of one POST (a
    message and the client's answer to what it asked, for instance); its last reply counts.
    """
    samples: list[Sample] = []
    counter = itertools.count()
    urls = list(base_urls or [base_url])
    n = len(agents)

    async def worker(w: int) -> None:
        conns = [Connection(u, headers=headers) for u in urls]
        try:
            for k in itertools.count():
                i = next(counter)
                if i >= total:
                    return
                if not n:
                    agent = ""
                elif one_each:
                    agent = agents[i % n]
                else:
                    agent = agents[(w + k * concurrency) % n]
                conn = conns[i % len(conns)]
                body = message_body(f"Message {i} from conversation {w}.", streaming=streaming)
                start = time.perf_counter()
                try:
                    with trio.fail_after(reply_within):
                        if exchange is not None:
                            reply = await exchange(conn, agent, body)
                        else:
                            reply = await conn.request(
                                "POST", path_for(agent), body, stream=streaming
                            )
                except (OSError, trio.TooSlowError, HttpError):
                    # Counted as an error (599), not raised: one failure must not end the run.
                    sample = Sample(start, time.perf_counter(), 599, agent=agent)
                    await conn.aclose()
                else:
                    sample = Sample(
                        start,
                        time.perf_counter(),
                        reply.status,
                        steps_of(reply) if reply.status == 200 else 0,
                        reply.chunk_times[0] if reply.chunk_times else None,
                        reply.chunk_times,
                        agent,
                    )
                samples.append(sample)
                if on_done is not None:
                    on_done(sample)
        finally:
            for conn in conns:
                await conn.aclose()

    async with trio.open_nursery() as nursery:
        for w in range(concurrency):
            nursery.start_soon(worker, w)
    return samples


async def create_agents(
    base_url: str,
    count: int,
    *,
    model: str,
    embedding: str,
    concurrency: int = 16,
    prefix: str = "bench",
    headers: dict[str, str] | None = None,
    on_done: Callable[[], None] | None = None,
) -> list[str]:
    """Create `count` agents over the API; their ids in creation order."""
    ids: list[str | None] = [None] * count
    counter = itertools.count()

    async def worker() -> None:
        conn = Connection(base_url, headers=headers)
        try:
            while (i := next(counter)) < count:
                body = json.dumps(
                    {"name": f"{prefix}-{i}", "model": model, "embedding": embedding}
                ).encode()
                for attempt in range(5):
                    reply = await conn.request("POST", "/v1/agents/", body)
                    if reply.status == 200 or reply.status == 201:
                        break
                    if attempt == 4:
                        raise RuntimeError(
                            f"creating an agent failed: {reply.status} {reply.body[:300]!r}"
                        )
                    await trio.sleep(0.2 * (attempt + 1))
                ids[i] = json.loads(reply.body)["id"]
                if on_done is not None:
                    on_done()
        finally:
            await conn.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, max(1, count))):
            nursery.start_soon(worker)
    return [i for i in ids if i is not None]


_METRIC_LINE = re.compile(r"^(kelpie_\w+?)(?:\{([^}]*)\})? (\S+)$", re.M)


async def read_metrics(url: str, headers: dict[str, str]) -> dict[str, float]:
    """kelpie-trio's /metrics, each series summed over its labels, and `conflicts`: retries
    after a store conflict (empty for servers without /metrics)."""
    conn = Connection(url, headers=headers)
    try:
        reply = await conn.request("GET", "/metrics")
    except (OSError, HttpError):
        return {}
    finally:
        await conn.aclose()
    if reply.status != 200:
        return {}
    found: dict[str, float] = {}
    for name, labels, value in _METRIC_LINE.findall(reply.body.decode(errors="replace")):
        found[name] = found.get(name, 0.0) + float(value)
        if name == "kelpie_store_retries_total" and 'error="NotCommitted"' in labels:
            found["conflicts"] = found.get("conflicts", 0.0) + float(value)
    return found


async def index_caught_up(url: str, headers: dict[str, str]) -> bool:
    """Whether the server's search indexer has applied every message stored: its own word
    on /metrics (`kelpie_search_caught_up`); True from a server that does not say."""
    found = await read_metrics(url, headers)
    return found.get("kelpie_search_caught_up", 1.0) == 1.0
