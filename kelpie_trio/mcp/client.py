"""The MCP client interface, and its implementation on the official `mcp` SDK.

A connector opens one connection (an async context manager) to an MCP server record;
the connection lists tools and calls them. The SDK runs on anyio, so on trio. Whatever
goes wrong in the SDK or the transport comes out as McpFailure with a sentence a user can
act on (never a server's secrets: errors name the command or URL only).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import attrs
import trio

from kelpie_trio.models.mcp import McpServer, McpTool

__all__ = [
    "McpCallResult",
    "McpConnection",
    "McpConnectionLost",
    "McpConnector",
    "McpFailure",
    "McpUnauthorized",
    "SdkMcpConnector",
]


class McpFailure(Exception):
    """An MCP server could not be reached, or a request to it failed (not a tool's own
    error result, which is an McpCallResult with is_error)."""


class McpUnauthorized(McpFailure):
    """The server answered 401 or 403: it wants credentials (or an OAuth flow, which this
    server does not run)."""


class McpConnectionLost(McpFailure):
    """The connection died under a request (the server exited or crashed): the session
    that held it is over and is started again for the next request."""


@attrs.frozen
class McpCallResult:
    is_error: bool
    text: str


class McpConnection(Protocol):
    async def list_tools(self) -> list[McpTool]: ...

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> McpCallResult: ...


class McpConnector(Protocol):
    def connect(
        self, server: McpServer
    ) -> contextlib.AbstractAsyncContextManager[McpConnection]: ...


def describe(server: McpServer) -> str:
    """How an error names a server: its name and command or URL, no secrets (a URL's
    user, password and query, where tokens hide, are left out)."""
    if server.mcp_server_type == "stdio":
        where = server.command
    else:
        parts = urlsplit(server.server_url or "")
        host = parts.hostname or ""
        where = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
    return f"MCP server '{server.server_name}' ({where})"


# Of a call's result, the characters kept (an agent's tool message keeps fewer still):
# a server's answer is not trusted to be of a size the node can hold and hand on.
MAX_RESULT_CHARS = 1_000_000
MAX_LIST_PAGES = 100  # of one tools/list


def content_text(content: list[Any], limit: int = MAX_RESULT_CHARS) -> str:
    """A call's content as one text, as Letta joins it: text pieces as they are, others
    (images, resources) named by their type."""
    parts = []
    for piece in content:
        text = getattr(piece, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(piece, 'type', 'content')}]")
    joined = " ".join(parts) if parts else "Empty response from tool"
    if len(joined) > limit:
        joined = f"{joined[:limit]}[{len(joined) - limit} more characters not kept]"
    return joined


class _SdkConnection:
    def __init__(self, server: McpServer, session: Any) -> None:
        self.server = server
        self.session = session

    async def list_tools(self) -> list[McpTool]:
        tools: list[McpTool] = []
        cursor = None
        for _ in range(MAX_LIST_PAGES):  # a server whose cursors never end is cut off
            params = None
            if cursor is not None:
                from mcp.types import PaginatedRequestParams

                params = PaginatedRequestParams(cursor=cursor)
            try:
                listed = await self.session.list_tools(params=params)
            except Exception as error:
                raise _failure(self.server, error) from None
            tools += [McpTool(t.name, t.description, t.input_schema) for t in listed.tools]
            cursor = getattr(listed, "next_cursor", None)
            if not cursor:
                break
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> McpCallResult:
        try:
            result = await self.session.call_tool(name, arguments)
        except Exception as error:
            raise _failure(self.server, error) from None
        return McpCallResult(bool(result.is_error), content_text(result.content))


def _failure(server: McpServer, error: BaseException) -> McpFailure:
    """What a request's exception means: the connection lost, or the request failed."""
    inner = _unwrap(error)
    message = _explain(server, inner)
    return McpConnectionLost(message) if _lost(inner) else McpFailure(message)


