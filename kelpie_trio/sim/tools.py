"""SimToolRunner: custom tool calls in the simulator, with the tool faults.

Simulated code starts no processes, so a custom tool's result comes from a
script (a function of the tool and its arguments) instead of its source; the
script may return a plain value (a success) or a whole ToolResult (prints on
stdout and stderr, an error, the limit that ended it). The fault table decides
whether the call times out (ToolTimeout: the call's time passes on the virtual
clock, then the wall-time error with what was printed so far) or fails
(ToolFail: in turn an exception with its traceback on stderr, or one of the
sandbox's limits), as the real sandbox reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import trio

from kelpie_trio.sim.faults import FaultType
from kelpie_trio.tools.sandbox import ToolResult, timed_out

__all__ = ["SimToolRunner"]

# What ToolFail turns into, taken in turn (no extra random draw, so existing seeds keep
# their traces): an exception, and the limits a tool's own work can run into.
_FAILURES = (
    ToolResult(
        "error",
        stderr=["Traceback (most recent call last):", "RuntimeError: simulated tool failure"],
        error="RuntimeError: simulated tool failure",
    ),
    ToolResult("error", error="memory limit exceeded (512 MB)", limit="memory"),
    ToolResult("error", error="CPU time limit exceeded (30 s)", limit="cpu_time"),
    ToolResult(
        "error",
        error="process limit reached (64): BlockingIOError: [Errno 11] Resource "
        "temporarily unavailable",
        limit="processes",
    ),
)


class SimToolRunner:
    def __init__(
        self,
        world: Any,
        script: Callable[[Any, dict[str, Any]], Any] = lambda tool, args: None,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.world = world
        self.script = script
        self.timeout = timeout
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.env_names: list[list[str]] = []  # the variables each call got (names only)
        self.failures = 0

    async def __call__(
        self,
        tool: Any,
        arguments: dict[str, Any],
        *,
        env_vars: Mapping[str, str] | None = None,
    ) -> ToolResult:
        self.calls.append((tool.name, arguments))
        self.env_names.append(sorted(env_vars or {}))
        faults = self.world.faults
        await trio.sleep(0.01)
        if faults.fires(FaultType.TOOL_TIMEOUT, "tool.run"):
            self.world.trace.record(f"fault ToolTimeout tool={tool.name}")
            await trio.sleep(self.timeout)
            return timed_out(self.timeout, [f"{tool.name} started"])
        if faults.fires(FaultType.TOOL_FAIL, "tool.run"):
            self.world.trace.record(f"fault ToolFail tool={tool.name}")
            failure = _FAILURES[self.failures % len(_FAILURES)]
            self.failures += 1
            return failure
        value = self.script(tool, arguments)
        if isinstance(value, ToolResult):
            return value
        return ToolResult("success", func_return=value)
