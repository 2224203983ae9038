"""The file worker's idle poll ends on the node's ticks (env.Ticks: the heartbeat's period),
so an idle node wakes once for it and its heartbeat; a backoff after a store error is
waited exactly."""

from __future__ import annotations

import itertools
import random

import trio
import trio.testing

from kelpie_trio.env import SimEnv, Ticks
from kelpie_trio.service import AgentService
from kelpie_trio.service.file_worker import FileSettings
from kelpie_trio.storage import MemoryStore
from kelpie_trio.storage.errors import StorageUnavailable
from tests.calls import call_times

TICKS = Ticks(10.0 / 3, phase=0.75)


def _ticked_service(seed: int) -> AgentService:
    """A service on the memory store whose env has the node's ticks."""
    env = SimEnv(random.Random(seed))
    env.ticks = TICKS
    return AgentService(MemoryStore(env=env), env)


async def _rounds(service: AgentService, settings: FileSettings, seconds: float) -> list[float]:
    """When the worker began each round over `seconds` of virtual time."""
    times = call_times(service, "process_some_files")
    async with trio.open_nursery() as nursery:
        await nursery.start(service.process_files, settings)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return times


async def test_an_idle_workers_polls_end_on_the_nodes_ticks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times = await _rounds(_ticked_service(1), FileSettings(poll=30.0), 600.0)
    assert 19 <= len(times) <= 21, times  # twice a minute, no more
    assert [t for t in times[1:] if TICKS.at_or_after(t) != t] == []


async def test_a_backoff_after_a_store_error_is_not_moved_to_a_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = _ticked_service(2)

    async def failing(settings: FileSettings) -> bool:
        raise StorageUnavailable("the store is away")

    service.process_some_files = failing  # type: ignore[method-assign]
    times = await _rounds(service, FileSettings(poll=30.0, backoff=1.0), 5.0)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
    assert gaps == {1.0}, times  # every round 1 s after the failed one, ticks or not
