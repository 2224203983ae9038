"""The mcp-calls scenario (a mixin of bench/scenarios.py's Runner): every message's turn
calls a tool of a real MCP server (bench/mcp_echo.py over stdio, registered through the
API), then answers with its result."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.fake_provider import MCP_TOOL
from bench.http1 import Connection
from bench.load import read_metrics
from bench.mixin import RunnerPart

__all__ = ["McpCalls"]

_SERVER = Path(__file__).with_name("mcp_echo.py")


class McpCalls(RunnerPart):
    async def scenario_mcp_calls(self, p: dict[str, Any]) -> dict[str, Any]:
        """Each message's turn calls `bench_add` on a stdio MCP server and then answers:
        one MCP call, two LLM calls per message. Reports MCP calls per second and the
        server's CPU per call (the MCP server's own process is not counted)."""
        if self.options.llm != "fake":
            raise SystemExit("mcp-calls needs the fake provider (--llm fake)")
        async with self._provider(p["latency"]) as provider:
            async with self._server(self._data_dir("mcp-calls"), provider, p["latency"]) as server:
                url = self._url(server)
                agents = await self._create_mcp_agents(url, p["agents"])
                warm = max(p["agents"], p["concurrency"])
                await self._load(
                    "mcp-calls: warm-up", url, agents, warm, min(p["concurrency"], len(agents))
                )
                measured = await self._measured(
                    "mcp-calls", url, [server], provider, agents, p["messages"],
                    p["concurrency"], p["latency"],
                )  # fmt: skip
                counted = await read_metrics(url, self.options.headers)
            floor = await self._floor(provider, p["messages"], p["concurrency"])
        steps = [s.steps for s in self.samples["mcp-calls"] if s.ok]
        measured["mcp"] = {
            "calls_per_s": measured["msgs_per_s"],
            "cpu_ms_per_call": measured["server"]["cpu_ms_per_msg"],
            # 2: every turn called the tool (step 1) and answered with its result (step 2).
            "turn_steps_mean": round(sum(steps) / len(steps), 2) if steps else None,
            # The server's own count, warm-up included: calls made, and those that failed.
            "calls_total": counted.get("kelpie_mcp_calls_total"),
            "failures_total": counted.get("kelpie_mcp_call_failures_total", 0.0),
        }
        return self._finish("mcp-calls", p, measured, floor)

    async def _create_mcp_agents(self, url: str, count: int) -> list[str]:
        """Register the MCP server, and `count` agents with its tool attached."""
        model, embedding = self.options.handles()
        advance = self.progress("creating agents", count)
        conn = Connection(url, headers=self.options.headers)

        async def call(method: str, path: str, body: Any = None) -> Any:
            data = None if body is None else json.dumps(body).encode()
            reply = await conn.request(method, path, data)
            if reply.status not in (200, 201):
                raise RuntimeError(f"{method} {path} failed: {reply.status} {reply.body!r}")
            return json.loads(reply.body)

        try:
            config = {"mcp_server_type": "stdio", "command": sys.executable,
                      "args": [str(_SERVER)]}  # fmt: skip
            server = await call("POST", "/v1/mcp-servers/",
                                {"server_name": "bench", "config": config})  # fmt: skip
            tools = await call("GET", f"/v1/mcp-servers/{server['id']}/tools")
            [tool] = [t["id"] for t in tools if t["name"] == MCP_TOOL]
            agents = []
            for i in range(count):
                body = {"name": f"mcp-{i}", "model": model, "embedding": embedding,
                        "system": "You add numbers. BENCH-MCP"}  # fmt: skip
                agent = (await call("POST", "/v1/agents/", body))["id"]
                await call("PATCH", f"/v1/agents/{agent}/tools/attach/{tool}")
                agents.append(agent)
                advance()
        finally:
            await conn.aclose()
        return agents
