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
                body = response.json()
                assert (body["status"], body["version"], body["kelpie_trio_version"]) == (
                    "ok",
                    LETTA_API_VERSION,
                    __version__,
                )
                # Said at start-up and shown here: how this host runs custom tools.
                assert body["details"]["tool_sandbox"]["custom_tools"] == "isolated"
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


def test_the_agent_wait_timeout_comes_from_the_environment_and_must_be_positive() -> None:
    assert ServerConfig.from_env({}).agent_wait_timeout == 300.0
    assert ServerConfig.from_env({"KELPIE_AGENT_WAIT_TIMEOUT": "45"}).agent_wait_timeout == 45.0
    with pytest.raises(ValueError, match="not a number"):
        ServerConfig.from_env({"KELPIE_AGENT_WAIT_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match="must be positive"):
        ServerConfig.from_env({"KELPIE_AGENT_WAIT_TIMEOUT": "0"})


async def test_serve_says_once_that_it_serves_and_what_it_waits_for_when_stopping(
    tmp_path: Path,
) -> None:
    port = free_port()
    process = await start_server(tmp_path, port)
    try:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    rest = b""
    while chunk := await process.stderr.receive_some():
        rest += chunk
    log = rest.decode()
    assert "Running on" not in log  # hypercorn's own start-up line: ours says it once
    assert "waiting up to 10 s for open requests" in log
    assert "waiting up to 10 s for 0 active agent(s)" in log
    assert log.rstrip().endswith("kelpie-trio stopped")


def serve_refused(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Run `kelpie-trio serve` with `args`; its exit status and its stderr's lines."""
    done = subprocess.run(
        [sys.executable, "-m", "kelpie_trio.cli", "serve", *args],
        capture_output=True,
        timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("KELPIE_")}, **(env or {})},
    )
    return done.returncode, done.stderr.decode().splitlines()


def test_a_port_in_use_is_one_line_and_status_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, lines = serve_refused("--port", str(port), "--data-dir", str(tmp_path))
    assert status == 2
    assert lines == [f"kelpie-trio: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_a_port_out_of_range_is_one_line_and_status_2(tmp_path: Path) -> None:
    status, lines = serve_refused("--port", "99999", "--data-dir", str(tmp_path))
    assert (status, len(lines)) == (2, 1)
    assert "port 99999" in lines[0] and "65535" in lines[0]
    status, lines = serve_refused("--data-dir", str(tmp_path), env={"KELPIE_PORT": "eighty"})
    assert (status, len(lines)) == (2, 1) and "KELPIE_PORT" in lines[0]


def test_a_data_dir_that_is_a_file_is_one_line_and_status_2(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    status, lines = serve_refused("--port", "0", "--data-dir", str(a_file))
    assert status == 2
    assert lines == [f"kelpie-trio: --data-dir {a_file} is a file, not a directory"]


def test_store_fdb_without_its_client_library_is_one_line_and_status_2(tmp_path: Path) -> None:
    from kelpie_trio.storage.foundationdb import fdb_available

    if fdb_available():
        pytest.skip("libfdb_c is installed here: this is about a machine without it")
    status, lines = serve_refused("--port", "0", "--store", "fdb", "--data-dir", str(tmp_path))
    assert status == 2
    assert len(lines) == 1 and "libfdb_c" in lines[0] and "Traceback" not in lines[0]


def test_a_bad_schedule_setting_is_one_line_and_status_2(tmp_path: Path) -> None:
    env = {"KELPIE_SCHEDULE_POLL": "often"}
    status, lines = serve_refused("--port", "0", "--data-dir", str(tmp_path), env=env)
    assert (status, len(lines)) == (2, 1) and "KELPIE_SCHEDULE_POLL" in lines[0]


def test_serve_runs_the_node_with_the_young_generation_threshold_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kelpie_trio/gc_tuning.py: set before the node starts (the process's whole life)."""
    import gc

    from kelpie_trio import cli, gc_tuning

    seen: list[tuple[int, int, int]] = []
    monkeypatch.setattr(cli.trio, "run", lambda *args: seen.append(gc.get_threshold()))
    monkeypatch.setattr(cli.logging, "basicConfig", lambda **kw: None)  # the test's own logs
    before = gc.get_threshold()
    try:
        assert cli.main(["serve", "--data-dir", str(tmp_path), "--store", "memory"]) == 0
    finally:
        gc.set_threshold(*before)
    assert seen == [(gc_tuning.YOUNG_THRESHOLD, before[1], before[2])]
