"""The conversations scenario (a mixin of bench/scenarios.py's Runner): many conversations
of a few agents at once, each one a thread of its own (its own actor), all of an agent's
threads sharing its memory blocks, its run list and its search stream."""

from __future__ import annotations

import json
from typing import Any

from bench.http1 import Connection
from bench.mixin import RunnerPart

__all__ = ["Conversations"]


def _conversation_path(conversation: str) -> str:
    return f"/v1/conversations/{conversation}/messages"


class Conversations(RunnerPart):
    async def scenario_conversations(self, p: dict[str, Any]) -> dict[str, Any]:
        """`agents` agents with `threads` conversations each, every conversation waiting for
        its reply (SSE, the route's default) as steady's clients do: what a message costs
        when an agent's threads run at once, beside steady's one thread per agent."""
        async with self._provider(p["latency"]) as provider:
            async with self._server(
                self._data_dir("conversations"), provider, p["latency"]
            ) as server:
                url = self._url(server)
                agents = await self._create(url, p["agents"])
                threads = await self._create_conversations(url, agents, p["threads"])
                warm = max(len(threads), p["concurrency"])
                await self._load(
                    "conversations: warm-up", url, threads, warm,
                    min(p["concurrency"], len(threads)), path_for=_conversation_path,
                    streaming=True,
                )  # fmt: skip
                measured = await self._measured(
                    "conversations", url, [server], provider, threads, p["messages"],
                    p["concurrency"], p["latency"], path_for=_conversation_path,
                    streaming=True,
                )  # fmt: skip
            floor = await self._floor(provider, p["messages"], p["concurrency"])
        measured["conversations"] = {"agents": len(agents), "per_agent": p["threads"]}
        return self._finish("conversations", p, measured, floor)

    async def _create_conversations(self, url: str, agents: list[str], each: int) -> list[str]:
        """`each` conversations per agent, interleaved so neighbouring workers hit different
        agents' threads as well as the same agent's."""
        advance = self.progress("creating conversations", len(agents) * each)
        conn = Connection(url, headers=self.options.headers)
        made: list[list[str]] = []
        try:
            for agent in agents:
                mine = []
                for _ in range(each):
                    path = f"/v1/conversations/?agent_id={agent}"  # a query, as Letta's
                    reply = await conn.request("POST", path, b"{}")
                    if reply.status not in (200, 201):
                        raise RuntimeError(
                            f"creating a conversation failed: {reply.status} {reply.body!r}"
                        )
                    mine.append(json.loads(reply.body)["id"])
                    advance()
                made.append(mine)
        finally:
            await conn.aclose()
        return [c for round_ in zip(*made, strict=True) for c in round_]
