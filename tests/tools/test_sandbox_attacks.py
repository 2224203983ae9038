"""Tool bodies written to harm the server, its data, other agents or the machine: each
one fails inside the sandbox's namespaces, the call says why, and the next call works.

The server's side is played by this test process: its pid, its environment, a listening
socket and a "store" file in a temporary directory. A server end to end (its loopback
API, an agent to delete) is in tests/api/test_tool_sandbox_e2e.py. Real processes on
the real clock; each test takes well under 3 s.
"""

from __future__ import annotations

import os
import socket
import sys
import textwrap
from pathlib import Path

import attrs
import pytest
import trio

from kelpie_trio.tools.sandbox import ToolResult, ToolSandbox

SANDBOX = ToolSandbox(timeout=10.0, memory_mb=256)
UNISOLATED = attrs.evolve(SANDBOX, isolated=False)


async def run(
    source: str,
    arguments: dict[str, object] | None = None,
    *,
    sandbox: ToolSandbox = SANDBOX,
) -> ToolResult:
    return await sandbox.run(textwrap.dedent(source), "tool", arguments or {})


async def still_works(sandbox: ToolSandbox = SANDBOX) -> None:
    result = await run("def tool() -> int:\n    return 1 + 1\n", sandbox=sandbox)
    assert result == ToolResult("success", func_return=2)


# A tool that tries to read a file and reports what happened.
READ = """
def tool(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return "read: " + f.read(200).decode(errors="replace")
    except OSError as e:
        return f"refused: {type(e).__name__}"
"""


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "kelpie.db"
    path.write_text("SQLite format 3 -- the server's store")
    return path


async def test_the_servers_store_cannot_be_read_by_path(store_file: Path) -> None:
    result = await run(READ, {"path": str(store_file)})
    assert result.func_return == "refused: FileNotFoundError"
    # The same body outside the boundary reads it: the test would catch a leak.
    unisolated = await run(READ, {"path": str(store_file)}, sandbox=UNISOLATED)
    assert unisolated.func_return.startswith("read: SQLite format 3")


async def test_the_store_cannot_be_read_through_proc_pid_root(store_file: Path) -> None:
    for path in (f"/proc/{os.getpid()}/root{store_file}", f"/proc/1/root{store_file}"):
        result = await run(READ, {"path": path})
        assert result.func_return == "refused: FileNotFoundError", path
    await still_works()


async def test_shadow_files_and_the_hosts_passwd_are_not_in_view() -> None:
    for path in ("/etc/shadow", "/etc/gshadow", "/root/.bash_history", "/home"):
        assert (await run(READ, {"path": path})).func_return == "refused: FileNotFoundError"
    # /etc/passwd is the sandbox's own, not the host's users.
    passwd = await run(READ, {"path": "/etc/passwd"})
    assert passwd.func_return.startswith("read: root:x:0:0:root:/:/usr/sbin/nologin\nsandbox:")


async def test_a_hidden_path_inside_the_view_is_covered() -> None:
    # A data directory that happens to lie inside the tool's Python is still hidden.
    inside = Path(sys.base_prefix) / "lib"
    probe = "def tool(path: str) -> list:\n    import os\n    return os.listdir(path)\n"
    assert (await run(probe, {"path": str(inside)})).func_return != []
    hiding = attrs.evolve(SANDBOX, hidden=(str(inside / "python3.11" / "json"),))
    result = await run(probe, {"path": str(inside / "python3.11" / "json")}, sandbox=hiding)
    assert result.func_return == []


ENVIRON = """
import os

def tool(server_pid: int) -> dict:
    seen = {}
    for pid in [server_pid] + [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                seen[pid] = f.read().decode(errors="replace")
        except OSError as e:
            seen[pid] = type(e).__name__
    return {"server": seen.pop(server_pid, None) if server_pid != 1 else None,
            "leaked": any("KELPIE_TEST_SECRET" in v for v in seen.values())}
"""


async def test_another_processs_environ_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KELPIE_TEST_SECRET", "hunter2")
    result = await run(ENVIRON, {"server_pid": os.getpid()})
    assert result.func_return == {"server": "FileNotFoundError", "leaked": False}


