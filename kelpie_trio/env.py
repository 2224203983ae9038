"""The injected environment: clock, randomness and ids.

Code that the simulator runs never reads the wall clock, calls uuid4 or uses the
global `random` module: it asks an `Env`. Production passes `RealEnv`; the
simulator passes `SimEnv`, whose every answer is drawn from the run's seed, so
a simulation is a pure function of its seed.

Monotonic time and sleeping always go through trio (`trio.current_time`,
`trio.sleep`): under the simulator trio runs on a `MockClock`, so those are
virtual already; only wall-clock timestamps and randomness need injecting.
"""

from __future__ import annotations

import math
import os
import random
import time
import uuid

import attrs
import trio

__all__ = ["Env", "RealEnv", "SimEnv", "Ticks"]


@attrs.frozen
class Ticks:
    """A node's timer grid on trio's clock: the instants `phase + k * period`.

    An idle node's CPU is mostly its wake-ups, and each periodic loop (the resume
    sweep's watch, the schedule, file and search polls) used to wake it on its own
    timer, between the heartbeats. Those waits end on the grid instead (rounded up: a
    poll is never early), and the heartbeat beats on it (`period` is its interval), so
    trio expires them together: one wake-up a beat for all of them. Each node draws its
    phase, so nodes sharing a clock (the simulator) do not beat in step.
    """

    period: float
    phase: float = 0.0

    def at_or_after(self, deadline: float) -> float:
        """The first tick at or after `deadline`: never before it (a wait that ended
        early would be waited again at once, in a loop)."""
        return self._tick(self._first_at_or_after(deadline))

    def after(self, moment: float) -> float:
        """The first tick after `moment` (the heartbeat's next beat)."""
        k = self._first_at_or_after(moment)
        return self._tick(k + 1 if self._tick(k) == moment else k)

    def _first_at_or_after(self, deadline: float) -> int:
        k = math.ceil((deadline - self.phase) / self.period)
        while self._tick(k - 1) >= deadline:  # the division's rounding, either way
            k -= 1
        while self._tick(k) < deadline:
            k += 1
        return k

    def _tick(self, k: int) -> float:
        # Always this expression: the waits that end on tick k end at the same float,
        # and trio expires them in one pass.
        return self.phase + k * self.period


class Env:
    """What simulated code may ask of the outside world."""

    rng: random.Random
    ticks: Ticks | None = None  # the node's timer grid, set where the node is wired

    def now(self) -> float:
        """Wall-clock seconds since the Unix epoch, for timestamps users see."""
        raise NotImplementedError

    def monotonic(self) -> float:
        """Seconds on trio's clock (virtual under the simulator)."""
        return trio.current_time()

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    def poll_time(self, delay: float) -> float:
        """When a periodic poll due `delay` seconds from now (trio's clock) ends: on the
        node's next tick at or after it (`Ticks`), or then exactly without ticks. Only
        for waits that may end late by up to a tick, never for a known due time."""
        deadline = trio.current_time() + delay
        if self.ticks is None or math.isinf(deadline):  # inf: no poll at all
            return deadline
        return self.ticks.at_or_after(deadline)

    def new_uuid(self) -> uuid.UUID:
        raise NotImplementedError

    def new_id(self, prefix: str) -> str:
        """An id in Letta's `<prefix>-<uuid4>` form, e.g. `agent-3f1c...`."""
        return f"{prefix}-{self.new_uuid()}"

    def jitter(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)


class RealEnv(Env):
    """Production: the system clock and OS randomness."""

    def __init__(self) -> None:
        self.rng = random.Random(os.urandom(16))

    def now(self) -> float:
        return time.time()

    def new_uuid(self) -> uuid.UUID:
        return uuid.uuid4()


# 2026-01-01T00:00:00Z: the simulated wall clock starts here, so timestamps in
# a simulation look real but depend only on virtual time.
SIM_EPOCH = 1767225600.0


class SimEnv(Env):
    """Simulation: every answer comes from one seeded RNG and the virtual clock."""

    def __init__(self, rng: random.Random, *, epoch: float = SIM_EPOCH, clock_skew: float = 0.0):
        self.rng = rng
        self.epoch = epoch
        # A node's skewed view of time (the ClockSkew fault): added to both
        # clocks, so lease expiry judged by this node is judged wrongly.
        self.clock_skew = clock_skew

    def now(self) -> float:
        return self.epoch + trio.current_time() + self.clock_skew

    def monotonic(self) -> float:
        return trio.current_time() + self.clock_skew

    def new_uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)
