"""CPU per provider call of each HTTP client, on one process's own accounting.

    python -m bench.provider_client [--calls 2000] [--rounds 3]

Starts the bench's fake provider (no latency) and makes the same chat completion call
serially through each client, a round of each in turn: kelpie-trio's `LeanOrigin` (h11 on
trio streams, what the providers use), the small-pool httpx clients they used before
(`ClientPool`), and httpcore's pool alone (httpx without its client layers). The figure is
this process's CPU (user + system, so the loopback's kernel work on our side counts too)
divided by the calls; the provider's own CPU is its process's and not counted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable

import httpcore
import orjson
import trio

from bench.procs import start_fake_provider
from kelpie_trio.http_pool import ClientPool
from kelpie_trio.llm.origin import LeanOrigin

__all__ = ["main", "measure"]

# About a first step's request: a system prompt, one user message.
BODY = orjson.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful agent. " * 120},
            {"role": "user", "content": "hello there"},
        ],
    }
)
HEADERS = {"Content-Type": "application/json"}
Call = Callable[[], Awaitable[bytes]]


async def _cpu_per_call(call: Call, calls: int) -> float:
    await call()  # the connection is open before the count starts
    start = time.process_time()
    for _ in range(calls):
        orjson.loads(await call())
    return (time.process_time() - start) / calls * 1000


async def measure(base_url: str, calls: int, rounds: int) -> dict[str, list[float]]:
    """CPU ms per call of each client, one figure per round."""
    lean = LeanOrigin(base_url, {}, timeout=60, connect_timeout=10)
    pool = ClientPool(base_url=base_url, timeout=60)
    core = httpcore.AsyncConnectionPool(max_connections=8, max_keepalive_connections=8)
    url = f"{base_url}/chat/completions"
    core_headers = [(b"Content-Type", b"application/json")]

    async def via_lean() -> bytes:
        return (await lean.post("chat/completions", BODY, HEADERS)).body

    async def via_pool() -> bytes:
        with pool.client() as http:
            return (await http.post("chat/completions", content=BODY, headers=HEADERS)).content

    async def via_httpcore() -> bytes:
        return (await core.request("POST", url, headers=core_headers, content=BODY)).content

    clients = {"lean (h11)": via_lean, "httpx ClientPool": via_pool, "httpcore alone": via_httpcore}
    figures: dict[str, list[float]] = {name: [] for name in clients}
    try:
        for _ in range(rounds):
            for name, call in clients.items():
                figures[name].append(await _cpu_per_call(call, calls))
    finally:
        await lean.aclose()
        await pool.aclose()
        await core.aclose()
    return figures


async def _run(calls: int, rounds: int) -> dict[str, list[float]]:
    async with start_fake_provider(0.0) as provider:
        return await measure(provider.url + "/v1", calls, rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.provider_client", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="calls per client and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    figures = trio.run(_run, args.calls, args.rounds)
    print(f"CPU ms per call, {args.calls} serial calls a round, {len(BODY)} byte request:")
    for name, values in figures.items():
        rounds = ", ".join(f"{v:.3f}" for v in values)
        print(f"  {name:18s} {min(values):.3f} (rounds: {rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
