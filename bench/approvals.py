"""The approvals scenario (a mixin of bench/scenarios.py's Runner): each unit of load is a
tool call that waits for the client's approval: the message, the turn parking on the call,
the client's approval, the call run and the turn's end."""

from __future__ import annotations

import json
from typing import Any

from bench.fake_provider import APPROVE_TOOL
from bench.http1 import Connection, Reply
from bench.mixin import RunnerPart

__all__ = ["Approvals"]

_RULES = [{"type": "requires_approval", "tool_name": APPROVE_TOOL}]


async def approve_once(conn: Connection, agent: str, body: bytes) -> Reply:
    """Send the message, then approve the call it parked on: the approved turn's reply, or
    a 599 when the first reply did not ask for an approval (counted as an error)."""
    path = f"/v1/agents/{agent}/messages"
    asked = await conn.request("POST", path, body)
    if asked.status != 200:
        return asked
    messages = json.loads(asked.body).get("messages") or []
    requests = [m for m in messages if m.get("message_type") == "approval_request_message"]
    if not requests:
        return Reply(599, asked.headers, b"no approval was asked for")
    answers = [{"type": "approval", "tool_call_id": requests[-1]["tool_call"]["tool_call_id"],
                "approve": True}]  # fmt: skip
    approval = {"messages": [{"type": "approval", "approvals": answers}]}
    return await conn.request("POST", path, json.dumps(approval).encode())


class Approvals(RunnerPart):
    async def scenario_approvals(self, p: dict[str, Any]) -> dict[str, Any]:
        """Human in the loop at load: every message makes its agent call memory_insert,
        which its tool rules make wait for approval; the client approves at once and the
        turn goes on. Two requests, two LLM calls and two turns' checkpoints per unit:
        reports approved calls per second and the server's CPU per approved call."""
        if self.options.llm != "fake":
            raise SystemExit("approvals needs the fake provider (--llm fake)")
        async with self._provider(p["latency"]) as provider:
            async with self._server(self._data_dir("approvals"), provider, p["latency"]) as server:
                url = self._url(server)
                agents = await self._create_parking(url, p["agents"])
                warm = max(p["agents"], p["concurrency"])
                await self._load(
                    "approvals: warm-up", url, agents, warm, min(p["concurrency"], len(agents)),
                    exchange=approve_once,
                )  # fmt: skip
                measured = await self._measured(
                    "approvals", url, [server], provider, agents, p["messages"],
                    p["concurrency"], p["latency"], exchange=approve_once,
                )  # fmt: skip
            floor = await self._floor(provider, p["messages"], p["concurrency"])
        steps = [s.steps for s in self.samples["approvals"] if s.ok]
        cpu = measured["server"]["cpu_ms_per_msg"]
        measured["approvals"] = {
            "approved_per_s": measured["msgs_per_s"],
            "cpu_ms_per_approved_call": cpu,
            # 2: the run's two LLM calls (the call, then the answer once it ran) were made.
            "run_steps_mean": round(sum(steps) / len(steps), 2) if steps else None,
        }
        return self._finish("approvals", p, measured, floor)

    async def _create_parking(self, url: str, count: int) -> list[str]:
        """Agents whose first step calls memory_insert, which needs approval."""
        model, embedding = self.options.handles()
        block = {"label": "human", "value": "", "limit": 100_000}
        bodies = [{"name": f"parking-{i}", "model": model, "embedding": embedding,
                   "system": "You keep notes. BENCH-APPROVE", "tool_rules": _RULES,
                   "memory_blocks": [block]} for i in range(count)]  # fmt: skip
        return await self._create_each(url, bodies, "creating agents")
