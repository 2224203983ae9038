"""Which LLM client an agent talks to, by its model handle.

`sim/...` handles get the simulator's SimLlmClient (offline, deterministic from
the injected RNG; a demo and test model, labeled so in /v1/models/). Other
handles go to the provider factory once one is installed; without it, the turn
ends with stop reason llm_api_error and says why, rather than failing the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from kelpie_trio.env import Env
from kelpie_trio.llm.types import LlmClient, LlmFailure, LlmRequest, LlmResponse, LlmStreamEvent
from kelpie_trio.sim.llm import SimLlmClient

__all__ = ["llm_factory"]


class _Unconfigured(LlmClient):
    def __init__(self, handle: str) -> None:
        self.handle = handle

    async def complete(self, request: LlmRequest) -> LlmResponse:
        raise LlmFailure(f"no provider is configured for model {self.handle!r}")

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmStreamEvent]:
        raise LlmFailure(f"no provider is configured for model {self.handle!r}")
        yield  # pragma: no cover - makes this an async generator


def llm_factory(
    env: Env,
    *,
    sim_latency: tuple[float, float] = (0.0, 0.0),
    providers: Callable[[dict[str, Any]], LlmClient] | None = None,
) -> Callable[[Any], LlmClient]:
    def llm_for(agent: Any) -> LlmClient:
        handle = agent.model or ""
        if handle.startswith("sim/"):
            return SimLlmClient(env.rng, latency=sim_latency, name=handle)
        if providers is not None:
            return providers(agent.llm_config)
        return _Unconfigured(handle)

    return llm_for
