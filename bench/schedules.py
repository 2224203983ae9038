"""How fast one node fires scheduled messages, and what a firing costs it.

    python -m bench.schedules                          # 20 agents, 1,000 schedules
    python -m bench.schedules --agents 50 --schedules 2000 --store memory

Starts `kelpie-trio serve` (SQLite by default, the in-process sim model, no provider),
creates the agents and one-time schedules spread over them, all due at one instant a few
seconds ahead, then watches: the schedules listing of every agent empties as the firings
are claimed, and the runs they start finish. Prints firings per second (claimed, and
finished, from the due instant) and the server's CPU per firing over that window, which
includes each firing's run (a turn of the sim model) and the bench's few polls.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
import trio

from bench.procs import start_server


async def _create(client: httpx.AsyncClient, agents: int, schedules: int, due_ms: int) -> list[str]:
    ids = []
    for i in range(agents):
        reply = await client.post("/v1/agents/", json={"name": f"sched-{i}", "model": "sim/agent",
                                                       "embedding": "sim/embedding"})  # fmt: skip
        reply.raise_for_status()
        ids.append(reply.json()["id"])
    limiter = trio.CapacityLimiter(16)

    async def one(i: int) -> None:
        async with limiter:
            body = {"messages": [{"role": "user", "content": f"scheduled #{i}"}],
                    "schedule": {"type": "one-time", "scheduled_at": due_ms}}  # fmt: skip
            reply = await client.post(f"/v1/agents/{ids[i % agents]}/schedule", json=body)
            reply.raise_for_status()

    async with trio.open_nursery() as nursery:
        for i in range(schedules):
            nursery.start_soon(one, i)
    return ids


async def _pending(client: httpx.AsyncClient, agents: list[str]) -> int:
    left = 0
    for agent in agents:
        reply = await client.get(f"/v1/agents/{agent}/schedule", params={"limit": 1})
        left += len(reply.json()["scheduled_messages"])
    return left


async def _finished_runs(client: httpx.AsyncClient, agents: list[str]) -> int:
    done = 0
    for agent in agents:
        reply = await client.get("/v1/runs", params={"agent_id": agent, "limit": 1000})
        done += sum(1 for r in reply.json() if r["status"] in ("completed", "failed", "cancelled"))
    return done


async def run(agents: int, schedules: int, store: str, lead: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        async with (
            start_server(Path(work), store=store) as server,
            httpx.AsyncClient(base_url=server.url, timeout=60) as client,
        ):
            due = time.time() + lead
            ids = await _create(client, agents, schedules, int(due * 1000))
            if time.time() >= due:
                raise SystemExit(f"creating took longer than --lead {lead:g} s: raise it")
            await trio.sleep(due - time.time() - 0.2)
            before = server.usage()
            start = time.perf_counter()
            give_up = start + 120 + schedules / 10
            while await _pending(client, ids) and time.perf_counter() < give_up:  # noqa: ASYNC110 - a client polls
                await trio.sleep(0.1)
            claimed = time.perf_counter() - start
            # A claimed firing's run appears when its send is made: count them.
            while (runs := await _finished_runs(client, ids)) < schedules:
                if time.perf_counter() > give_up:
                    break
                await trio.sleep(0.25)
            finished = time.perf_counter() - start
            after = server.usage()
    cpu = after.cpu_since(before)
    return {
        "schedules": schedules,
        "runs": runs,
        "claimed_s": round(claimed, 2),
        "finished_s": round(finished, 2),
        "firings_per_s_claimed": round(schedules / claimed, 1),
        "firings_per_s_finished": round(schedules / finished, 1),
        "server_cpu_s": round(cpu, 2),
        "cpu_ms_per_firing": round(cpu * 1000 / schedules, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.schedules",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument(
        "--lead", type=float, default=30.0,
        help="seconds from the start to the due instant (creating must fit in it)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    result = trio.run(run, args.agents, args.schedules, args.store, args.lead)
    width = max(map(len, result))
    for name, value in result.items():
        print(f"{name:<{width}}  {value}")
    return 0 if result["runs"] == args.schedules else 1


if __name__ == "__main__":
    raise SystemExit(main())
