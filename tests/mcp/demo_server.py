"""A real MCP server for the tests, on the official SDK's MCPServer (FastMCP in mcp 1.x).

    python -m tests.mcp.demo_server stdio
    python -m tests.mcp.demo_server http PORT     # streamable HTTP on 127.0.0.1:PORT/mcp
    python -m tests.mcp.demo_server sse PORT      # SSE on 127.0.0.1:PORT/sse

Environment: DEMO_GREETING (what `greet` says: a stdio server's env reaches it),
DEMO_TOKEN (the HTTP server then wants `Authorization: Bearer <it>`, else 401),
DEMO_TOOLS_FILE (a file naming, one per line, the tools listed; read at every listing,
so a test removes a tool upstream by editing it), DEMO_V2 (a new version of
the server: `add`'s description changes), DEMO_BAD_SCHEMA (the tool `broken`
requires a property it does not declare), DEMO_STUBBORN (the server ignores SIGTERM
and SIGHUP, outlives its stdin's end, and starts a helper process in its group that does
the same: what a node must still clean up).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError


class DemoServer(MCPServer):
    async def list_tools(self) -> list[Any]:
        tools = await super().list_tools()
        wanted = os.environ.get("DEMO_TOOLS_FILE")
        if wanted:
            names = set((await anyio.Path(wanted).read_text()).split())
            tools = [t for t in tools if t.name in names]
        if os.environ.get("DEMO_V2"):  # a new version: `add` documented differently
            for tool in tools:
                if tool.name == "add":
                    tool.description = "Add two integers (v2)."
        if os.environ.get("DEMO_BAD_SCHEMA"):
            for tool in tools:
                if tool.name == "broken":
                    tool.input_schema = {
                        "type": "object",
                        "properties": {"x": {"type": "string"}},
                        "required": ["x", "y"],
                    }
        return tools


app = DemoServer("demo")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def greet(name: str) -> str:
    """Greet someone with the server's greeting."""
    return f"{os.environ.get('DEMO_GREETING', 'hello')}, {name}"


@app.tool()
async def hang() -> str:
    """Never answers."""
    await anyio.sleep(3600)
    return "woke up"


@app.tool()
def crash() -> str:
    """The server process dies mid-call."""
    os._exit(3)


@app.tool()
def fail() -> str:
    """An error result."""
    raise ToolError("upstream says no")


@app.tool()
def broken(x: str) -> str:
    """Its schema is made invalid with DEMO_BAD_SCHEMA."""
    return x


def _http(port: int, sse: bool = False) -> None:
    import uvicorn

    inner = app.sse_app() if sse else app.streamable_http_app()
    token = os.environ.get("DEMO_TOKEN")

    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        if token and scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization", b"").decode() != f"Bearer {token}":
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await inner(scope, receive, send)

    uvicorn.run(guarded, host="127.0.0.1", port=port, log_level="warning")


_STUBBORN = (
    "import signal, time\n"
    "for s in (signal.SIGTERM, signal.SIGHUP): signal.signal(s, signal.SIG_IGN)\n"
    "time.sleep(3600)\n"
)


def _stubborn_stdio() -> None:
    import signal
    import subprocess
    import time

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", _STUBBORN], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL)  # fmt: skip
    app.run()
    time.sleep(3600)  # stdin ended: a well-behaved server would exit here


if __name__ == "__main__":
    if sys.argv[1] in ("http", "sse"):
        _http(int(sys.argv[2]), sse=sys.argv[1] == "sse")
    elif os.environ.get("DEMO_STUBBORN"):
        _stubborn_stdio()
    else:
        app.run()
