"""The context window in the simulator: a long conversation on a small window.

Every request the model gets fits the agent's window; when the history outgrows
it, the oldest messages are summarized by the model (or recapped when the model
fails) and the summary travels in the prompt; the stored history keeps everything.
"""

from __future__ import annotations

from typing import Any

from kelpie_trio.agent.context import DEFAULT_REPLY_TOKENS, estimate_tokens
from kelpie_trio.llm.types import LlmRequest, LlmResponse
from kelpie_trio.service import AgentService
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.llm import SimLlmClient, text
from kelpie_trio.sim.seeds import run_seeds
from tests.dst.agent_harness import history_of, new_agent, simulate

WINDOW = 6_000  # tokens; a message below is about 500


def is_summary(request: LlmRequest) -> bool:
    return "You maintain the memory" in (request.messages[0].content or "")


def responder(request: LlmRequest) -> LlmResponse:
    if is_summary(request):
        return text("Ada talked about topics " + ", ".join(
            m.content[:12] for m in request.messages[1:] if m.content
        ))  # fmt: skip
    return text("Noted.")


def long_conversation(seed: int, faults: FaultConfig | str) -> tuple[list, list, list]:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        agent = await new_agent(service, context_window_limit=WINDOW)
        world.faults.enabled = True
        replies = [
            await service.send_message(agent, {"input": f"topic {i}: " + "words " * 330})
            for i in range(20)
        ]
        world.faults.enabled = False
        return replies, llm.requests, await history_of(service, agent)

    return simulate(seed, scenario, faults, script=[responder] * 200)


def test_dst_a_long_conversation_fits_the_window_through_summaries() -> None:
    replies, requests, history = long_conversation(40, "none")
    assert all(r["stop_reason"]["stop_reason"] == "end_turn" for r in replies)
    budget = WINDOW - min(DEFAULT_REPLY_TOKENS, WINDOW // 4)
    steps = [r for r in requests if not is_summary(r)]
    assert all(estimate_tokens(r.messages, r.tools) <= budget for r in steps)
    summaries = [r for r in requests if is_summary(r)]
    assert 1 <= len(summaries) < len(steps) // 2  # now and then, not every step
    last = steps[-1].messages[1].content
    assert "earlier messages" in last and "Ada talked about" in last
    assert len(history) == 40  # evicted from the prompt, never from the store


def test_dst_summaries_survive_a_failing_model() -> None:
    faults = FaultConfig({FaultType.LLM_FAILURE: 0.3})

    def one(seed: int) -> None:
        replies, requests, history = long_conversation(seed, faults)
        budget = WINDOW - min(DEFAULT_REPLY_TOKENS, WINDOW // 4)
        steps = [r for r in requests if not is_summary(r)]
        assert all(estimate_tokens(r.messages, r.tools) <= budget for r in steps)
        stops = {r["stop_reason"]["stop_reason"] for r in replies}
        assert stops <= {"end_turn", "llm_api_error"} and "end_turn" in stops
        assert len([m for m in history if m.role == "user"]) == 20

    run_seeds(one, 6)
