"""Provider calls share small httpx pools: no client ever carries more than its share."""

from __future__ import annotations

import trio

from kelpie_trio.http_pool import CALLS_PER_CLIENT, ClientPool


async def test_concurrent_calls_spread_over_clients_of_bounded_size() -> None:
    pool = ClientPool(base_url="http://127.0.0.1:9")
    per_client: dict[int, int] = {}
    peak: dict[int, int] = {}
    release = trio.Event()

    async def call() -> None:
        with pool.client() as http:
            per_client[id(http)] = per_client.get(id(http), 0) + 1
            peak[id(http)] = max(peak.get(id(http), 0), per_client[id(http)])
            await release.wait()
            per_client[id(http)] -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    limit = CALLS_PER_CLIENT
    assert len(peak) == -(-50 // limit)  # as few clients as the load needs
    assert max(peak.values()) <= limit
    with pool.client() as again:  # idle clients are reused, not added
        assert id(again) in peak
    await pool.aclose()
