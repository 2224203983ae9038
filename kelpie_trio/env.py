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

import os
import random
import time
import uuid

import trio

__all__ = ["Env", "RealEnv", "SimEnv"]


class Env:
    """What simulated code may ask of the outside world."""

    rng: random.Random

    def now(self) -> float:
        """Wall-clock seconds since the Unix epoch, for timestamps users see."""
        raise NotImplementedError

    def monotonic(self) -> float:
        """Seconds on trio's clock (virtual under the simulator)."""
        return trio.current_time()

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

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
