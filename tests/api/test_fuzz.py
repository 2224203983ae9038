"""The API fuzzed from its own /openapi.json, against a real `kelpie-trio serve`.

schemathesis runs every check (no 5xx, every answer within the schema, status codes and
headers as documented, invalid input refused, valid input accepted) through all its
phases, the stateful one included (it chains the ids one answer gives into the next
request), over keep-alive connections. Bounded in examples and time so it fits CI.
Afterwards the server holds no more file descriptors than before and no socket in
CLOSE-WAIT: nothing leaked or wedged.

Rules the schema cannot express (a block's value within its limit, a tool name that must
exist) are listed per operation in schemathesis.toml beside this file.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.api.conftest import server_process

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = int(os.environ.get("KELPIE_FUZZ_SEED", "20261204"))
MAX_EXAMPLES = int(os.environ.get("KELPIE_FUZZ_EXAMPLES", "5"))
RUN_LIMIT = 240.0  # seconds: a run beyond this is a hang, not a slow machine
REQUEST_TIMEOUT = 10.0  # one request; a timeout is reported as a failure (a hang)


def _schemathesis(url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
        "run", f"{url}/openapi.json",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", str(REQUEST_TIMEOUT),
        "--generation-database", "none",
        # A failing run stays bounded too: no shrinking, and it stops after a few findings.
        "--no-shrink", "--max-failures", "10",
    ]  # fmt: skip
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_LIMIT, check=False, cwd=workdir
        )
    except subprocess.TimeoutExpired as timeout:
        seen = timeout.stdout.decode(errors="replace") if timeout.stdout else ""
        pytest.fail(f"schemathesis ran past {RUN_LIMIT} s (requests hang?):\n{seen[-8000:]}")


def _open_files(pid: int) -> set[str]:
    """What each of the server's fds points at (a file, a socket, a pipe), for a message."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            found.add(f"{fd.name} -> {os.readlink(fd)}")
    return found


def _sockets_settle(pid: int, fds: int, timeout: float = 10.0) -> tuple[int, int]:
    """The server's fd count and CLOSE-WAIT sockets once it has closed what its client left
    (it closes them asynchronously after the client hangs up: a bounded wait)."""
    process = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while True:
        now = process.num_fds()
        close_wait = sum(1 for c in process.net_connections("tcp") if c.status == "CLOSE_WAIT")
        if (now <= fds and close_wait == 0) or time.monotonic() > deadline:
            return now, close_wait
        time.sleep(0.1)


def test_fuzzing_the_api_finds_nothing_and_leaks_nothing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data_dir = tmp_path_factory.mktemp("fuzz")
    # Stdio MCP servers are commands: the fuzzer's random ones are refused, never started.
    with server_process(data_dir, env={"KELPIE_MCP_STDIO": "off"}) as (url, process):
        fds = psutil.Process(process.pid).num_fds()
        opened = _open_files(process.pid)
        run = _schemathesis(url, data_dir)
        output = run.stdout + run.stderr
        found = output.partition("FAILURES")[2].partition("WARNINGS")[0] or output
        assert run.returncode == 0, f"schemathesis (seed {SEED}) found:\n{found[-20000:]}"
        after, close_wait = _sockets_settle(process.pid, fds)
        assert (after <= fds, close_wait) == (True, 0), (
            f"the server held {fds} fds before and {after} after, {close_wait} in CLOSE-WAIT; "
            f"opened since: {sorted(_open_files(process.pid) - opened)}"
        )
