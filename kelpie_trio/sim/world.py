"""SimWorld: one seed in, one reproducible run out.

A simulation is one `trio.run` on a `MockClock` (autojump: virtual time leaps
whenever every task is blocked) with trio's scheduler made deterministic from
the seed, and every random choice drawn from RNG streams derived from the same
seed. Simulated nodes share one in-memory store engine, each through its own
`SimStore` handle, so crashing a node fences exactly that node off the store.

The deterministic-scheduling recipe relies on two private names of trio (see
shared/stack-notes.md); they are asserted at import so a trio upgrade that
moves them fails loudly here instead of silently making runs differ.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import outcome
import trio
import trio._core._run as _trio_run
import trio.testing

from kelpie_trio.env import SimEnv
from kelpie_trio.sim.faults import FaultConfig, FaultInjector, FaultType, preset
from kelpie_trio.sim.invariants import InvariantViolation
from kelpie_trio.sim.trace import Trace
from kelpie_trio.storage.engine import MemoryEngine

if TYPE_CHECKING:
    from kelpie_trio.sim.store import SimStore

__all__ = ["SimDeadlock", "SimNode", "SimWorld", "deterministic_scheduling"]

T = TypeVar("T")

if not (
    hasattr(_trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING")
    and isinstance(getattr(_trio_run, "_r", None), random.Random)
):
    raise ImportError(
        "this trio no longer has _core._run._ALLOW_DETERMINISTIC_SCHEDULING and _r; "
        "the simulator cannot make scheduling deterministic. Pin trio to the version "
        "in pyproject.toml."
    )


@contextlib.contextmanager
def deterministic_scheduling(seed: int) -> Iterator[None]:
    """Make trio's run-queue shuffle a function of `seed`; restore trio's state after."""
    old_flag = _trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    old_state = _trio_run._r.getstate()
    _trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    _trio_run._r.seed(seed)
    try:
        yield
    finally:
        _trio_run._ALLOW_DETERMINISTIC_SCHEDULING = old_flag  # type: ignore[misc]
        _trio_run._r.setstate(old_state)


# Rounds of trio's run loop at one virtual instant past which a run is a livelock. The
# busiest instants of the suite's runs (1,000 agents activated at once) take far fewer;
# a task looping without a wait takes one round per turn, so this is seconds of wall time.
LIVELOCK_ROUNDS = 1_000_000


class SimDeadlock(AssertionError):
    """The simulation did not finish within its virtual-time limit, or stopped moving its
    clock (a livelock: some task looping without ever waiting for time to pass)."""


class _ClockWatch(trio.abc.Instrument):
    """Counts the run loop's rounds at one virtual instant. The mock clock jumps only when
    every task waits, so a task that loops through checkpoints (a `sleep_until` of a time
    already past, a retry without a delay) freezes virtual time: the time limit never
    comes and the run would spin forever. Past `limit` rounds at one instant the run is
    stopped and fails as a livelock. One call per round of the loop, not per task step."""

    def __init__(self, stop: Callable[[float], None], limit: int) -> None:
        self._stop, self._limit = stop, limit
        self._at = -1.0
        self._rounds = 0

    def before_io_wait(self, timeout: float) -> None:
        now = trio.current_time()
        if now != self._at:
            self._at, self._rounds = now, 0
            return
        self._rounds += 1
        if self._rounds == self._limit:
            self._stop(now)


class SimNode:
    """One simulated process: its own env (and clock skew), store handle and cancel scope.

    A crash fences the node off the store at that instant and cancels all its
    tasks; a restarted node is a new incarnation with a new id.
    """

    def __init__(self, world: SimWorld, name: str, incarnation: int) -> None:
        from kelpie_trio.sim.store import SimStore

        self.world = world
        self.name = name
        self.incarnation = incarnation
        self.id = f"{name}.{incarnation}"
        skew = 0.0
        if world.faults.fires(FaultType.CLOCK_SKEW, "node.start"):
            skew = world.faults.uniform(-3.0, 3.0)
            world.trace.record(f"fault ClockSkew node={self.id} skew={skew:+.3f}")
        self.env = SimEnv(world.rng(f"node:{self.id}"), clock_skew=skew)
        self.store: SimStore = SimStore(world, self)
        self.cancel_scope = trio.CancelScope()
        self.crashed = False
        self.down = trio.Event()  # set at the crash: what a client's open connection sees
        self.store_cut_until = -1.0  # virtual time until which the store is out of reach

    def cut_off_store(self, duration: float) -> None:
        """Partition this node from the store: every store call fails until then."""
        self.store_cut_until = trio.current_time() + duration
        self.world.trace.record(f"partition node={self.id} store for={duration:g}")

    def crash(self, reason: str) -> None:
        if self.crashed:
            return
        self.crashed = True
        self.world.trace.record(f"crash node={self.id} reason={reason}")
        self.cancel_scope.cancel()
        self.down.set()

    def __repr__(self) -> str:
        return f"SimNode({self.id})"


class SimWorld:
    """The whole simulated system of one seed."""

    def __init__(
        self,
        seed: int,
        faults: FaultConfig | str = "none",
        *,
        time_limit: float = 3600.0,
        record_steps: bool = True,
        livelock_rounds: int = LIVELOCK_ROUNDS,
    ) -> None:
        self.seed = seed
        self.fault_config = preset(faults) if isinstance(faults, str) else faults
        self.faults = FaultInjector(self.fault_config, self.rng("faults"))
        self.env = SimEnv(self.rng("world"))
        self.trace = Trace(record_steps=record_steps)
        self.engine = MemoryEngine()
        # Virtual time until which the store's disk is full (the StorageFull fault).
        self.disk_full_until = -1.0
        self.cancelled_commits_in_flight = 0  # commits whose caller was cancelled, landing later
        self.time_limit = time_limit
        self.livelock_rounds = livelock_rounds
        self.livelock_at: float | None = None  # the instant the clock stopped moving
        self._run_scope: trio.CancelScope | None = None
        self._incarnations: dict[str, int] = {}
        self.system_nursery: trio.Nursery | None = None
        self.end_time = 0.0
        # Broken by some commit or step of the run (sim/invariants.py); fails the run at its end.
        self.violations: list[str] = []

    def rng(self, stream: str) -> random.Random:
        """An RNG of its own for each stream, so one consumer's draws never shift another's."""
        digest = hashlib.sha256(f"{self.seed}:{stream}".encode()).digest()
        return random.Random(int.from_bytes(digest[:16], "big"))

    # -- running -------------------------------------------------------------

    def run(self, main: Callable[[SimWorld], Awaitable[T]]) -> T:
        """Run `main(world)` to completion in virtual time and return its result."""
        instruments = [self.trace.instrument] if self.trace.instrument else []
        instruments.append(_ClockWatch(self._livelocked, self.livelock_rounds))
        with deterministic_scheduling(self.seed):
            try:
                return trio.run(
                    self._main,
                    main,
                    clock=trio.testing.MockClock(autojump_threshold=0),
                    instruments=instruments,
                )
            except BaseExceptionGroup as group:
                # Ctrl-C lands in some task of the run and comes out inside the nurseries'
                # groups, which pytest and `run_seeds` take for a failure of this seed and go
                # on to the next: a deep run could not be stopped.
                if group.subgroup(KeyboardInterrupt) is not None:
                    raise KeyboardInterrupt from group
                raise

    async def _main(self, main: Callable[[SimWorld], Awaitable[T]]) -> T:
        try:
            with trio.fail_after(self.time_limit) as self._run_scope:
                async with trio.open_nursery() as system:
                    self.system_nursery = system
                    # Captured, so main's own error comes out as itself, not
                    # wrapped in the system nursery's ExceptionGroup.
                    result = await outcome.acapture(main, self)
                    self.end_time = trio.current_time()
                    system.cancel_scope.cancel()
                if self.violations:
                    raise InvariantViolation(
                        f"seed {self.seed}: " + "; ".join(self.violations[:10])
                    )
                return result.unwrap()
        except trio.TooSlowError:
            if self.livelock_at is not None:
                raise SimDeadlock(
                    f"seed {self.seed}: virtual time stopped at {self.livelock_at:.6f}: "
                    f"{self.livelock_rounds:,} rounds of the run loop without the clock moving (a "
                    "task loops without waiting for time to pass, a livelock); last "
                    "events:\n  " + "\n  ".join(self.trace.tail)
                ) from None
            raise SimDeadlock(
                f"seed {self.seed}: not finished after {self.time_limit:g} s of virtual time "
                f"(a deadlock or a livelock); last events:\n  " + "\n  ".join(self.trace.tail)
            ) from None

    # -- nodes ---------------------------------------------------------------

    def new_node(self, name: str) -> SimNode:
        """A fresh incarnation of the node `name` (its first start or a restart)."""
        incarnation = self._incarnations.get(name, 0) + 1
        self._incarnations[name] = incarnation
        node = SimNode(self, name, incarnation)
        self.trace.record(f"start node={node.id}")
        return node

    async def run_node(self, node: SimNode, fn: Callable[[SimNode], Awaitable[Any]]) -> bool:
        """Run `fn(node)` until it returns or the node crashes; True if it returned."""
        with node.cancel_scope:
            try:
                await fn(node)
            except Exception:
                if not node.crashed:
                    raise
        # A crashed node's tasks may end with errors the crash itself caused
        # (a store call refused as fenced); those die with the node.
        return not node.crashed

    def _livelocked(self, at: float) -> None:
        self.livelock_at = at
        if self._run_scope is not None:
            self._run_scope.cancel()  # ends the run with TooSlowError, reported as a livelock

    def violate(self, what: str) -> None:
        self.violations.append(what)
        self.trace.record(f"VIOLATION {what}")

    def hexdigest(self) -> str:
        return self.trace.hexdigest()
