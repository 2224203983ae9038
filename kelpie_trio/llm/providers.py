"""From an agent's `llm_config` to the provider client that serves it.

`client_for` reads `model_endpoint_type` and `model_endpoint` (as the catalog wrote them) and
the keys in `CatalogConfig`. A key only ever goes to the endpoint it was configured for: an
`llm_config` can arrive from outside (an imported agent file), and one naming some other URL
must not be able to collect this server's OpenAI or Anthropic key. Such configs, unknown
endpoint types and providers without a key are refused with `ProviderUnavailable`.

Simulated handles (`sim/...`, `sim://` endpoints) are not providers: the caller runs them on
`SimLlmClient` and must not ask here. Retries are not added here either; wrap the client in
`RetryingLlmClient` (retry.py) with the node's `Env`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kelpie_trio.llm.anthropic import AnthropicClient
from kelpie_trio.llm.config import ANTHROPIC_BASE_URL, OPENAI_BASE_URL, CatalogConfig
from kelpie_trio.llm.openai_compat import DEFAULT_TIMEOUT, OpenAiCompatibleClient

__all__ = ["OPENAI_COMPATIBLE_TYPES", "ProviderClient", "ProviderUnavailable", "client_for"]

# Endpoint types spoken over the OpenAI chat completions API (the catalog writes "openai" for
# local servers too, as Letta does; the others are Letta's names for the same servers).
OPENAI_COMPATIBLE_TYPES = frozenset({"openai", "vllm", "ollama", "llamacpp"})

ProviderClient = OpenAiCompatibleClient | AnthropicClient


class ProviderUnavailable(ValueError):
    """This server has no provider for the model an `llm_config` names."""


def _url(value: Any) -> str:
    return str(value or "").strip().rstrip("/")


def client_for(
    llm_config: Mapping[str, Any],
    catalog_config: CatalogConfig,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> ProviderClient:
    """A new client for `llm_config`'s provider; the caller closes it with `aclose()`."""
    endpoint_type = llm_config.get("model_endpoint_type")
    endpoint = _url(llm_config.get("model_endpoint"))
    handle = str(llm_config.get("handle") or "")
    if endpoint.startswith("sim:") or handle.startswith("sim/"):
        raise ProviderUnavailable(
            f"{handle or endpoint!r} is a simulated model: run it on SimLlmClient, "
            "not on a provider client"
        )
    if endpoint_type == "anthropic":
        return _anthropic(endpoint, catalog_config, timeout)
    if endpoint_type in OPENAI_COMPATIBLE_TYPES:
        return _openai_compatible(endpoint, str(endpoint_type), catalog_config, timeout)
    raise ProviderUnavailable(
        f"model_endpoint_type {endpoint_type!r} is not supported: this server speaks "
        f"{', '.join(sorted(OPENAI_COMPATIBLE_TYPES))} (OpenAI-compatible) and anthropic"
    )


def _anthropic(endpoint: str, config: CatalogConfig, timeout: float) -> AnthropicClient:
    if not config.anthropic_api_key:
        raise ProviderUnavailable("no anthropic provider is configured (set ANTHROPIC_API_KEY)")
    configured = config.anthropic_base_url
    # An agent stored with Anthropic's own endpoint follows a configured proxy.
    if endpoint and endpoint not in (_url(configured), _url(ANTHROPIC_BASE_URL)):
        raise ProviderUnavailable(
            f"anthropic endpoint {endpoint!r} is not the one configured ({configured})"
        )
    return AnthropicClient(config.anthropic_api_key, base_url=configured, timeout=timeout)


def _openai_compatible(
    endpoint: str, endpoint_type: str, config: CatalogConfig, timeout: float
) -> OpenAiCompatibleClient:
    for local in config.local_servers:
        if endpoint in (_url(local.openai_base_url), _url(local.base_url)) or (
            not endpoint and endpoint_type == local.kind
        ):
            return OpenAiCompatibleClient(local.openai_base_url, local.api_key, timeout=timeout)
    if config.openai_enabled:
        base = _url(config.openai_base_url or OPENAI_BASE_URL)
        # Agents made for api.openai.com follow OPENAI_BASE_URL when it is set: the operator
        # has said where OpenAI models are served.
        if endpoint in ("", base, _url(OPENAI_BASE_URL)) and endpoint_type == "openai":
            # Only OpenAI's own API refuses max_tokens (for its reasoning models).
            field = "max_completion_tokens" if base == _url(OPENAI_BASE_URL) else "max_tokens"
            return OpenAiCompatibleClient(
                base, config.openai_api_key, timeout=timeout, max_tokens_field=field
            )
    configured = [(config.openai_base_url or OPENAI_BASE_URL)] if config.openai_enabled else []
    configured += [local.openai_base_url for local in config.local_servers]
    raise ProviderUnavailable(
        f"{endpoint_type} endpoint {endpoint or '(none)'!r} is not one this server is "
        f"configured for (configured: {', '.join(configured) or 'none'})"
    )
