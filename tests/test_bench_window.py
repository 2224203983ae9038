"""A measured window of the bench counts its messages' search indexing (bench/scenarios.py).

The server indexes a message after a settle behind its commit, so a window that closed at
the last reply left the indexing of its last seconds out, and counted the warm-up's in.
`_measured` now waits for the server's indexer on both sides (`_index_caught_up`). Here
with a stand-in /metrics and trio's mock clock; the scenarios run end to end in
tests/test_bench_smoke.py, which checks that the wait ends there too.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import bench.load
from bench.scenarios import INDEX_POLL_S, INDEX_WAIT_MAX_S, Options, Runner


class _Server:
    def __init__(self, url: str) -> None:
        self.url = url


def _runner(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[dict[str, float]]]):
    """A Runner whose /metrics reads answer from `answers` (per URL, in turn; the last
    answer repeats); the reads are noted."""
    asked: list[str] = []

    async def read_metrics(url: str, headers: dict[str, str]) -> dict[str, float]:
        asked.append(url)
        queue = answers[url]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    monkeypatch.setattr(bench.load, "read_metrics", read_metrics)
    return Runner(Options(), lambda *a, **k: None), asked


async def test_the_window_waits_until_every_indexer_says_it_is_caught_up(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    behind, done = {"kelpie_search_caught_up": 0.0}, {"kelpie_search_caught_up": 1.0}
    answers = {"http://a": [behind, behind, done], "http://b": [behind, done]}
    runner, asked = _runner(monkeypatch, answers)
    servers: list[Any] = [_Server("http://a"), _Server("http://b")]
    waited = await runner._index_caught_up(servers)
    assert waited == 2 * INDEX_POLL_S  # asked three times: behind, behind, both caught up
    assert asked == ["http://a", "http://b"] * 3


async def test_a_server_that_does_not_say_is_not_waited_for(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    runner, asked = _runner(monkeypatch, {"http://other": [{}]})  # no /metrics (Letta)
    assert await runner._index_caught_up([_Server("http://other")]) == 0.0
    assert asked == ["http://other"]


async def test_an_indexer_that_never_catches_up_ends_the_wait_without_a_figure(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    runner, asked = _runner(monkeypatch, {"http://a": [{"kelpie_search_caught_up": 0.0}]})
    started = trio.current_time()
    assert await runner._index_caught_up([_Server("http://a")]) is None
    assert trio.current_time() - started == pytest.approx(INDEX_WAIT_MAX_S)
    assert len(asked) == round(INDEX_WAIT_MAX_S / INDEX_POLL_S) + 1  # at its pace, no faster
