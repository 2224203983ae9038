"""`python -m bench.provider_client`: each client makes its calls and gets a figure."""

from __future__ import annotations

from bench.procs import start_fake_provider
from bench.provider_client import measure


async def test_every_client_makes_its_calls_and_is_measured() -> None:
    async with start_fake_provider(0.0) as provider:
        figures = await measure(provider.url + "/v1", calls=5, rounds=2)
    assert set(figures) == {"lean (h11)", "httpx ClientPool", "httpcore alone"}
    assert all(len(rounds) == 2 and all(v > 0 for v in rounds) for rounds in figures.values())
