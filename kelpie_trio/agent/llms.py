"""Which LLM client an agent talks to, by its model handle, always behind the retry policy.

`sim/...` handles get the simulator's SimLlmClient (offline, deterministic from
the injected RNG; a demo and test model, labeled so in /v1/models/). Other
handles get their provider's client (OpenAI-compatible or Anthropic, one per
endpoint, reused across turns). Every client is wrapped in RetryingLlmClient,
so a 429, a 5xx or a timeout is retried with backoff the same way whether it
comes from a provider or from the simulator's LLM faults. A handle no
provider is configured for ends the turn with stop reason llm_api_error and
says why, rather than failing the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from kelpie_trio.env import Env
from kelpie_trio.llm.catalog import CatalogConfig
from kelpie_trio.llm.providers import ProviderUnavailable, client_for
from kelpie_trio.llm.retry import RetryingLlmClient
from kelpie_trio.llm.types import LlmClient, LlmFailure, LlmRequest, LlmResponse, LlmStreamEvent
from kelpie_trio.sim.llm import SimLlmClient

__all__ = ["llm_factory"]


class _Unavailable(LlmClient):
    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def complete(self, request: LlmRequest) -> LlmResponse:
        raise LlmFailure(self.reason, status=400)  # a 4xx: not retried

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmStreamEvent]:
        raise LlmFailure(self.reason, status=400)
        yield  # pragma: no cover - makes this an async generator


def llm_factory(
    env: Env,
    *,
    catalog_config: CatalogConfig | None = None,
    sim_latency: tuple[float, float] = (0.0, 0.0),
) -> Callable[[Any], LlmClient]:
    config = catalog_config or CatalogConfig.from_env()
    providers: dict[tuple[str, str], LlmClient] = {}

    def llm_for(agent: Any) -> LlmClient:
        handle = agent.model or ""
        if handle.startswith("sim/"):
            return RetryingLlmClient(SimLlmClient(env.rng, latency=sim_latency, name=handle), env)
        llm_config = agent.llm_config or {}
        key = (str(llm_config.get("model_endpoint_type")), str(llm_config.get("model_endpoint")))
        if key not in providers:
            try:
                providers[key] = RetryingLlmClient(client_for(llm_config, config), env)
            except ProviderUnavailable as error:
                return _Unavailable(f"model {handle!r}: {error}")
        return providers[key]

    return llm_for
