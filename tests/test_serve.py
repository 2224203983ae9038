"""`kelpie-trio serve`: a real process on loopback, on the embedded SQLite default."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from kelpie_trio import __version__
from kelpie_trio.api.app import LETTA_API_VERSION
from kelpie_trio.config import ServerConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_server(data_dir: Path, port: int) -> trio.Process:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "kelpie_trio.cli", "serve", "--port", str(port),
         "--data-dir", str(data_dir)],
        stderr=subprocess.PIPE,
        env={**os.environ, "KELPIE_STORE": "sqlite"},
    )  # fmt: skip
    # Ready when it says so: read its log until the "serving on" line.
    seen = b""
    with trio.fail_after(30):
        assert process.stderr is not None
        while b"serving on" not in seen:
            chunk = await process.stderr.receive_some()
            assert chunk, f"server exited before serving: {seen.decode(errors='replace')}"
            seen += chunk
    return process


async def test_serve_answers_health_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = await start_server(tmp_path, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for path in ("/v1/health/", "/v1/health"):
                response = await client.get(path)
                assert response.status_code == 200
                assert response.json() == {
                    "status": "ok",
                    "version": LETTA_API_VERSION,
                    "kelpie_trio_version": __version__,
                }
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (tmp_path / "kelpie.db").exists()


def test_config_flags_override_environment_over_defaults() -> None:
    defaults = ServerConfig.from_env({})
    assert (defaults.host, defaults.port, defaults.store) == ("127.0.0.1", 8283, "sqlite")
    assert defaults.db_path == defaults.data_dir / "kelpie.db"
    env = {"KELPIE_PORT": "9000", "KELPIE_DATA_DIR": "/tmp/kd", "KELPIE_HOST": "0.0.0.0"}
    from_env = ServerConfig.from_env(env)
    assert (from_env.port, from_env.host, from_env.db_path) == (
        9000,
        "0.0.0.0",
        Path("/tmp/kd/kelpie.db"),
    )
    assert ServerConfig.from_env(env, port=9100, db=Path("/x.db")).port == 9100
    assert ServerConfig.from_env({"KELPIE_FDB_CLUSTER_FILE": "/etc/fdb.cluster"}).store == "fdb"
    with pytest.raises(ValueError, match="unknown store"):
        ServerConfig.from_env({"KELPIE_STORE": "postgres"})
