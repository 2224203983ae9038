"""An in-process app on the memory store, and a real server for the SDK tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from letta_client import Letta
from quart.testing import QuartClient

from kelpie_trio.api.app import create_app
from kelpie_trio.storage import MemoryStore


@pytest.fixture
async def client(nursery: trio.Nursery) -> AsyncIterator[QuartClient]:
    store = MemoryStore()
    await nursery.start(store.run)
    app = create_app(store)
    async with app.test_app() as test_app:
        yield test_app.test_client()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    """Readiness: a bounded wait until the server's health route answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/v1/health/").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise RuntimeError("the server exited")
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)


@contextlib.contextmanager
def server_process(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`kelpie-trio serve` on a free loopback port over `data_dir`, until the block ends: its
    URL and its process (for tests that look at its sockets and file descriptors). The
    environment is the test's without KELPIE_* variables, plus `env`."""
    port = _free_port()
    # The log goes to a file: a pipe nobody reads fills after a few hundred request lines,
    # and then the server blocks on its next log write.
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "kelpie_trio.cli", "serve", "--port", str(port),
             "--data-dir", str(data_dir), *extra],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("KELPIE_")},
                 **(env or {})},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
    except RuntimeError as error:
        process.kill()
        process.wait(timeout=20)
        raise RuntimeError(f"{error}: {log_path.read_text()[-2000:]}") from None
    try:
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextlib.contextmanager
def running_server(data_dir: Path, *extra: str) -> Iterator[str]:
    """`kelpie-trio serve` on a free loopback port over `data_dir`, until the block ends."""
    with server_process(data_dir, *extra) as (url, _):
        yield url


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server (SQLite in a temp dir) shared by a module's letta-client tests."""
    with running_server(tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture
def letta(server_url: str) -> Iterator[Letta]:
    """letta-client on the module's server; closed after, so no idle keep-alive is left for
    the server to wait out at shutdown."""
    client = Letta(base_url=server_url, max_retries=0)
    yield client
    client.close()
