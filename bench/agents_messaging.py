"""The agents-messaging scenario (a mixin of bench/scenarios.py's Runner): agents asking
agents with send_message_to_agent_and_wait_for_reply, each message one hop."""

from __future__ import annotations

from typing import Any

from bench.fake_provider import ASK_TOOL
from bench.mixin import RunnerPart

__all__ = ["AgentsMessaging"]


class AgentsMessaging(RunnerPart):
    async def scenario_agents_messaging(self, p: dict[str, Any]) -> dict[str, Any]:
        """Agents messaging agents: each message goes to an asker, whose turn asks its own
        worker with send_message_to_agent_and_wait_for_reply and answers with the worker's
        reply: one agent-to-agent hop per message, three LLM calls and two turns. Reports
        hops per second and the server's CPU per hop (and per turn)."""
        if self.options.llm != "fake":
            raise SystemExit("agents-messaging needs the fake provider (--llm fake)")
        async with self._provider(p["latency"]) as provider:
            async with self._server(
                self._data_dir("agents-messaging"), provider, p["latency"]
            ) as server:
                url = self._url(server)
                workers = await self._create(url, p["agents"], "creating workers")
                askers = await self._create_askers(url, workers)
                warm = max(p["agents"], p["concurrency"])
                await self._load(
                    "agents-messaging: warm-up", url, askers, warm,
                    min(p["concurrency"], len(askers)),
                )  # fmt: skip
                measured = await self._measured(
                    "agents-messaging", url, [server], provider, askers, p["messages"],
                    p["concurrency"], p["latency"],
                )  # fmt: skip
            floor = await self._floor(provider, p["messages"], p["concurrency"])
        cpu = measured["server"]["cpu_ms_per_msg"]
        # 2 when every asker's turn asked (step 1) and answered (step 2): the hop took place.
        steps = [s.steps for s in self.samples["agents-messaging"] if s.ok]
        measured["hops"] = {
            "hops_per_s": measured["msgs_per_s"],
            "cpu_ms_per_hop": cpu,
            "cpu_ms_per_turn": round(cpu / 2, 4) if cpu is not None else None,
            "asker_steps_mean": round(sum(steps) / len(steps), 2) if steps else None,
        }
        return self._finish("agents-messaging", p, measured, floor)

    async def _create_askers(self, url: str, workers: list[str]) -> list[str]:
        """One asker per worker; the fake provider reads whom to ask from its system prompt."""
        model, embedding = self.options.handles()
        bodies = [{"name": f"asker-{i}", "model": model, "embedding": embedding,
                   "system": f"You ask another agent. BENCH-ASK:{worker}", "tools": [ASK_TOOL]}
                  for i, worker in enumerate(workers)]  # fmt: skip
        return await self._create_each(url, bodies, "creating askers")