async def test_only_its_own_processes_are_visible_and_none_can_be_signalled() -> None:
    result = await run(
        """
        import os
        import signal

        def tool(server_pid: int) -> dict:
            try:
                os.kill(server_pid, signal.SIGKILL)
                killed = "sent"
            except OSError as e:
                killed = type(e).__name__
            pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            return {"pids": pids, "kill": killed, "me": os.getpid()}
        """,
        {"server_pid": os.getpid()},
    )
    assert result.func_return == {"pids": [1], "kill": "ProcessLookupError", "me": 1}


WRITE = """
import os

def tool(paths: list) -> dict:
    done = {}
    for path in paths:
        try:
            with open(path, "w") as f:
                f.write("pwned")
            done[path] = "written"
        except OSError as e:
            done[path] = type(e).__name__
    return done
"""


async def test_nothing_outside_scratch_can_be_written(tmp_path: Path) -> None:
    host = tmp_path / "planted"
    targets = ["/usr/pwned", "/etc/passwd", "/pwned", f"{sys.base_prefix}/pwned", str(host)]
    result = await run(WRITE, {"paths": [*targets, "/tmp/ok"]})
    assert result.func_return["/tmp/ok"] == "written"
    assert all(result.func_return[t] != "written" for t in targets), result.func_return
    assert not host.exists()


async def test_a_symlink_in_scratch_leads_nowhere_outside(store_file: Path) -> None:
    result = await run(
        """
        import os

        def tool(target: str, server_pid: int) -> dict:
            links = {
                "store": target,
                "via_proc": f"/proc/{server_pid}/root{target}",
                "up": "../../../../../../" + target.lstrip("/"),
            }
            out = {}
            for name, dest in links.items():
                os.symlink(dest, f"/tmp/{name}")
                try:
                    with open(f"/tmp/{name}") as f:
                        out[name] = f.read()
                except OSError as e:
                    out[name] = type(e).__name__
            return out
        """,
        {"target": str(store_file), "server_pid": os.getpid()},
    )
    assert set(result.func_return.values()) == {"FileNotFoundError"}
    # The server never walks the tool's scratch: the store is untouched.
    assert (await trio.Path(store_file).read_text()).startswith("SQLite format 3")


async def test_filling_the_disk_stops_at_the_scratch_limit(tmp_path: Path) -> None:
    small = attrs.evolve(SANDBOX, scratch_mb=8)
    result = await run(
        """
        def tool() -> None:
            with open("/tmp/fill", "wb") as f:
                for _ in range(1000):
                    f.write(b"x" * 1024 * 1024)
                    f.flush()
        """,
        sandbox=small,
    )
    assert result.limit == "scratch"
    assert result.error.startswith("scratch space is full (8 MB): OSError: [Errno 28]")
    await still_works(small)


CONNECT = """
import socket

def tool(host: str, port: int) -> str:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "connected"
    except OSError as e:
        return type(e).__name__
"""


async def test_no_outbound_socket_can_be_opened() -> None:
    result = await run(CONNECT, {"host": "192.0.2.1", "port": 80})  # TEST-NET-1
    assert result.func_return == "OSError"  # ENETUNREACH: there is no interface
    dns = await run(
        """
        import socket

        def tool() -> str:
            try:
                socket.getaddrinfo("example.com", 443)
                return "resolved"
            except OSError as e:
                return type(e).__name__
        """
    )
    assert dns.func_return == "gaierror"


async def test_the_servers_port_cannot_be_reached() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        isolated = await run(CONNECT, {"host": "127.0.0.1", "port": port})
        assert isolated.func_return in ("OSError", "ConnectionRefusedError")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing arrived
        # With the network allowed, the same body connects: the test sees a real reach.
        allowed = attrs.evolve(SANDBOX, network=True)
        assert (await run(CONNECT, {"host": "127.0.0.1", "port": port}, sandbox=allowed)) == (
            ToolResult("success", func_return="connected")
        )


PTRACE = """
import ctypes
import os
import subprocess
import sys

def tool() -> dict:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    PTRACE_ATTACH = 16
    attached = libc.ptrace(PTRACE_ATTACH, sibling.pid, None, None)
    err = ctypes.get_errno()
    sibling.kill()
    return {"attached": attached == 0, "errno": err}
"""


