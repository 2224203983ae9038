"""The MCP server of the bench's mcp-calls scenario: one cheap tool over stdio, on the
official SDK's server (so what the bench measures is the server's side of a real MCP call).

    python bench/mcp_echo.py        # serves stdio
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

app = MCPServer("bench")


@app.tool()
def bench_add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    app.run("stdio")
