"""The trace of a simulation: every task step and every simulated event, hashed.

Two runs of one seed must give the same trace byte for byte; the sha256 of the
event log (the trace hash) is how that is checked, and the last line that
`kelpie-trio sim` prints. Events are hashed as they come, so a long run costs
no memory; the last few are kept to show where a failing run was.
"""

from __future__ import annotations

import collections
import hashlib

import trio

__all__ = ["Trace"]


class _StepRecorder(trio.abc.Instrument):
    """Records which task trio runs at each step: the scheduling order itself."""

    def __init__(self, trace: Trace) -> None:
        self._trace = trace
        # Tasks are numbered in spawn order (itself deterministic), so two tasks
        # of the same function are told apart in the trace without memory addresses.
        self._numbers: dict[trio.lowlevel.Task, int] = {}
        self._spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self._numbers[task] = self._spawned
        self._spawned += 1

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self._trace.step(f"{self._numbers.pop(task, -1)} exit")

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._trace.step(f"{self._numbers.get(task, -1)} {task.name}")


class Trace:
    def __init__(self, *, keep_last: int = 200, record_steps: bool = True) -> None:
        self._hash = hashlib.sha256()
        self.events = 0
        self.steps = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=keep_last)
        self.instrument = _StepRecorder(self) if record_steps else None

    def step(self, task_name: str) -> None:
        self.steps += 1
        self._hash.update(b"s ")
        self._hash.update(task_name.encode())
        self._hash.update(b"\n")

    def record(self, event: str) -> None:
        """A simulated event (fault fired, node crashed, request answered...)."""
        try:
            now = trio.current_time()
        except RuntimeError:  # outside trio.run: before or after the simulation
            now = -1.0
        line = f"{now:.6f} {event}"
        self.events += 1
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.tail.append(line)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