async def test_a_sibling_process_cannot_be_ptraced() -> None:
    result = await run(PTRACE)
    assert result.func_return == {"attached": False, "errno": 1}  # EPERM, from seccomp
    # Outside the boundary (same user, no filter) the attach succeeds.
    assert (await run(PTRACE, sandbox=UNISOLATED)).func_return["attached"] is True


async def test_the_tool_runs_without_privileges() -> None:
    result = await run(
        """
        import os

        def tool() -> dict:
            status = dict(
                line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
                if ":\\t" in line
            )
            return {
                "uid": os.getuid(), "gid": os.getgid(), "host": os.uname().nodename,
                "caps": status["CapEff"].strip(), "bounding": status["CapBnd"].strip(),
                "nnp": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
            }
        """
    )
    assert result.func_return == {
        "uid": 65534, "gid": 65534, "host": "sandbox", "caps": "0000000000000000",
        "bounding": "0000000000000000", "nnp": "1", "seccomp": "2",
    }  # fmt: skip


async def test_mounting_and_new_namespaces_are_refused() -> None:
    result = await run(
        """
        import ctypes
        import os

        def tool() -> dict:
            libc = ctypes.CDLL(None, use_errno=True)
            out = {}
            out["mount"] = libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None)
            out["unshare"] = libc.unshare(0x10000000)  # CLONE_NEWUSER
            try:
                os.chroot("/tmp")
                out["chroot"] = 0
            except OSError:
                out["chroot"] = -1
            return out
        """
    )
    assert result.func_return == {"mount": -1, "unshare": -1, "chroot": -1}


async def test_an_infinite_loop_stops_at_the_cpu_limit() -> None:
    result = await run(
        "def tool() -> None:\n    while True:\n        pass\n",
        sandbox=attrs.evolve(SANDBOX, cpu_seconds=1, timeout=10.0),
    )
    assert (result.error, result.limit) == ("CPU time limit exceeded (1 s)", "cpu_time")
    await still_works()


async def test_a_fork_flood_stops_at_the_process_limit() -> None:
    result = await run(
        """
        import os
        import time

        def tool() -> None:
            while True:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
        """,
        sandbox=attrs.evolve(SANDBOX, max_processes=16),
    )
    assert result.limit == "processes"
    assert result.error.startswith("process limit reached (16): BlockingIOError")
    await still_works()


async def test_opening_files_stops_at_the_open_files_limit() -> None:
    result = await run(
        """
        def tool() -> None:
            kept = [open("/dev/null") for _ in range(10_000)]
        """,
        sandbox=attrs.evolve(SANDBOX, max_open_files=64),
    )
    assert result.limit == "open_files"
    assert result.error.startswith("open files limit reached (64): OSError: [Errno 24]")


async def test_a_huge_return_is_refused_at_the_output_limit() -> None:
    result = await run('def tool() -> str:\n    return "x" * 50_000_000\n')
    assert result.limit == "output"
    assert result.error == "tool result is larger than 8000000 bytes (output limit)"
    await still_works()


async def test_the_server_is_unharmed_after_the_attacks() -> None:
    # Many hostile calls at once: the server's process, its trio loop and the sandbox go on.
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(run, "import os\ndef tool():\n    os.kill(1, 9)\n")
            nursery.start_soon(run, "import os\ndef tool():\n    os._exit(3)\n")
    await still_works()


SINGLE_ID = """
import sys

import trio

from kelpie_trio.tools.sandbox import ToolSandbox

TOOL = '''
import os

def tool() -> dict:
    status = open("/proc/self/status").read()
    return {"uid": os.getuid(), "pid": os.getpid(),
            "caps": "CapEff:\\\\t0000000000000000" in status,
            "map": open("/proc/self/uid_map").read().split()}
'''

print(trio.run(ToolSandbox(timeout=20).run, TOOL, "tool", {}))
"""


async def test_the_boundary_holds_where_only_one_uid_can_be_mapped() -> None:
    # A server that is not root may map only its own uid into the namespace: played here
    # by running the server in a user namespace of its own (util-linux's unshare).
    done = await trio.run_process(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", SINGLE_ID],
        capture_stdout=True,
        capture_stderr=True,
    )
    out = done.stdout.decode()
    assert "status='success'" in out, done.stderr.decode()[-2000:]
    assert "{'uid': 65534, 'pid': 1, 'caps': True, 'map': ['65534', '0', '1']}" in out
