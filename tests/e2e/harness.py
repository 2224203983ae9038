"""Letta's own npm clients against a real `kelpie-trio serve` process.

The pieces the end-to-end tests share: Letta's npm packages installed once a session from
tests/e2e/js/package-lock.json (`npm ci`), a server subprocess on a free loopback port over
a temp data dir that can be stopped and started again on the same port and data, its LLM
being the scripted fake provider (scripted_provider.py) served from the test's own trio
loop, and runners for a node script and for Letta's CLI (`letta`) in headless mode.

Everything here is async: the fake provider answers from the test's event loop, and the
server asks it for its models at start, so nothing may block that loop while it waits.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

JS_DIR = Path(__file__).parent / "js"
LETTA = JS_DIR / "node_modules" / ".bin" / "letta"
MODEL = "openai/gpt-4o-mini"  # a handle the fake provider serves (tests/llm/fake_providers.py)
# What `npm ci` installed, by the lock file's hash: a session whose node_modules already
# matches the lock skips the install (npm ci would delete and fetch everything again).
_STAMP = JS_DIR / "node_modules" / ".kelpie-lock-sha256"


def install_js_clients() -> Path:
    """Letta's npm clients, exactly as package-lock.json pins them, in tests/e2e/js."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not on PATH: Letta's npm clients cannot run here")
    # --ignore-scripts: none of the clients' install scripts is needed headless (node-pty and
    # sharp serve the CLI's terminal UI and images), and one (node-pty's) would fall back to
    # compiling with headers fetched from outside the registry.
    install_once(
        JS_DIR / "package-lock.json", _STAMP,
        [[npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"]], cwd=JS_DIR, timeout=600,
    )  # fmt: skip
    return JS_DIR


def install_once(
    lock: Path, stamp: Path, commands: list[list[str]], cwd: Path, timeout: float
) -> None:
    """Run `commands` (an install from `lock`) unless `stamp` says this lock's contents
    were installed already; then stamp it. A failure raises with the installer's output."""
    wanted = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    for command in commands:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:2])} failed in {cwd}:\n{done.stderr[-3000:]}")
    stamp.write_text(wanted)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`kelpie-trio serve` over `data_dir`, its OpenAI provider at `provider_url`."""

    def __init__(self, data_dir: Path, provider_url: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("KELPIE_", "OPENAI_", "ANTHROPIC_"))}  # fmt: skip
        self.env |= {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": provider_url + "/v1"}
        self.process: trio.Process | None = None

    async def start(self) -> None:
        # The log goes to a file: a pipe nobody reads fills up and blocks the server.
        with open(self.log_path, "ab") as log:  # noqa: ASYNC230 - a local file, at once
            self.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "kelpie_trio.cli", "serve", "--port", str(self.port),
                 "--data-dir", str(self.data_dir)],
                stdout=subprocess.DEVNULL, stderr=log, env=self.env,
            )  # fmt: skip
        async with httpx.AsyncClient() as client:
            with trio.move_on_after(30) as waited:
                while True:  # bounded wait until the health route answers
                    if self.process.poll() is not None:
                        raise RuntimeError(f"the server exited:\n{self.log()}")
                    try:
                        if (await client.get(f"{self.url}/v1/health/")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)
            if waited.cancelled_caught:
                raise RuntimeError(f"the server did not start:\n{self.log()}")

    async def stop(self) -> None:
        """SIGTERM, as an operator stops it; it drains and exits."""
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            with trio.move_on_after(20):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


async def run_node(script: str, env: dict[str, str]) -> Any:
    """Run tests/e2e/js/<script> with node (within 60 s); its last stdout line is its JSON
    result."""
    with trio.fail_after(60):
        done = await trio.run_process(
            ["node", str(JS_DIR / script)], cwd=JS_DIR, env={**os.environ, **env},
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    out = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not out:
        raise AssertionError(
            f"{script} exited {done.returncode}\nstdout:\n{chr(10).join(out)[-4000:]}\n"
            f"stderr:\n{done.stderr.decode(errors='replace')[-4000:]}"
        )
    return json.loads(out[-1])


class LettaCli:
    """Letta's CLI (`letta`), headless, with its own HOME (its settings and the agents it
    remembers) and project directory, talking to `base_url`."""

    def __init__(self, home: Path, project: Path) -> None:
        self.home, self.project = home, project
        home.mkdir(parents=True, exist_ok=True)
        project.mkdir(parents=True, exist_ok=True)

    def env(self, base_url: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith("LETTA_")}
        return keep | {
            "HOME": str(self.home),
            "LETTA_BASE_URL": base_url,
            "LETTA_API_KEY": "kelpie-e2e",  # the server has no password; the CLI wants a key
            "LETTA_CODE_TELEM": "0",  # no telemetry files
            "DISABLE_AUTOUPDATER": "1",  # no update check against the registry
        }

    async def run(self, base_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        """One headless invocation, within 60 s."""
        with trio.fail_after(60):
            return await trio.run_process(
                [str(LETTA), *args], cwd=self.project, env=self.env(base_url),
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip

    async def start(self, base_url: str, *args: str) -> trio.Process:
        """The CLI as a process the test can kill mid-turn (its output is not read)."""
        return await trio.lowlevel.open_process(
            [str(LETTA), *args], cwd=self.project, env=self.env(base_url),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
