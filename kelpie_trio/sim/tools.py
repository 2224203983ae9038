"""SimToolRunner: custom tool calls in the simulator, with the tool faults.

Simulated code starts no processes, so a custom tool's result comes from a
script (a function of the tool and its arguments) instead of its source; the
fault table decides whether the call times out (ToolTimeout: the call's time
passes on the virtual clock, then an error) or fails (ToolFail), as the real
sandbox reports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from kelpie_trio.sim.faults import FaultType
from kelpie_trio.tools.sandbox import ToolResult

__all__ = ["SimToolRunner"]


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

    async def __call__(self, tool: Any, arguments: dict[str, Any]) -> ToolResult:
        self.calls.append((tool.name, arguments))
        faults = self.world.faults
        await trio.sleep(0.01)
        if faults.fires(FaultType.TOOL_TIMEOUT, "tool.run"):
            self.world.trace.record(f"fault ToolTimeout tool={tool.name}")
            await trio.sleep(self.timeout)
            return ToolResult("error", error=f"timed out after {self.timeout:g} s")
        if faults.fires(FaultType.TOOL_FAIL, "tool.run"):
            self.world.trace.record(f"fault ToolFail tool={tool.name}")
            return ToolResult("error", error="RuntimeError: simulated tool failure")
        return ToolResult("success", func_return=self.script(tool, arguments))
