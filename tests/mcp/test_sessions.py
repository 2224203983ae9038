"""McpSessions, the node's supervisor of MCP connections, on trio's mock clock with the
simulator's MCP client under it: started when first needed and reused, closed when idle
and when the node stops, a hung connect or call bounded by its timeout and followed by a
fresh session, and repeated failures backed off."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from kelpie_trio.mcp import McpFailure, McpSessions, McpSettings
from kelpie_trio.mcp.sessions import McpTimeout, McpToolGone, backoff_delay
from kelpie_trio.models.mcp import McpServer
from kelpie_trio.nursery.metrics import RuntimeMetrics
from kelpie_trio.sim import FaultConfig, FaultInjector, FaultType
from kelpie_trio.sim.mcp import SimMcpClient, SimMcpTool
from kelpie_trio.sim.trace import Trace

SETTINGS = McpSettings(connect_timeout=5, list_timeout=5, call_timeout=10, idle_timeout=60,
                       backoff_base=1, backoff_max=8)  # fmt: skip
SERVER = McpServer(id="mcp_server-1", server_name="kb", mcp_server_type="stdio", command="kb")
ECHO = SimMcpTool("Echo.", {"type": "object", "properties": {}}, lambda args: "pong")


def world(**op_rates: dict[str, float]) -> SimpleNamespace:
    """What SimMcpClient needs of a SimWorld: the fault table and the trace."""
    rates = {FaultType.by_name(k): v for k, v in op_rates.items()}
    faults = FaultInjector(FaultConfig(op_rates=rates), random.Random(1))
    return SimpleNamespace(faults=faults, trace=Trace())


@pytest.fixture
async def sessions_for(
    nursery: trio.Nursery,
) -> AsyncIterator[object]:
    async def make(client: SimMcpClient) -> McpSessions:
        sessions = McpSessions(client, SETTINGS)
        await nursery.start(sessions.run)
        return sessions

    yield make


async def test_a_session_starts_when_first_needed_is_reused_and_closes_when_idle(
    autojump_clock: trio.testing.MockClock, sessions_for: object
) -> None:
    client = SimMcpClient(world(), {"echo": ECHO})
    sessions = await sessions_for(client)  # type: ignore[operator]
    assert client.connects == 0  # nothing until a request needs it
    assert [t.name for t in await sessions.list_tools(SERVER)] == ["echo"]
    assert (await sessions.call_tool(SERVER, "echo", {})).text.startswith("pong")
    assert (client.connects, client.open, sessions.active) == (1, 1, [SERVER.id])
    await trio.sleep(SETTINGS.idle_timeout + 1)
    assert (client.open, sessions.active) == (0, [])


async def test_stopping_the_supervisor_closes_every_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = SimMcpClient(world(), {"echo": ECHO})
    sessions = McpSessions(client, SETTINGS)
    async with trio.open_nursery() as nursery:
        await nursery.start(sessions.run)
        other = McpServer(id="mcp_server-2", server_name="b", mcp_server_type="stdio",
                          command="b")  # fmt: skip
        await sessions.list_tools(SERVER)
        await sessions.list_tools(other)
        assert client.open == 2
        nursery.cancel_scope.cancel()
    assert client.open == 0


async def test_a_hung_call_fails_alone_within_its_timeout_and_the_next_call_starts_afresh(
    autojump_clock: trio.testing.MockClock, sessions_for: object
) -> None:
    client = SimMcpClient(world(ToolTimeout={"mcp.call": 1.0}), {"echo": ECHO})
    sessions = await sessions_for(client)  # type: ignore[operator]
    started = trio.current_time()
    with pytest.raises(McpTimeout, match="did not answer tools/call 'echo' within 10 s"):
        await sessions.call_tool(SERVER, "echo", {})
    assert trio.current_time() - started < SETTINGS.call_timeout + 1
    await trio.testing.wait_all_tasks_blocked()
    assert client.open == 0  # the hung server's session ended
    client.world.faults.enabled = False
    assert (await sessions.call_tool(SERVER, "echo", {})).is_error is False
    assert client.connects == 2


async def test_a_hung_handshake_fails_within_the_connect_timeout(
    autojump_clock: trio.testing.MockClock, sessions_for: object
) -> None:
    client = SimMcpClient(world(ToolTimeout={"mcp.connect": 1.0}), {"echo": ECHO})
    sessions = await sessions_for(client)  # type: ignore[operator]
    started = trio.current_time()
    with pytest.raises(McpTimeout, match="did not connect within 5 s"):
        await sessions.list_tools(SERVER)
    assert trio.current_time() - started <= SETTINGS.connect_timeout + 1
    assert client.open == 0


async def test_a_server_that_keeps_failing_is_retried_at_once_then_backed_off(
    autojump_clock: trio.testing.MockClock, sessions_for: object
) -> None:
    client = SimMcpClient(world(ToolFail={"mcp.connect": 1.0}), {"echo": ECHO})
    sessions = await sessions_for(client)  # type: ignore[operator]
    for _ in range(2):  # the first failure is retried at once
        with pytest.raises(McpFailure, match="exited at start"):
            await sessions.list_tools(SERVER)
    with pytest.raises(McpFailure, match=r"failed 2 times in a row; next attempt in 1\.0 s"):
        await sessions.list_tools(SERVER)
    assert client.connects == 2  # refused without trying
    await trio.sleep(1.0)
    client.world.faults.enabled = False
    assert [t.name for t in await sessions.list_tools(SERVER)] == ["echo"]
    assert [backoff_delay(n, 1, 8) for n in range(1, 7)] == [0, 1, 2, 4, 8, 8]


async def test_a_server_that_crashes_mid_call_is_restarted_for_the_next(
    autojump_clock: trio.testing.MockClock, sessions_for: object
) -> None:
    client = SimMcpClient(world(ToolFail={"mcp.call": 1.0}), {"echo": ECHO})
    sessions = await sessions_for(client)  # type: ignore[operator]
    with pytest.raises(McpFailure, match="closed the connection"):
        await sessions.call_tool(SERVER, "echo", {})
    client.world.faults.enabled = False
    assert (await sessions.call_tool(SERVER, "echo", {})).is_error is False
    assert client.connects == 2


async def test_a_tool_removed_upstream_is_named_so(
    autojump_clock: trio.testing.MockClock, sessions_for: object
) -> None:
    client = SimMcpClient(world(), {"echo": ECHO})
    sessions = await sessions_for(client)  # type: ignore[operator]
    await sessions.list_tools(SERVER)
    del client.tools["echo"]
    with pytest.raises(McpToolGone, match="no longer offers a tool named 'echo'"):
        await sessions.call_tool(SERVER, "echo", {})


async def test_stdio_servers_can_be_turned_off(autojump_clock: trio.testing.MockClock) -> None:
    assert McpSettings.from_env({"KELPIE_MCP_STDIO": "off"}).allow_stdio is False
    assert McpSettings.from_env({"KELPIE_MCP_CALL_TIMEOUT": "7"}).call_timeout == 7
    with pytest.raises(ValueError, match="KELPIE_MCP_CALL_TIMEOUT"):
        McpSettings.from_env({"KELPIE_MCP_CALL_TIMEOUT": "soon"})
    client = SimMcpClient(world(), {"echo": ECHO})
    sessions = McpSessions(client, McpSettings(allow_stdio=False))
    with pytest.raises(McpFailure, match="stdio MCP servers are turned off"):
        await sessions.list_tools(SERVER)


async def test_a_listing_on_a_connection_found_dead_is_retried_once_a_call_is_not(
    autojump_clock: trio.testing.MockClock, sessions_for: object
) -> None:
    client = SimMcpClient(world(), {"echo": ECHO})
    sessions = await sessions_for(client)  # type: ignore[operator]
    await sessions.list_tools(SERVER)
    sessions._sessions[SERVER.id].connection.dead = True  # the server exited while idle
    assert [t.name for t in await sessions.list_tools(SERVER)] == ["echo"]
    assert client.connects == 2
    sessions._sessions[SERVER.id].connection.dead = True
    with pytest.raises(McpFailure, match="is gone"):
        await sessions.call_tool(SERVER, "echo", {})
    assert client.calls == []  # never run twice behind the caller's back


def _samples(metrics: RuntimeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as Prometheus scrapes it: sample name and labels -> value."""
    text = metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


