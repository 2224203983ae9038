"""MCP servers as tool sources: the client interface, the node's supervised sessions, sync.

client.py    McpConnector: opens a connection to one MCP server (the official `mcp`
             SDK in production, kelpie_trio/sim/mcp.py's SimMcpClient in the simulator)
sessions.py  McpSessions: one supervised task per connected server, a child of the
             node's nursery: started when first needed, restarted with backoff after it
             dies, stopped when idle and at shutdown; every connect, listing and call
             bounded by a timeout
sync.py      sans-IO: an MCP server's listing -> the tools to add, update and remove
"""

from kelpie_trio.mcp.client import McpCallResult, McpConnection, McpConnector, McpFailure
from kelpie_trio.mcp.sessions import McpSessions, McpSettings

__all__ = [
    "McpCallResult",
    "McpConnection",
    "McpConnector",
    "McpFailure",
    "McpSessions",
    "McpSettings",
]
