"""Tool rules in the simulator: a model that often ignores what it is offered, storage and LLM
faults, and the real agent actor. Whatever the model does and whatever fails, the history the
store keeps obeys the rules: the run_first tool is the first call of every turn that ran one,
a child constraint is never broken, a max count is never passed, a terminal tool ends its turn
exactly once (and only when the required tool ran), and no call is stored twice.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from kelpie_trio.llm.types import LlmRequest, LlmResponse
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.llm import SimLlmClient, text, tool_call
from kelpie_trio.sim.seeds import run_seeds
from tests.dst.agent_harness import history_of, new_agent, simulate
from tests.dst.test_dst_runs import send_until_answered

TOOLS = ["conversation_search", "memory_insert", "memory_replace", "memory_rethink"]
RULES = [
    {"type": "run_first", "tool_name": "conversation_search"},
    {"type": "constrain_child_tools", "tool_name": "memory_insert", "children": ["memory_rethink"]},
    {"type": "exit_loop", "tool_name": "memory_rethink"},
    {"type": "max_count_per_step", "tool_name": "conversation_search", "max_count_limit": 2},
    {"type": "required_before_exit", "tool_name": "memory_insert"},
]
TURNS = 4
MAX_STEPS = 10
FAULTS = FaultConfig(
    {**dict.fromkeys(STORAGE_FAULTS, 0.04), FaultType.LLM_FAILURE: 0.05,
     FaultType.AGENT_LOOP_PANIC: 0.05}
)  # fmt: skip


def unruly_model(seed: int) -> Any:
    """A model that follows what it is offered most of the time, and otherwise calls any
    tool the agent has (or answers in plain text when a call is required)."""
    rng = random.Random(seed)

    def args(name: str) -> dict[str, Any]:
        if name == "conversation_search":
            return {"query": "tea"}
        if name == "memory_insert":
            return {"label": "human", "new_string": f"fact {rng.randrange(100)}"}
        if name == "memory_replace":
            return {"label": "human", "old_string": "Ada", "new_string": "Ada"}
        return {"label": "notes", "new_memory": f"note {rng.randrange(100)}"}

    def reply(request: LlmRequest) -> LlmResponse:
        offered = [t.name for t in request.tools]
        roll = rng.random()
        if roll < 0.3:  # disobeys: anything the agent has
            name = rng.choice(TOOLS)
        elif request.forced_tool is not None:
            name = request.forced_tool
        elif request.tool_choice != "required" and roll > 0.85:
            return text("All done.")
        else:
            name = rng.choice(offered)
        return tool_call(name, args(name), call_id=f"call_{rng.getrandbits(32):08x}")

    return reply


def check_turn(turn: list[Any], stop: str | None) -> None:
    """The rules, read off one turn's stored messages (in order)."""
    calls = {c.id: c.name for m in turn if m.role == "assistant" for c in m.tool_calls}
    results = [m for m in turn if m.role == "tool"]
    assert len({r.tool_call_id for r in results}) == len(results), "a call stored twice"
    assert set(calls) == {r.tool_call_id for r in results}, "a call without its one result"
    refused = {r.tool_call_id for r in results if (r.content or "").startswith("[ToolConstraint")}
    ran = [calls[r.tool_call_id] for r in results if r.tool_call_id not in refused]
    if ran:
        assert ran[0] == "conversation_search", f"run_first broken: {ran}"
    for before, after in itertools.pairwise(ran):
        if before == "memory_insert":
            assert after == "memory_rethink", f"child rule broken: {ran}"
    assert ran.count("conversation_search") <= 2, f"max count passed: {ran}"
    # The terminal tool, once the required tool ran, ends the turn: nothing runs after it,
    # the model is not asked again, and the run says a tool rule stopped it.
    ends = [j for j, n in enumerate(ran) if n == "memory_rethink" and "memory_insert" in ran[:j]]
    if ends:
        assert ends[0] == len(ran) - 1, f"a terminal tool did not end the turn: {ran}"
        assert stop in ("tool_rule", "max_steps"), stop  # on the last step, Letta says max_steps
        last_reply = max((m for m in turn if m.role == "assistant"), key=lambda m: m.seq)
        assert [c.name for c in last_reply.tool_calls] == ["memory_rethink"], "asked again"
    if stop in ("end_turn", "tool_rule"):
        assert "memory_insert" in ran, f"ended before the required tool ran: {ran}"


def test_dst_tool_rules_hold_in_the_stored_history_under_faults() -> None:
    refusals: list[int] = []
    ended_by_rule: list[str] = []

    def one(seed: int) -> None:
        async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
            world.faults.enabled = False
            agent = await new_agent(service, tools=["memory_rethink"], tool_rules=RULES)
            world.faults.enabled = True
            stops = {}
            for i in range(TURNS):
                body = {"messages": [{"role": "user", "content": f"m{i}", "otid": f"o{i}"}],
                        "max_steps": MAX_STEPS}  # fmt: skip
                reply = await send_until_answered(service, agent, body)
                stops[f"o{i}"] = reply["stop_reason"]["stop_reason"]
            world.faults.enabled = False
            return stops, await history_of(service, agent)

        model = unruly_model(seed)
        stops, history = simulate(seed, scenario, FAULTS, script=[model] * 400)
        for otid, stop in stops.items():
            (user,) = [m for m in history if m.role == "user" and m.otid == otid]
            check_turn([m for m in history if m.run_id == user.run_id], stop)
        refusals.append(sum((m.content or "").startswith("[ToolConstraint") for m in history))
        ended_by_rule.extend(s for s in stops.values() if s == "tool_rule")

    seeds = run_seeds(one, 10)
    # The rules were put to the test: the model broke them, and they ended turns.
    if seeds > 1:  # what the sweep must have exercised (a replayed seed checks itself)
        assert sum(refusals) >= 10 and len(ended_by_rule) >= 5, (refusals, ended_by_rule)
