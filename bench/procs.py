"""The processes a bench run starts (server, floor, fake provider) and their own accounting.

Each child is a separate OS process so its CPU time and RSS can be read from the kernel's
accounting for that process alone (psutil: user + system seconds, threads included, children
not). Every child is stopped with SIGTERM, then SIGKILL after a grace period, when its
`Child` context ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import psutil
import trio

from bench.http1 import Connection, HttpError

__all__ = [
    "Attached",
    "Child",
    "Usage",
    "free_port",
    "start_fake_provider",
    "start_floor",
    "start_idle_floor",
    "start_server",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@attrs.frozen
class Usage:
    """A process's CPU seconds (user + system) and RSS bytes at one instant."""

    cpu: float
    rss: int
    at: float
    # The main thread's CPU seconds: kelpie-trio's trio loop (the rest is its worker
    # threads: SQLite's writer and checkpoints). None for a server the bench did not start.
    loop_cpu: float | None = None

    def cpu_since(self, earlier: Usage) -> float:
        return self.cpu - earlier.cpu


@attrs.define
class Child:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def usage(self) -> Usage:
        proc = psutil.Process(self.process.pid)
        with proc.oneshot():
            times = proc.cpu_times()
            rss = proc.memory_info().rss
        loop = _main_thread_cpu(proc.pid)
        return Usage(times.user + times.system, rss, time.perf_counter(), loop)

    def stop(self, grace: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@attrs.define
class Attached:
    """A server the bench did not start (`--base-url` with `--server-pid`): its accounting
    is read all the same, so its CPU per message can be set beside the floor's. `also`:
    more processes that serve it without being its children (a database server), whose
    CPU and RSS count as the server's too."""

    name: str
    url: str
    pid: int
    also: tuple[int, ...] = ()

    def usage(self) -> Usage:
        cpu, rss = 0.0, 0
        for pid in (self.pid, *self.also):
            tree_cpu, tree_rss = _tree_usage(psutil.Process(pid))
            cpu += tree_cpu
            rss += tree_rss
        return Usage(cpu, rss, time.perf_counter())


def _main_thread_cpu(pid: int) -> float | None:
    """The main thread's seconds on a CPU (ns from schedstat: exact, unlike clock ticks)."""
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _tree_usage(proc: psutil.Process) -> tuple[float, int]:
    """CPU seconds (user + system) and RSS of a process and every process under it:
    workers it forked (uvicorn --workers, a tool sandbox, a database's backends). The
    CPU of those that already ended counts too, from their parents' `children_*` times
    (Postgres forks a backend per connection, and Letta opens one per session)."""

    def spent(times: Any) -> float:
        return times.user + times.system + times.children_user + times.children_system

    with proc.oneshot():
        cpu = spent(proc.cpu_times())
        rss = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cpu += spent(child.cpu_times())
            rss += child.memory_info().rss
    return cpu, rss


def _bench_env(extra: dict[str, str]) -> dict[str, str]:
    # The bench decides every setting of the children: nothing leaks in from the caller's
    # KELPIE_* or provider variables (a real OPENAI_API_KEY must never be used by a bench).
    drop = ("KELPIE_", "OPENAI_", "ANTHROPIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


async def _ready_line(child: subprocess.Popen, what: str, within: float = 30) -> str:
    """The URL a child prints as `ready <url>` on stdout."""
    assert child.stdout is not None
    with trio.fail_after(within):
        while True:
            line = await trio.to_thread.run_sync(child.stdout.readline, abandon_on_cancel=True)
            if not line:
                raise RuntimeError(f"{what} exited before it was ready")
            if match := re.match(r"ready (\S+)", line.decode()):
                return match.group(1)


@contextlib.asynccontextmanager
async def _owned(child: Child) -> AsyncIterator[Child]:
    try:
        yield child
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(child.stop)


@contextlib.asynccontextmanager
async def start_fake_provider(
    latency: float, *, chunk_gap: float = 0.0, port: int = 0
) -> AsyncIterator[Child]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_provider", "--port", str(port),
         "--latency", str(latency), "--chunk-gap", str(chunk_gap)],
        stdout=subprocess.PIPE, env=_bench_env({}),
    )  # fmt: skip
    child = Child("fake provider", "", process)
    async with _owned(child):
        child.url = await _ready_line(process, "the fake provider")
        yield child


@contextlib.asynccontextmanager
async def start_floor(provider_url: str | None, client: str = "lean") -> AsyncIterator[Child]:
    command = [sys.executable, "-m", "bench.floor", "--port", "0", "--client", client]
    if provider_url:
        command += ["--provider", provider_url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=_bench_env({}))
    child = Child("floor", "", process)
    async with _owned(child):
        child.url = await _ready_line(process, "the floor app")
        yield child


@contextlib.asynccontextmanager
async def start_idle_floor(per_minute: float) -> AsyncIterator[Child]:
    """bench/idle_floor.py: a trio process that wakes `per_minute` times a minute."""
    command = [sys.executable, "-m", "bench.idle_floor", "--per-minute", f"{per_minute:g}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=_bench_env({}))
    child = Child("idle floor", "", process)
    async with _owned(child):
        await _ready_line(process, "the idle floor")
        yield child


async def wait_healthy(url: str, child: subprocess.Popen, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while True:
        if child.poll() is not None:
            raise RuntimeError(f"the server at {url} exited with {child.returncode}")
        conn = Connection(url)
        try:
            reply = await conn.request("GET", "/v1/health/")
            if reply.status == 200:
                return
        except (OSError, HttpError):
            pass  # not listening yet, or hung up while it starts
        finally:
            await conn.aclose()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server at {url} did not become healthy in {within} s")
        await trio.sleep(0.05)


@contextlib.asynccontextmanager
async def start_server(
    data_dir: Path,
    *,
    store: str = "sqlite",
    provider_url: str | None = None,
    sim_latency: float = 0.0,
    db: Path | None = None,
    extra_env: dict[str, str] | None = None,
    name: str = "server",
) -> AsyncIterator[Child]:
    """`kelpie-trio serve` on a free loopback port with its data in `data_dir`."""
    port = free_port()
    env = {
        "KELPIE_STORE": store,
        "KELPIE_DATA_DIR": str(data_dir),
        "KELPIE_SIM_LATENCY": str(sim_latency),
    }
    if provider_url:
        env["OPENAI_BASE_URL"] = provider_url
        env["OPENAI_API_KEY"] = "bench-fake-key"
    if db is not None:
        env["KELPIE_DB"] = str(db)
    env.update(extra_env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"{name}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kelpie_trio.cli", "serve", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=_bench_env(env),
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    child = Child(name, url, process, log_path)
    async with _owned(child):
        try:
            await wait_healthy(url, process)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{child.log_tail()}") from None
        yield child
