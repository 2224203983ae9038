"""The HTTP edge on a real server: an early answer never wedges a connection or leaks a socket.

An early answer is one the app gives before it has read the body the client
announced (a 422 for a malformed path, a 413). These tests talk raw HTTP/1.1 over
keep-alive sockets, as a client that pauses between its head and its body does,
and look at the server process's own file descriptors and TCP states.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import letta_client
import psutil
import pytest
from letta_client import Letta

from tests.api.conftest import server_process

# The client's pause between its head and its body: the scenario itself (a client that streams
# its body, or a slow link), long enough for the app to answer first (it takes a millisecond).
CLIENT_PAUSE = 0.1
ANSWER_TIMEOUT = 5.0
SETTLE_TIMEOUT = 15.0  # generous: CI's two cores may be busy


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen]]:
    with server_process(Path(tmp_path_factory.mktemp("edge"))) as running:
        yield running


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read to its end."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a response body")
        rest += chunk
    return status, headers, rest[:length]


def _early_answer_then_next(port: int, method: str, path: str) -> list[int]:
    """Head with Content-Length, a pause in which the app may answer, the body; then a second
    request on the same connection. The statuses of both, or a timeout."""
    body = b'{"text":"a"}'
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(ANSWER_TIMEOUT)
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        time.sleep(CLIENT_PAUSE)
        sock.sendall(body)
        first, _, _ = _read_response(sock)
        sock.sendall(b"GET /v1/health/ HTTP/1.1\r\nHost: test\r\n\r\n")
        second, _, _ = _read_response(sock)
    return [first, second]


def _assert_no_socket_left(process: subprocess.Popen, fds: int) -> None:
    """The server holds no more fds than before and no CLOSE-WAIT socket, once it has seen
    its clients go (it closes their sockets asynchronously: a bounded wait)."""
    proc = psutil.Process(process.pid)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        now = proc.num_fds()
        sockets = proc.net_connections("tcp")
        close_wait = [c for c in sockets if c.status == "CLOSE_WAIT"]
        if now <= fds and not close_wait:
            return
        assert time.monotonic() < deadline, f"{now} fds (from {fds}); sockets: {sockets}"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/agents/0/archival-memory/"), ("PATCH", "/v1/blocks/0")],
)
def test_a_request_answered_before_its_body_leaves_the_connection_serving(
    server: tuple[str, subprocess.Popen], method: str, path: str
) -> None:
    url, process = server
    fds = psutil.Process(process.pid).num_fds()
    for _ in range(10):
        assert _early_answer_then_next(_port(url), method, path) == [422, 200]
    _assert_no_socket_left(process, fds)


def test_a_413_is_drained_and_closes_the_connection(
    server: tuple[str, subprocess.Popen],
) -> None:
    url, process = server
    fds = psutil.Process(process.pid).num_fds()
    body = b'{"label":"x","value":"' + b"x" * 17_000_000 + b'"}'
    with socket.create_connection(("127.0.0.1", _port(url))) as sock:
        sock.settimeout(ANSWER_TIMEOUT)
        sock.sendall(
            b"POST /v1/blocks/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        time.sleep(CLIENT_PAUSE)
        sock.sendall(body)  # all of it arrives: the server read it, it did not reset
        status, headers, _ = _read_response(sock)
        assert (status, headers.get("connection")) == (413, "close")
        assert sock.recv(1) == b""  # and then the server hung up
    _assert_no_socket_left(process, fds)


def test_a_body_too_large_to_drain_gets_its_413_at_once_and_a_closed_connection(
    server: tuple[str, subprocess.Popen],
) -> None:
    url, process = server
    fds = psutil.Process(process.pid).num_fds()
    with socket.create_connection(("127.0.0.1", _port(url))) as sock:
        sock.settimeout(ANSWER_TIMEOUT)
        sock.sendall(
            b"POST /v1/blocks/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n"
        )
        status, headers, _ = _read_response(sock)
        assert (status, headers.get("connection")) == (413, "close")
        assert sock.recv(1) == b""
    _assert_no_socket_left(process, fds)


def test_sdk_call_after_a_413_is_answered(server: tuple[str, subprocess.Popen]) -> None:
    url, process = server
    fds = psutil.Process(process.pid).num_fds()
    with Letta(base_url=url, max_retries=0, timeout=ANSWER_TIMEOUT * 2) as letta:
        with pytest.raises(letta_client.APIStatusError) as raised:
            letta.blocks.create(label="big", value="x" * 17_000_000)
        assert raised.value.status_code == 413
        assert letta.blocks.create(label="small", value="x").value == "x"
    _assert_no_socket_left(process, fds)
