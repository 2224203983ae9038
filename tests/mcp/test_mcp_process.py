"""A stdio MCP server never outlives its node, and leaves nothing behind when it ends.

The server tested is stubborn (DEMO_STUBBORN): it ignores SIGTERM and SIGHUP, goes on
after its stdin ends (MCP's only "the client is gone"), and starts a helper process in
its group that does the same. After the node is stopped (SIGTERM) or killed (SIGKILL,
when no code of the node runs), the server's whole process group is gone within a
bounded time: kelpie_trio/mcp/_launch.py's watcher holds a pidfd of the node.

Linux only (pidfds, /proc); elsewhere a server is started as the command itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from kelpie_trio.mcp.client import LAUNCHER
from tests.api.conftest import server_process
from tests.mcp.test_mcp_e2e import DEMO

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="the launcher's watcher needs Linux pidfds; elsewhere a stdio server relies "
    "on its stdin's end alone",
)

HELPER = (  # a process that ignores the polite signals and stays
    "import signal, time\n"
    "for s in (signal.SIGTERM, signal.SIGHUP): signal.signal(s, signal.SIG_IGN)\n"
    "time.sleep(3600)\n"
)


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # ended while we looked
            continue
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            members.append(int(entry))
    return members


def _wait_until_gone(pgid: int, within: float) -> list[int]:
    """Poll /proc until the group has no live process or `within` seconds pass; what is
    left."""
    deadline = time.monotonic() + within
    while (left := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _start_stubborn_mcp_server(url: str) -> None:
    """Register the demo server over stdio, stubborn, and run a tool, so its process runs."""
    with httpx.Client(base_url=url, timeout=30) as http:
        body = {"server_name": "demo", "config": {"mcp_server_type": "stdio",
                "command": sys.executable, "args": [DEMO, "stdio"],
                "env": {"DEMO_STUBBORN": "1"}}}  # fmt: skip
        server = http.post("/v1/mcp-servers/", json=body).json()
        [add] = [t for t in http.get(f"/v1/mcp-servers/{server['id']}/tools").json()
                 if t["name"] == "add"]  # fmt: skip
        ran = http.post(f"/v1/mcp-servers/{server['id']}/tools/{add['id']}/run",
                        json={"args": {"a": 1, "b": 1}}).json()  # fmt: skip
        assert ran["func_return"] == "2"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stdio_server_ends_with_its_node(tmp_path: Path, how: signal.Signals) -> None:
    with server_process(tmp_path) as (url, process):
        _start_stubborn_mcp_server(url)
        [server] = [p for p in psutil.Process(process.pid).children(recursive=True)
                    if DEMO in " ".join(p.cmdline())]  # fmt: skip
        group = _group(server.pid)  # the server leads its own group
        commands = [_cmdline(pid) for pid in group]
        assert any(str(LAUNCHER) in c for c in commands), f"no watcher in {commands}"
        assert any("time.sleep(3600)" in c for c in commands), f"no helper in {commands}"
        process.send_signal(how)
        process.wait(timeout=30)
        left = _wait_until_gone(server.pid, within=15)
        assert not left, f"outlived the node: {[_cmdline(pid) for pid in left]}"


def _launch(program: str, **popen: object) -> subprocess.Popen[bytes]:
    """A server started as stdio_client starts one: through the launcher, in a new session."""
    return subprocess.Popen(
        [sys.executable, "-I", str(LAUNCHER), sys.executable, "-c", program],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
        **popen,  # type: ignore[arg-type]
    )


def test_a_server_outlives_the_thread_that_started_it() -> None:
    """Trio forks servers from worker threads it retires when idle; a server must live on
    (prctl's PR_SET_PDEATHSIG, tied to the forking thread, would kill it here)."""
    started: list[subprocess.Popen[bytes]] = []
    echo = "import sys\nfor line in sys.stdin: print(line.strip()[::-1], flush=True)\n"
    thread = threading.Thread(target=lambda: started.append(_launch(echo)))
    thread.start()
    thread.join()
    [server] = started
    try:
        out, _ = server.communicate(b"olleh\n", timeout=30)
        assert out == b"hello\n"
        assert server.returncode == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        assert not _wait_until_gone(server.pid, within=15)


def test_what_a_server_leaves_behind_ends_with_it() -> None:
    """A server that exits leaves no process of its group behind (its helper included)."""
    program = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', {HELPER!r}])\n"
        "sys.stdin.readline()\n"  # exits when told
    )
    server = _launch(program)
    try:
        deadline = time.monotonic() + 15
        while len(_group(server.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # the server, its watcher and its helper
        assert len(_group(server.pid)) == 3
        server.communicate(b"exit\n", timeout=30)
        assert not _wait_until_gone(server.pid, within=15)
    finally:
        if _group(server.pid):
            os.killpg(server.pid, signal.SIGKILL)


def test_a_server_ends_with_a_killed_stand_in_node(tmp_path: Path) -> None:
    """A bare process standing for the node starts a server that ignores its stdin's end,
    then is SIGKILLed: the server's group is gone within a bounded time."""
    pid_file = tmp_path / "server.pid"
    server_program = HELPER  # it never reads its stdin, so never sees it end
    stand_in = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-I', {str(LAUNCHER)!r}, sys.executable, "
        f"'-c', {server_program!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE, "
        "start_new_session=True)\n"
        f"open({str(pid_file)!r} + '.new', 'w').write(str(p.pid))\n"
        f"import os; os.rename({str(pid_file)!r} + '.new', {str(pid_file)!r})\n"
        "time.sleep(3600)\n"
    )
    node = subprocess.Popen([sys.executable, "-c", stand_in])
    try:
        deadline = time.monotonic() + 15
        while not pid_file.exists():
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        while len(_group(pid)) < 2:  # the server and its watcher
            assert time.monotonic() < deadline, f"the server's group: {_group(pid)}"
            time.sleep(0.05)
    finally:
        node.kill()
        node.wait()
    left = _wait_until_gone(pid, within=15)
    assert not left, f"outlived the node: {[_cmdline(p) for p in left]}"
