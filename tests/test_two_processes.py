"""Two `kelpie-trio serve` processes on one SQLite file: one agent, one activation, one history;
the owner killed with SIGKILL, the other takes over once the lease runs out, nothing acknowledged
lost."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import _free_port, wait_until_serving

LEASE_TTL = 2.0


def activations(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return float(re.search(r"^kelpie_activations_total (\S+)$", text, re.M).group(1))


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[list[tuple[str, subprocess.Popen]]]:
    nodes = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("KELPIE_")}
    env["KELPIE_LEASE_TTL"] = str(LEASE_TTL)
    for _ in range(2):
        port = _free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "kelpie_trio.cli", "serve", "--port", str(port),
             "--db", str(tmp_path / "shared.db")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, process)
        nodes.append((url, process))
    yield nodes
    for _, process in nodes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=20)


def send(url: str, agent: str, text: str) -> dict:
    response = httpx.post(
        f"{url}/v1/agents/{agent}/messages",
        json={"messages": [{"role": "user", "content": text}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def users(url: str, agent: str) -> list[str]:
    listed = httpx.get(f"{url}/v1/agents/{agent}/messages?limit=1000&order=asc").json()
    return [m["content"] for m in listed if m["message_type"] == "user_message"]


def test_one_activation_across_two_processes_and_takeover_after_sigkill(
    two_nodes: list[tuple[str, subprocess.Popen]],
) -> None:
    (a, proc_a), (b, proc_b) = two_nodes
    agent = httpx.post(f"{a}/v1/agents/", json={"name": "shared"}).json()["id"]
    sent = [f"m{i}" for i in range(6)]
    for i, text in enumerate(sent):
        reply = send(a if i % 2 == 0 else b, agent, text)
        assert reply["stop_reason"]["stop_reason"] == "end_turn"
    assert users(a, agent) == sent == users(b, agent)  # one ordered history
    counts = {a: activations(a), b: activations(b)}
    assert sorted(counts.values()) == [0.0, 1.0]  # one activation in all

    owner, survivor = (a, b) if counts[a] == 1.0 else (b, a)
    (proc_a if owner == a else proc_b).send_signal(signal.SIGKILL)
    started = time.monotonic()
    send(survivor, agent, "after the crash")  # waits out the lease, then takes over
    assert time.monotonic() - started < 15
    assert users(survivor, agent) == [*sent, "after the crash"]  # nothing acknowledged lost
    assert activations(survivor) == 1.0
