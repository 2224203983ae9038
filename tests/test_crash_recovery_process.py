"""A real server under steady load, killed with SIGKILL at random moments 20 times and
restarted on the same SQLite file: every message it acknowledged is in the history
afterwards, none twice, and the sessions the kills interrupted finish.

The clients do what the SDK does: a send that got no answer (connection refused, reset,
a 5xx) is sent again with the same client message id (otid), until it is answered.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.api.conftest import _free_port, wait_until_serving

KILLS = 20
AGENTS = 3


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KELPIE_")}
        self.env["KELPIE_LEASE_TTL"] = "1"  # a killed node's agents are taken over soon

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kelpie_trio.cli", "serve", "--port", str(self.port),
             "--data-dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env,
        )  # fmt: skip
        wait_until_serving(self.url, self.process)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


def whole_history(url: str, agent: str) -> list[dict]:
    """Every message of the agent, page after page."""
    history: list[dict] = []
    while True:
        params = {"limit": 500, "order": "asc", **({"after": history[-1]["id"]} if history else {})}
        page = httpx.get(f"{url}/v1/agents/{agent}/messages", params=params).json()
        if not page:
            return history
        history += page


def test_sigkill_twenty_times_under_load_loses_and_repeats_nothing(tmp_path: Path) -> None:
    server = Server(tmp_path)
    server.start()
    rng = random.Random(20261125)
    try:
        agents = [
            httpx.post(f"{server.url}/v1/agents/", json={"name": f"a{i}"}, timeout=30).json()["id"]
            for i in range(AGENTS)
        ]
        acked: dict[str, list[str]] = {a: [] for a in agents}
        stop = threading.Event()

        def load(agent: str) -> None:
            """One client per agent: its messages one after the other, each sent until answered."""
            with httpx.Client(base_url=server.url, timeout=30) as client:
                i = 0
                while not stop.is_set():
                    otid = f"{agent[-6:]}-m{i}"
                    body = {"messages": [{"role": "user", "content": f"m{i}", "otid": otid}]}
                    while True:
                        try:
                            response = client.post(f"/v1/agents/{agent}/messages", json=body)
                            if response.status_code == 200:
                                break
                            assert response.status_code >= 500, response.text  # never a 4xx
                        except httpx.TransportError:
                            pass
                        time.sleep(0.1)
                    acked[agent].append(otid)
                    i += 1

        clients = [threading.Thread(target=load, args=(a,), daemon=True) for a in agents]
        for thread in clients:
            thread.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.5))
            server.kill()
            server.start()
        time.sleep(1)
        stop.set()
        for thread in clients:
            thread.join(timeout=120)
            assert not thread.is_alive(), "a client never got its answer"

        deadline = time.monotonic() + 60
        while True:  # the interrupted sessions are driven to their end by the server itself
            active = httpx.get(f"{server.url}/v1/runs/", params={"active": "true"}).json()
            if not active or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert active == [], f"sessions left unfinished: {[r['id'] for r in active]}"

        for agent in agents:
            history = whole_history(server.url, agent)
            users = Counter(m["otid"] for m in history if m["message_type"] == "user_message")
            assert all(count == 1 for count in users.values()), "a message stored twice"
            assert set(acked[agent]) <= set(users), "an acknowledged message is missing"
            assert len(acked[agent]) >= 5
            runs = httpx.get(f"{server.url}/v1/runs/", params={"agent_id": agent,
                                                                "limit": 1000}).json()  # fmt: skip
            assert {r["status"] for r in runs} <= {"completed", "failed"}
    finally:
        server.stop()
