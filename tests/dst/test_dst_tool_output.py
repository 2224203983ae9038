"""Custom tool results with their prints and limit errors, stored once under faults.

The sandbox hands back stdout, stderr and (for a call a limit ended) which limit; the
agent keeps the prints with the tool_return message. Under storage faults, tool faults
(a timeout with what was printed so far, an exception, a limit) and agent panics, every
call of a turn has exactly one stored result, and that result's text, status and prints
are one outcome of that very call, never a mix of two calls or of two attempts.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import trio

from kelpie_trio.sim import FaultConfig, FaultType
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.llm import text, tool_call
from kelpie_trio.sim.seeds import across_seeds, run_seeds
from kelpie_trio.sim.tools import _FAILURES
from kelpie_trio.tools.sandbox import ToolResult, timed_out
from tests.dst.agent_harness import CLEAN, AgentCluster, history_of, new_agent, simulate_cluster

ROLL = '''
def roll(n: int) -> int:
    """Roll.

    Args:
        n: which roll
    """
    return n
'''
STEPS = 6
FAULTS = FaultConfig(
    {
        **dict.fromkeys(STORAGE_FAULTS, 0.03),
        FaultType.TOOL_TIMEOUT: 0.15,
        FaultType.TOOL_FAIL: 0.2,
        FaultType.AGENT_LOOP_PANIC: 0.03,
    }
)


def scripted(tool: Any, args: dict) -> ToolResult:
    """What the tool does for roll n: prints, and every third call runs out of memory."""
    n = args["n"]
    if n % 3 == 0:
        return ToolResult(
            "error",
            stdout=[f"roll {n}"],
            stderr=["MemoryError"],
            error="memory limit exceeded (512 MB)",
            limit="memory",
        )
    return ToolResult("success", func_return=n, stdout=[f"roll {n}"], stderr=[f"warn {n}"])


def outcomes(n: int) -> set[tuple[Any, ...]]:
    """Every (status, text, stdout, stderr) a stored result of roll n may hold."""
    possible = [scripted(None, {"n": n}), timed_out(5.0, ["roll started"]), *_FAILURES]
    shown = set()
    for r in possible:
        body = str(r.func_return) if r.status == "success" else r.error
        shown.add((r.status, body, tuple(r.stdout), tuple(r.stderr)))
    return shown


def keyed_to_step(replies: list) -> list:
    # Each reply chosen by the step asking, so a retried model call does not shift the turn.
    def reply(request: Any) -> Any:
        return replies[min(sum(m.role == "assistant" for m in request.messages), len(replies) - 1)]

    return [reply] * (8 * len(replies))


def test_dst_tool_output_and_limit_errors_are_stored_once_with_their_call() -> None:
    chain = [
        tool_call("roll", {"n": i, "request_heartbeat": True}, call_id=f"r{i}")
        for i in range(STEPS)
    ]
    fired: Counter[str] = Counter()

    def one(seed: int) -> None:
        async def scenario(sim: AgentCluster) -> Any:
            service = sim.service()
            tool = await service.create_tool({"source_code": ROLL})
            agent = await new_agent(service, agent_type="memgpt_v2_agent", tool_ids=[tool.id])
            body = {"messages": [{"role": "user", "content": "go", "otid": "o1"}],
                    "max_steps": 20}  # fmt: skip
            sim.world.faults.enabled = True
            for _ in range(60):  # a client retrying with the same otid until answered
                try:  # recorded: a hang fails the run (EveryRequestAnswered)
                    await sim.send(sim.names[0], agent, body)
                    break
                except CLEAN:
                    await trio.sleep(1)
            sim.world.faults.enabled = False
            return await history_of(service, agent)

        history = simulate_cluster(
            seed,
            scenario,
            FAULTS,
            script=keyed_to_step([*chain, text("Done.")]),
            tools=scripted,
            quiet_start=True,
        )
        results = [m for m in history if m.role == "tool"]
        calls = [c.id for m in history if m.role == "assistant" for c in m.tool_calls]
        # One stored result per call made (a retried model call may reuse an id, so count).
        assert Counter(m.tool_call_id for m in results) == Counter(calls)
        for m in results:
            n = int(m.tool_call_id[1:])
            stored = (m.tool_status, m.content, tuple(m.tool_stdout), tuple(m.tool_stderr))
            assert stored in outcomes(n), stored
            fired[m.content.split(" (")[0].split(":")[0]] += 1

    # The seeds saw prints with successes, limit errors and both tool faults.
    if across_seeds(run_seeds(one, 6), 6):
        assert fired["memory limit exceeded"] and fired["timed out after 5 s"], fired
        assert any(k.isdigit() for k in fired), fired
