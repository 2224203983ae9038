"""SimMcpClient: MCP servers in the simulator, with hangs and crashes from the fault table.

Simulated code opens no sockets and starts no processes, so an MCP server here is a set
of tools (name -> description, input schema, a function of the arguments) shared by
every node. The fault table's tool faults reach it at their own operations, so a test
can aim them (`op_rates`) at MCP alone: ToolTimeout at "mcp.connect" is a server that
never finishes its handshake, at "mcp.call" one that never answers a call; ToolFail at
"mcp.connect" is a server that exits at start, at "mcp.call" one that crashes mid-call
(after the call's effect, or before it, by turns). No new fault types: the chaos sweep
requires every type to fire, and these are the tool faults of an outside tool.

Every call that reaches a server is recorded with its position (`calls`), and a
success's text names that position, so a test can tell which call produced a stored
result and whether the same call ran again afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import trio

from kelpie_trio.mcp.client import McpCallResult, McpConnectionLost, McpFailure
from kelpie_trio.models.mcp import McpServer, McpTool
from kelpie_trio.sim.faults import FaultType

__all__ = ["SimMcpCall", "SimMcpClient", "SimMcpTool"]


@attrs.frozen
class SimMcpTool:
    description: str
    input_schema: dict[str, Any]
    run: Callable[[dict[str, Any]], str]


@attrs.frozen
class SimMcpCall:
    index: int
    server_id: str
    name: str
    arguments: dict[str, Any]
    at: float


class _Connection:
    def __init__(self, client: SimMcpClient, server: McpServer) -> None:
        self.client = client
        self.server = server
        self.dead = False

    async def list_tools(self) -> list[McpTool]:
        await self.client._latency()
        self._check()
        return [McpTool(n, t.description, t.input_schema) for n, t in self.client.tools.items()]

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> McpCallResult:
        client = self.client
        world = client.world
        await client._latency()
        self._check()
        if world.faults.fires(FaultType.TOOL_TIMEOUT, "mcp.call"):
            world.trace.record(f"fault ToolTimeout mcp.call {name}")
            await trio.sleep_forever()  # hung: the session's timeout ends the wait
        crash = world.faults.fires(FaultType.TOOL_FAIL, "mcp.call")
        if crash and client.crashes % 2 == 0:  # dies before the call does anything
            client.crashes += 1
            return self._crash(name)
        if client.on_call is not None:  # a test's hook: crash a node at this very point
            client.on_call(self.server, name, arguments)
            await trio.lowlevel.checkpoint()
        tool = client.tools.get(name)
        if tool is None:
            return McpCallResult(True, f"Unknown tool: {name}")
        index = len(client.calls)
        client.calls.append(SimMcpCall(index, self.server.id, name, dict(arguments),
                                       trio.current_time()))  # fmt: skip
        if crash:  # dies after the effect, before the answer
            client.crashes += 1
            return self._crash(name)
        return McpCallResult(False, f"{tool.run(arguments)} (call #{index})")

    def _crash(self, name: str) -> McpCallResult:
        self.client.world.trace.record(f"fault ToolFail mcp.call {name} (server crashed)")
        self.dead = True
        raise McpConnectionLost(f"MCP server '{self.server.server_name}' closed the connection")

    def _check(self) -> None:
        if self.dead:
            raise McpConnectionLost(f"MCP server '{self.server.server_name}' is gone")


class SimMcpClient:
    """The McpConnector of the simulator (kelpie_trio/mcp/client.py's interface)."""

    def __init__(
        self,
        world: Any,
        tools: dict[str, SimMcpTool],
        *,
        latency: tuple[float, float] = (0.005, 0.05),
    ) -> None:
        self.world = world
        self.tools = dict(tools)
        self.latency = latency
        self.calls: list[SimMcpCall] = []
        self.crashes = 0
        self.connects = 0
        self.open = 0  # connections (server processes) alive now
        self.on_call: Callable[[McpServer, str, dict[str, Any]], None] | None = None

    async def _latency(self) -> None:
        await trio.sleep(self.world.faults.uniform(*self.latency))

    @contextlib.asynccontextmanager
    async def connect(self, server: McpServer) -> AsyncIterator[_Connection]:
        world = self.world
        self.connects += 1
        await self._latency()
        if world.faults.fires(FaultType.TOOL_FAIL, "mcp.connect"):
            world.trace.record(f"fault ToolFail mcp.connect {server.server_name}")
            raise McpFailure(f"MCP server '{server.server_name}' exited at start")
        if world.faults.fires(FaultType.TOOL_TIMEOUT, "mcp.connect"):
            world.trace.record(f"fault ToolTimeout mcp.connect {server.server_name}")
            await trio.sleep_forever()  # the handshake never ends: the connect timeout
        connection = _Connection(self, server)
        self.open += 1
        try:
            yield connection
        finally:
            self.open -= 1
            connection.dead = True
