"""The schedules scenario (a mixin of bench/scenarios.py's Runner): `messages` one-time
scheduled messages over `agents` agents, all due at one instant `lead` seconds after the
bench starts creating them, fired by the server on its own.

Each firing is claimed by the node's firer and sent as an async message: a run of its agent,
one turn, one LLM call at the bench's fake provider. So the relay floor (a JSON POST in, one
LLM call out) is the floor of a firing as it is of a steady message.

The window opens just before the due instant and closes once the provider has been asked
for every firing's completion and the server has gone quiet (its runs stored). Nothing
polls the server in it: the bench asks the fake provider for its count. After the window,
each agent's runs are listed: a firing's sample runs from the due instant to its run's
`completed_at` (the server's clock; bench and server share the machine's), and a firing
with no completed run counts as an error.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import trio

from bench.fake_provider import COUNT_PATH
from bench.http1 import Connection
from bench.load import Sample
from bench.mixin import RunnerPart
from bench.stats import summarize, throughput_series, usage_delta

__all__ = ["Schedules"]

_OPEN_BEFORE_S = 0.3  # the window opens this long before the due instant
_POLL_S = 0.05  # between two looks at the provider's count


class Schedules(RunnerPart):
    async def scenario_schedules(self, p: dict[str, Any]) -> dict[str, Any]:
        """Firings per second from the due instant, and the server's CPU per firing (its
        claim, its send, its run's turn) against the relay floor's per request."""
        if self.options.llm != "fake":
            raise SystemExit("schedules counts its firings' LLM calls at the bench's fake "
                             "provider: run it with --llm fake")  # fmt: skip
        if self.options.base_url:
            raise SystemExit("schedules starts its own server: it does not take --base-url")
        async with self._provider(p["latency"]) as provider:
            async with self._server(self._data_dir("schedules"), provider, p["latency"]) as server:
                url = self._url(server)
                agents = await self._create(url, p["agents"])
                due = time.time() + p["lead"]
                await self._create_schedules(url, agents, p["messages"], due)
                if time.time() > due - _OPEN_BEFORE_S:
                    raise SystemExit(
                        f"creating {p['messages']} schedules took longer than the lead of "
                        f"{p['lead']:g} s: give fewer --messages"
                    )
                await trio.sleep(due - _OPEN_BEFORE_S - time.time())
                before = server.usage()
                provider_before = provider.usage()
                profiler = self._start_profiler("schedules", server)
                asked, called = await self._wait_for_calls(provider.url, p["messages"])
                settle = await self._settle(server)  # the last runs being stored
                after = server.usage()
                provider_after = provider.usage()
                if profiler is not None:
                    await self._stop_profiler(profiler)
                runs = await self._runs_of(url, agents)
            floor = await self._floor(provider, p["messages"], p["concurrency"])
        # The provider's count over the firings: 1 each, the fake provider's one-step turn.
        calls_each = (called - asked) // p["messages"] if p["messages"] else 0
        samples = _firing_samples(runs, due, p["messages"], calls_each)
        self.samples["schedules"] = samples
        result = summarize(samples, p["latency"])
        result["throughput_per_s"] = throughput_series(samples, min(s.start for s in samples))
        ok = result["messages"] - result["errors"]
        result["server"] = usage_delta(before, after, ok)
        result["provider"] = usage_delta(provider_before, provider_after, ok)
        result["activations_per_s"] = None
        # from the due instant to the last firing's run completed (the server's clock)
        took = max((s.end for s in samples if s.ok), default=samples[0].start) - samples[0].start
        result["firings"] = {
            "schedules": p["messages"],
            "agents": len(agents),
            "completed": ok,
            "runs": len(runs),  # one a firing: more would be a firing run twice
            "firings_per_s": round(ok / took, 1) if ok and took > 0 else None,
            "cpu_ms_per_firing": _rounded(result["server"]["cpu_ms_per_msg"]),
            "llm_calls": called - asked,
            "settle_s": settle,  # from the last LLM call to the server quiet: in the window
        }
        return self._finish("schedules", p, result, floor)

    async def _create_schedules(self, url: str, agents: list[str], count: int, due: float) -> None:
        """`count` one-time schedules due at `due` (epoch seconds), over the agents in turn."""
        advance = self.progress("creating schedules", count)
        due_ms = int(due * 1000)

        async def client(indices: range) -> None:
            conn = Connection(url, headers=self.options.headers)
            try:
                for i in indices:
                    body = {"messages": [{"role": "user", "content": f"scheduled #{i}"}],
                            "schedule": {"type": "one-time", "scheduled_at": due_ms}}  # fmt: skip
                    path = f"/v1/agents/{agents[i % len(agents)]}/schedule"
                    reply = await conn.request("POST", path, json.dumps(body).encode())
                    if reply.status not in (200, 201):
                        raise RuntimeError(
                            f"creating a schedule failed: {reply.status} {reply.body[:300]!r}"
                        )
                    advance()
            finally:
                await conn.aclose()

        clients = 16  # each on a connection of its own
        async with trio.open_nursery() as nursery:
            for c in range(clients):
                nursery.start_soon(client, range(c, count, clients))

    async def _wait_for_calls(self, provider_url: str, count: int) -> tuple[int, int]:
        """Wait until the provider has been asked for `count` more chat completions than
        when this began (or the give-up time passes); the counts before and after."""
        conn = Connection(provider_url)
        try:
            asked = called = await _count(conn)
            give_up = time.perf_counter() + 120 + count / 10
            advance = self.progress("schedules: firings' LLM calls", count)
            while called - asked < count and time.perf_counter() < give_up:
                await trio.sleep(_POLL_S)
                now = await _count(conn)
                for _ in range(min(now, asked + count) - called):  # the count only grows
                    advance()
                called = now
        finally:
            await conn.aclose()
        return asked, called

    async def _runs_of(self, url: str, agents: list[str]) -> list[dict[str, Any]]:
        """Every run of the agents (each agent's listing, in pages of 1,000)."""
        conn = Connection(url, headers=self.options.headers)
        runs: list[dict[str, Any]] = []
        try:
            for agent in agents:
                after = None
                while True:
                    path = f"/v1/runs/?agent_id={agent}&limit=1000&order=asc"
                    reply = await conn.request("GET", path + (f"&after={after}" if after else ""))
                    if reply.status != 200:
                        raise RuntimeError(f"listing runs failed: {reply.status} {reply.body!r}")
                    page = json.loads(reply.body)
                    runs.extend(page)
                    if len(page) < 1000:
                        break
                    after = page[-1]["id"]
        finally:
            await conn.aclose()
        return runs


async def _count(conn: Connection) -> int:
    reply = await conn.request("GET", COUNT_PATH)
    return int(json.loads(reply.body)["chat_completions"])


def _firing_samples(runs: list[dict[str, Any]], due: float, count: int, steps: int) -> list[Sample]:
    """A sample per firing, on the bench's perf_counter clock: from the due instant to its
    run's `completed_at` (200 when completed, 500 otherwise; `steps` LLM calls each); 599
    for each firing with no run at all. Runs are the agents' only ones: the scenario sends
    nothing else."""
    offset = time.perf_counter() - time.time()  # epoch seconds -> perf_counter
    start = due + offset
    samples = []
    for run in runs[:count]:
        completed = run.get("completed_at")
        if run.get("status") == "completed" and completed:
            end = datetime.datetime.fromisoformat(completed).timestamp() + offset
            agent = run.get("agent_id", "")
            samples.append(Sample(start, max(end, start), 200, steps=steps, agent=agent))
        else:
            samples.append(Sample(start, start, 500, agent=run.get("agent_id", "")))
    samples.extend(Sample(start, start, 599) for _ in range(count - len(samples)))
    return samples


def _rounded(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 2)
