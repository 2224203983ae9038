"""The model name a provider is asked for, in the simulator under LLM faults.

The simulated provider serves one model, `agent` (the provider's name behind the handle
`sim/agent`), and answers 404 to any other name, as OpenAI and Anthropic answer a handle. So a
turn that sent the handle would end in llm_api_error: here every step and every summary of a
long conversation, retried through faults, names `agent`, and turns end normally.
"""

from __future__ import annotations

from typing import Any

from kelpie_trio.llm.catalog import SIM_CHAT_HANDLE, SIM_CHAT_MODEL
from kelpie_trio.service import AgentService
from kelpie_trio.sim import SimWorld
from kelpie_trio.sim.llm import SimLlmClient
from kelpie_trio.sim.seeds import run_seeds
from tests.dst.agent_harness import new_agent, simulate


def conversation(seed: int) -> tuple[list[dict], list[Any]]:
    async def scenario(service: AgentService, llm: SimLlmClient, world: SimWorld) -> Any:
        default = await new_agent(service)  # no model given: the sim, without providers
        named = await new_agent(service, model=SIM_CHAT_HANDLE, context_window_limit=3_000)
        world.faults.enabled = True
        replies = []
        for i in range(6):
            for agent in (default, named):
                text = f"message {i}: " + "words " * 200  # the small window needs summaries
                replies.append(await service.send_message(agent, {"input": text}))
        world.faults.enabled = False
        return replies, list(llm.requests)

    return simulate(seed, scenario, "llm")


def test_dst_every_request_names_the_providers_model_not_the_handle() -> None:
    def one(seed: int) -> None:
        replies, requests = conversation(seed)
        assert requests and {r.model for r in requests} == {SIM_CHAT_MODEL}
        summaries = [
            r for r in requests if "You maintain the memory" in (r.messages[0].content or "")
        ]
        assert summaries  # the summary requests are among them
        stops = [r["stop_reason"]["stop_reason"] for r in replies]
        assert set(stops) <= {"end_turn", "llm_api_error"}
        assert stops.count("end_turn") > len(stops) // 2  # faults end some turns, not most

    run_seeds(one, 4)