async def test_metrics_count_sessions_calls_failures_and_reconnects_by_server_type(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    metrics = RuntimeMetrics()
    client = SimMcpClient(world(ToolTimeout={"mcp.call": 1.0}), {"echo": ECHO})
    client.world.faults.enabled = False
    sessions = McpSessions(client, SETTINGS, observer=metrics)
    await nursery.start(sessions.run)
    http = McpServer(id="mcp_server-2", server_name="web", mcp_server_type="streamable_http",
                     server_url="https://mcp.example/mcp")  # fmt: skip
    stdio = (("server_type", "stdio"),)

    await sessions.call_tool(SERVER, "echo", {})
    await sessions.call_tool(http, "echo", {})
    client.world.faults.enabled = True  # hangs
    with pytest.raises(McpTimeout):
        await sessions.call_tool(SERVER, "echo", {})
    client.world.faults.enabled = False
    await sessions.call_tool(SERVER, "echo", {})  # a new session after the hung one
    del client.tools["echo"]
    with pytest.raises(McpToolGone):
        await sessions.call_tool(SERVER, "echo", {})

    seen = _samples(metrics)
    assert seen["kelpie_mcp_calls_total", stdio] == 4
    assert seen["kelpie_mcp_calls_total", (("server_type", "streamable_http"),)] == 1
    failures = {
        labels[0][1]: value
        for (name, labels), value in seen.items()
        if name == "kelpie_mcp_call_failures_total" and labels[1] == stdio[0]
    }
    assert failures == {"timeout": 1, "tool_gone": 1}
    assert seen["kelpie_mcp_reconnects_total", stdio] == 1
    assert seen["kelpie_mcp_sessions_open", stdio] == 1
    assert seen["kelpie_mcp_sessions_open", (("server_type", "streamable_http"),)] == 1
    await trio.sleep(SETTINGS.idle_timeout + 1)  # both close when idle
    seen = _samples(metrics)
    assert seen["kelpie_mcp_sessions_open", stdio] == 0
    assert seen["kelpie_mcp_sessions_open", (("server_type", "streamable_http"),)] == 0


class _SpinWatch(trio.abc.Instrument):
    """Cancels `scope` when one task runs `limit` steps without the clock moving: a loop
    that never yields the clock, which on the mock clock hangs the test instead of
    failing it."""

    def __init__(self, scope: trio.CancelScope, limit: int = 10_000) -> None:
        self.scope, self.limit = scope, limit
        self.at: float | None = None
        self.steps: dict[str, int] = {}
        self.spinning: str | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        now = trio.current_time()
        if now != self.at:
            self.at, self.steps = now, {}
        self.steps[task.name] = self.steps.get(task.name, 0) + 1
        if self.steps[task.name] > self.limit and self.spinning is None:
            self.spinning = task.name
            self.scope.cancel()


async def test_a_call_outlasting_the_idle_time_keeps_its_session_without_spinning(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A call that starts just before its session would idle out and runs past that
    moment (here until its own timeout): the session waits for it, never looping at the
    stale idle deadline (found by the MCP tool-calls DST, seed 3, which hung)."""
    client = SimMcpClient(world(), {"echo": ECHO})
    sessions = McpSessions(client, SETTINGS)
    with trio.CancelScope() as scope:
        watch = _SpinWatch(scope)
        trio.lowlevel.add_instrument(watch)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(sessions.run)
                await sessions.call_tool(SERVER, "echo", {})
                await trio.sleep(SETTINGS.idle_timeout - 5)
                client.world.faults = FaultInjector(
                    FaultConfig(op_rates={FaultType.TOOL_TIMEOUT: {"mcp.call": 1.0}}),
                    random.Random(1),
                )
                with pytest.raises(McpTimeout):  # hangs past the idle deadline, 10 s
                    await sessions.call_tool(SERVER, "echo", {})
                nursery.cancel_scope.cancel()
        finally:
            trio.lowlevel.remove_instrument(watch)
    assert watch.spinning is None, f"{watch.spinning} looped without the clock moving"
