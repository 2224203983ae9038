"""McpSessions: the node's connections to MCP servers, one supervised task each.

    McpSessions.run        a child of the node's root nursery (nursery.start)
      session task         one per MCP server in use: connects (bounded by
                           connect_timeout), holds the connection while it is used,
                           closes it after idle_timeout without a request, or when the
                           node stops (a stdio server's process ends with it)

A request (a listing, a tool call) runs in the caller's task on the shared connection,
bounded by its own timeout, so a hung server fails that one request with a clear error
and never holds a turn, an actor or the node. A connection that died (the server
exited, crashed, or hung past a call's timeout) ends its session; the next request
starts a new one at once the first time, then with exponential backoff while it keeps
failing (requests in the backoff window fail at once with the last error). Everything
is on trio's clock, so the simulator runs this code with SimMcpClient under it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs
import trio

from kelpie_trio.mcp.client import (
    McpCallResult,
    McpConnection,
    McpConnectionLost,
    McpConnector,
    McpFailure,
    McpUnauthorized,
    describe,
)
from kelpie_trio.models.mcp import McpServer, McpTool

__all__ = ["McpObserver", "McpSessions", "McpSettings", "McpTimeout", "McpToolGone"]

log = logging.getLogger("kelpie_trio.mcp")

T = TypeVar("T")


class McpTimeout(McpFailure):
    """An MCP server did not answer within its timeout."""


class McpToolGone(McpFailure):
    """The tool called is no longer offered by its MCP server (removed upstream)."""


class McpObserver:
    """What the sessions report as they go, by server type (stdio, sse, streamable_http):
    nursery/metrics.py counts it for /metrics. Does nothing by default."""

    def mcp_session_opened(self, server_type: str) -> None:
        """A connection is up."""

    def mcp_session_closed(self, server_type: str) -> None:
        """A connection that was up is down (idle, died, stopped, node stopping)."""

    def mcp_reconnecting(self, server_type: str) -> None:
        """A session starts for a server whose last one failed (died, timed out, or
        could not connect)."""

    def mcp_called(self, server_type: str, outcome: str) -> None:
        """A tool call ended: `ok`, or how it failed: `tool_error` (the tool's own error
        result), `timeout`, `tool_gone` (removed upstream), `failed` (could not connect,
        connection lost, refused in backoff, or any other failed request)."""


@attrs.frozen
class McpSettings:
    """Timeouts (seconds) and the lifecycle of sessions; KELPIE_MCP_* in the environment."""

    connect_timeout: float = 30.0
    list_timeout: float = 30.0
    call_timeout: float = 60.0
    idle_timeout: float = 300.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    allow_stdio: bool = True
    # Whether SSE and streamable-HTTP servers may be at loopback, private, link-local or
    # reserved addresses (KELPIE_MCP_ALLOW_PRIVATE). By default, as stdio servers are
    # allowed: a caller who may start a command on the node reaches its network anyway,
    # and MCP servers on localhost or a private network are the common self-hosted case;
    # a node with stdio turned off refuses them too unless told otherwise.
    allow_private: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> McpSettings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, name in (
            ("connect_timeout", "KELPIE_MCP_CONNECT_TIMEOUT"),
            ("list_timeout", "KELPIE_MCP_LIST_TIMEOUT"),
            ("call_timeout", "KELPIE_MCP_CALL_TIMEOUT"),
            ("idle_timeout", "KELPIE_MCP_IDLE_TIMEOUT"),
        ):
            if name in environ:
                try:
                    values[field] = float(environ[name])
                except ValueError:
                    raise ValueError(f"{name}={environ[name]!r} is not a number") from None
                if values[field] <= 0:
                    raise ValueError(f"{name} must be above 0")
        stdio = environ.get("KELPIE_MCP_STDIO", "on").lower()
        if stdio not in ("on", "off"):
            raise ValueError(f"KELPIE_MCP_STDIO={stdio!r}: expected on or off")
        values["allow_stdio"] = stdio == "on"
        private = environ.get("KELPIE_MCP_ALLOW_PRIVATE", stdio).lower()
        if private not in ("on", "off"):
            raise ValueError(f"KELPIE_MCP_ALLOW_PRIVATE={private!r}: expected on or off")
        values["allow_private"] = private == "on"
        return cls(**values)


@attrs.define(eq=False)
class _Session:
    server: McpServer
    ready: trio.Event = attrs.Factory(trio.Event)
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    connection: McpConnection | None = None
    error: McpFailure | None = None
    closed: bool = False
    in_flight: int = 0
    last_used: float = 0.0
    tool_names: frozenset[str] | None = None  # as the connection last listed them


@attrs.define
class _Backoff:
    failures: int = 0
    retry_at: float = -math.inf
    last_error: McpFailure | None = None


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """How long after its `failures`-th failure in a row a server is tried again: at once
    after the first (a crash is restarted straight away), then doubling up to `cap`."""
    if failures <= 1:
        return 0.0
    return min(cap, base * 2 ** (failures - 2))


class McpSessions:
    def __init__(
        self,
        connector: McpConnector,
        settings: McpSettings | None = None,
        observer: McpObserver | None = None,
    ) -> None:
        self.connector = connector
        self.settings = settings or McpSettings()
        self.observer = observer or McpObserver()
        self._sessions: dict[str, _Session] = {}
        self._backoff: dict[str, _Backoff] = {}
        self._nursery: trio.Nursery | None = None
        self.started = 0  # sessions started (connections attempted), for tests and metrics

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The supervisor: session tasks live in this nursery and end with it."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    @property
    def active(self) -> list[str]:
        """The ids of the servers with an open session."""
        return [i for i, s in self._sessions.items() if s.connection is not None and not s.closed]

    def stop(self, server_id: str) -> None:
        """End a server's session (deleted, or its configuration changed)."""
        session = self._sessions.pop(server_id, None)
        self._backoff.pop(server_id, None)
        if session is not None:
            session.scope.cancel()

    # -- requests ----------------------------------------------------------

    async def list_tools(self, server: McpServer) -> list[McpTool]:
        async def listing(session: _Session, connection: McpConnection) -> list[McpTool]:
            tools = await connection.list_tools()
            session.tool_names = frozenset(t.name for t in tools)
            return tools

        try:
            return await self._request(server, "tools/list", self.settings.list_timeout, listing)
        except McpConnectionLost:
            # A listing changes nothing, so a connection found dead (the server exited
            # while idle) is retried once on a new session. A call is not: it may have run.
            return await self._request(server, "tools/list", self.settings.list_timeout, listing)

    async def call_tool(
        self, server: McpServer, name: str, arguments: dict[str, Any]
    ) -> McpCallResult:
        async def call(session: _Session, connection: McpConnection) -> McpCallResult:
            failure: McpFailure | None = None
            try:
                result = await connection.call_tool(name, arguments)
            except McpConnectionLost:
                raise
            except McpFailure as error:
                result, failure = None, error
            if result is not None and not result.is_error:
                return result
            # An error: is it because the tool was removed upstream? Servers answer an
            # unknown tool in their own words; this says it the same way for all.
            with trio.fail_after(self.settings.list_timeout):
                listed = await connection.list_tools()
            session.tool_names = frozenset(t.name for t in listed)
            if name not in session.tool_names:
                raise McpToolGone(
                    f"{describe(server)} no longer offers a tool named '{name}' (removed "
                    f"upstream?); refresh its tools: PATCH /v1/mcp-servers/{server.id}/refresh"
                )
            if failure is not None:
                raise failure
            return result

        what = f"tools/call '{name}'"
        kind = server.mcp_server_type
        try:
            result = await self._request(server, what, self.settings.call_timeout, call)
        except McpTimeout:
            self.observer.mcp_called(kind, "timeout")
            raise
        except McpToolGone:
            self.observer.mcp_called(kind, "tool_gone")
            raise
        except McpFailure:
            self.observer.mcp_called(kind, "failed")
            raise
        self.observer.mcp_called(kind, "tool_error" if result.is_error else "ok")
        return result

    async def _request(
        self,
        server: McpServer,
        what: str,
        limit: float,
        work: Callable[[_Session, McpConnection], Awaitable[T]],
    ) -> T:
        session = await self._session(server)
        connection = session.connection
        assert connection is not None
        session.in_flight += 1
        try:
            with trio.move_on_after(limit) as waiting:
                return await work(session, connection)
        except McpConnectionLost as lost:
            self._died(session, lost)
            raise
        except trio.TooSlowError:  # the listing before a first call
            waiting.cancel()
        finally:
            session.in_flight -= 1
            session.last_used = trio.current_time()
        # Timed out: the server may be hung; its session ends (a stdio server's process
        # with it) so that the next request starts afresh instead of queueing behind it.
        error = McpTimeout(
            f"{describe(server)} did not answer {what} within {limit:g} s; the request "
            "was abandoned and the server's session restarted"
        )
        self._died(session, error)
        raise error

    async def _session(self, server: McpServer) -> _Session:
        """The server's connected session, started if there is none (or it is stale)."""
        session = self._sessions.get(server.id)
        if session is not None and (session.closed or session.server != server):
            if session.server != server:  # reconfigured: the old connection is useless
                session.scope.cancel()
            session = None
        if session is None:
            if server.mcp_server_type == "stdio" and not self.settings.allow_stdio:
                raise McpFailure("stdio MCP servers are turned off on this node (KELPIE_MCP_STDIO)")
            backoff = self._backoff.get(server.id)
            now = trio.current_time()
            if backoff is not None and now < backoff.retry_at:
                # An authorization refusal stays one in the backoff window (what to fix).
                unauthorized = isinstance(backoff.last_error, McpUnauthorized)
                kind = McpUnauthorized if unauthorized else McpFailure
                raise kind(
                    f"{describe(server)} failed {backoff.failures} times in a row; next "
                    f"attempt in {backoff.retry_at - now:.1f} s. Last error: "
                    f"{backoff.last_error}"
                )
            if self._nursery is None:
                raise McpFailure("MCP sessions are not running on this node")
            session = _Session(server, last_used=now)
            self._sessions[server.id] = session
            self.started += 1
            if backoff is not None:
                self.observer.mcp_reconnecting(server.mcp_server_type)
            self._nursery.start_soon(self._hold, session)
        with trio.move_on_after(self.settings.connect_timeout + 1.0):
            await session.ready.wait()
        if session.connection is None or session.closed:
            raise session.error or McpTimeout(
                f"{describe(server)} did not connect within {self.settings.connect_timeout:g} s"
            )
        return session

    # -- the session task ----------------------------------------------------

    async def _hold(self, session: _Session) -> None:
        """Connect, then keep the connection until it idles out, dies or is stopped."""
        server = session.server
        settings = self.settings
        try:
            with session.scope:
                session.scope.deadline = trio.current_time() + settings.connect_timeout
                async with self.connector.connect(server) as connection:
                    session.scope.deadline = math.inf
                    session.connection = connection
                    self._backoff.pop(server.id, None)
                    self.observer.mcp_session_opened(server.mcp_server_type)
                    try:
                        session.ready.set()
                        await self._until_idle(session)
                    finally:
                        self.observer.mcp_session_closed(server.mcp_server_type)
            if session.connection is None and session.error is None:
                session.error = McpTimeout(
                    f"{describe(server)} did not connect within {settings.connect_timeout:g} s"
                )
        except McpFailure as failure:
            session.error = session.error or failure
        except Exception as error:  # a child never takes the node down with it
            log.warning("MCP session of server %s ended: %s", server.id, type(error).__name__)
            session.error = session.error or McpFailure(
                f"{describe(server)} failed: {type(error).__name__}"
            )
        finally:
            session.closed = True
            session.ready.set()
            if self._sessions.get(server.id) is session:
                del self._sessions[server.id]
            if session.error is not None and session.connection is None:
                self._note_failure(server.id, session.error)

    async def _until_idle(self, session: _Session) -> None:
        idle = self.settings.idle_timeout
        while True:
            await trio.sleep_until(session.last_used + idle)
            if trio.current_time() < session.last_used + idle:
                continue  # used meanwhile: its idle time starts again
            if session.in_flight == 0:
                return
            # A call that outlasts the idle time: the session idles out no sooner than
            # `idle` after it ends. Sleeping until the stale deadline again would return
            # at once, a loop that never yields the clock (in the simulator, a hang).
            await trio.sleep(idle)

    def _died(self, session: _Session, error: McpFailure) -> None:
        session.error = error
        session.closed = True
        session.scope.cancel()
        if self._sessions.get(session.server.id) is session:
            del self._sessions[session.server.id]
        self._note_failure(session.server.id, error)

    def _note_failure(self, server_id: str, error: McpFailure) -> None:
        backoff = self._backoff.setdefault(server_id, _Backoff())
        backoff.failures += 1
        backoff.last_error = error
        delay = backoff_delay(backoff.failures, self.settings.backoff_base,
                              self.settings.backoff_max)  # fmt: skip
        backoff.retry_at = trio.current_time() + delay
