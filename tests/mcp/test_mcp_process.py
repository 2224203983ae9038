"""A stdio MCP server is the node's child and never outlives it: gone after a clean stop
(SIGTERM), and gone after the node is killed outright (SIGKILL: the server sees its stdin
close, which is how MCP's stdio transport says "the client is gone")."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.api.conftest import server_process
from tests.mcp.test_mcp_e2e import DEMO


def _start_mcp_server(url: str) -> psutil.Process:
    """Register the demo server over stdio and run a tool, so its process runs; that process."""
    with httpx.Client(base_url=url, timeout=30) as http:
        body = {"server_name": "demo", "config": {"mcp_server_type": "stdio",
                "command": sys.executable, "args": [DEMO, "stdio"]}}  # fmt: skip
        server = http.post("/v1/mcp-servers/", json=body).json()
        [add] = [t for t in http.get(f"/v1/mcp-servers/{server['id']}/tools").json()
                 if t["name"] == "add"]  # fmt: skip
        ran = http.post(f"/v1/mcp-servers/{server['id']}/tools/{add['id']}/run",
                        json={"args": {"a": 1, "b": 1}}).json()  # fmt: skip
        assert ran["func_return"] == "2"


def _mcp_children(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True)
            if DEMO in " ".join(p.cmdline())]  # fmt: skip


def _gone(processes: list[psutil.Process], within: float) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=within)
    return not alive


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stdio_server_ends_with_its_node(tmp_path: Path, how: signal.Signals) -> None:
    with server_process(tmp_path) as (url, process):
        _start_mcp_server(url)
        children = _mcp_children(process.pid)
        assert len(children) == 1
        process.send_signal(how)
        process.wait(timeout=30)
        started = time.monotonic()
        assert _gone(children, within=15), "the MCP server outlived its node"
        assert time.monotonic() - started < 15