def _unwrap(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


class SdkMcpConnector:
    """Connections through the official `mcp` SDK: stdio, SSE and streamable HTTP.

    With `allow_private` off, an HTTP server is only reached at public addresses: each
    connection resolves the host and connects to the addresses it checked (so a name
    cannot resolve to a public address for a check and a private one for the
    connection), and proxies from the environment are not used (the proxy's address
    would be the one checked).
    """

    def __init__(self, *, http_timeout: float = 30.0, allow_private: bool = True) -> None:
        self.http_timeout = http_timeout
        self.allow_private = allow_private

    @contextlib.asynccontextmanager
    async def connect(self, server: McpServer) -> AsyncIterator[McpConnection]:
        from mcp import ClientSession

        refused: list[int] = []  # HTTP statuses of 401 and 403 the server answered
        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await self._transport(stack, server, refused)
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                yield _SdkConnection(server, session)
        except Exception as error:  # the SDK's task groups wrap what went wrong
            inner = _unwrap(error)
            if isinstance(inner, McpFailure):
                raise inner from None
            if isinstance(inner, FileNotFoundError):
                raise McpFailure(
                    f"{describe(server)} cannot start: command not found; "
                    "is it installed on this node?"
                ) from None
            if refused:  # the SDK reports these as a bare error response
                raise McpUnauthorized(_unauthorized(server, refused[-1])) from None
            raise McpFailure(_explain(server, inner)) from None

    async def _transport(
        self, stack: contextlib.AsyncExitStack, server: McpServer, refused: list[int]
    ) -> Any:
        if server.mcp_server_type == "stdio":
            from mcp import StdioServerParameters, stdio_client

            command, args = stdio_command(server)
            params = StdioServerParameters(command=command, args=args, env=server.env)
            # The server's stderr is its own log: not the node's, which must not fill with it.
            return await stack.enter_async_context(
                stdio_client(params, errlog=subprocess.DEVNULL)  # type: ignore[arg-type]
            )
        import httpx2

        async def note(response: Any) -> None:
            if response.status_code in (401, 403):
                refused.append(response.status_code)

        checked: dict[str, Any] = {}
        if not self.allow_private:
            checked = {"transport": _checked_transport(server), "trust_env": False}

        def client(
            headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None
        ) -> Any:
            return httpx2.AsyncClient(
                headers=headers,
                timeout=timeout or httpx2.Timeout(self.http_timeout, read=300.0),
                auth=auth,
                event_hooks={"response": [note]},
                **checked,
            )

        if server.mcp_server_type == "sse":
            from mcp.client.sse import sse_client

            return await stack.enter_async_context(
                sse_client(
                    server.server_url or "",
                    headers=server.headers(),
                    timeout=self.http_timeout,
                    httpx_client_factory=client,
                )
            )
        from mcp.client.streamable_http import streamable_http_client

        http = await stack.enter_async_context(client(headers=server.headers()))
        return await stack.enter_async_context(
            streamable_http_client(server.server_url or "", http_client=http)
        )


def _checked_transport(server: McpServer) -> Any:
    """httpx2's transport, connecting only to public addresses (tools/web.py's rule)."""
    import httpcore2
    import httpx2

    from kelpie_trio.tools.web import address_refusal

    class Checked(httpcore2.AsyncNetworkBackend):  # type: ignore[misc]
        def __init__(self) -> None:
            self.inner = httpcore2.TrioBackend()

        async def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's interface
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> Any:
            try:
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as error:
                raise McpFailure(f"{describe(server)}: cannot resolve {host!r}: {error}") from None
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
            refusal = address_refusal(host, addresses, allow_private=False)
            if refusal is not None:
                raise McpFailure(f"{describe(server)}: {_private(refusal)}")
            failure: Exception | None = None
            for address in addresses:  # the checked ones, not a second lookup
                try:
                    return await self.inner.connect_tcp(
                        address, port, timeout, local_address, socket_options
                    )
                except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as error:
                    failure = error
            raise McpFailure(f"{describe(server)}: cannot connect to {host}:{port}: {failure}")

        async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
            raise McpFailure(f"{describe(server)}: MCP servers are reached over TCP only")

        async def sleep(self, seconds: float) -> None:
            await self.inner.sleep(seconds)

    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    # httpx2 has no public way to give its transport a network backend; its httpcore2
    # pool keeps the one it uses here (pinned versions: fail loudly if that changes).
    pool = transport._pool
    if not hasattr(pool, "_network_backend"):
        raise RuntimeError("httpx2/httpcore2 changed: MCP URLs cannot be checked")
    pool._network_backend = Checked()
    return transport


def _private(refusal: str) -> str:
    """web.py's refusal, with this setting's name."""
    return refusal.replace("refused to fetch from", "refused to connect to").replace(
        "KELPIE_WEB_ALLOW_PRIVATE=1", "KELPIE_MCP_ALLOW_PRIVATE=on"
    )


def private_url_refusal(url: str | None) -> str | None:
    """Why an MCP server URL names a host that is not public, without resolving it (a
    literal address, or localhost), or None: what a create or update can refuse at once.
    Names that resolve to private addresses are refused when connecting."""
    from kelpie_trio.tools.web import is_public

    host = (urlsplit(url or "").hostname or "").rstrip(".").lower()
    if not host:
        return None
    literal = host.strip("[]")
    try:
        ipaddress.ip_address(literal.split("%", 1)[0])
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            return f"{host!r} is this node (loopback)"
        return None
    return None if is_public(literal) else f"{literal} is not a public address"


LAUNCHER = Path(__file__).with_name("_launch.py")


def stdio_command(server: McpServer) -> tuple[str, list[str]]:
    """The command line that starts a stdio server: on Linux through _launch.py, which
    makes sure the server never outlives this node, even a SIGKILLed one."""
    from mcp.client.stdio import get_default_environment

    command = server.command or ""
    # Found here as the server's exec will find it (the PATH of its environment), so that
    # a missing command is said plainly instead of as a launcher that exited.
    path = (get_default_environment() | (server.env or {})).get("PATH", os.defpath)
    if shutil.which(command, path=path) is None:
        raise McpFailure(
            f"{describe(server)} cannot start: command not found (or not executable); "
            "is it installed on this node?"
        )
    if not sys.platform.startswith("linux"):
        return command, list(server.args)
    return sys.executable, ["-I", str(LAUNCHER), command, *server.args]


def _unauthorized(server: McpServer, status: int) -> str:
    return (
        f"{describe(server)} refused the connection ({status}): it wants authorization. "
        "Give its token (auth_token) or headers; OAuth is not supported by this server"
    )


def _explain(server: McpServer, error: BaseException) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return _unauthorized(server, status)
    if status is not None:
        return f"{describe(server)} answered HTTP {status}"
    name = type(error).__name__
    text = str(error) or name
    if _lost(error):
        return f"{describe(server)} closed the connection (did it exit or crash?)"
    return f"{describe(server)} failed: {name}: {text}"


def _lost(error: BaseException) -> bool:
    text = str(error)
    return "Connection closed" in text or type(error).__name__ in (
        "EndOfStream",
        "ClosedResourceError",
        "BrokenResourceError",
    )
