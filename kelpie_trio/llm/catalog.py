"""Which models this server offers, and the Letta-shaped records that describe them (sans-IO).

A model is named by a handle, `provider/model` (`openai/gpt-4o-mini`, `sim/agent`). For each
handle the catalog fills in what Letta 0.16.8 would: the `llm_config` an agent created with
`model=<handle>` carries, the `embedding_config` for `embedding=<handle>`, the agent's
`model_settings`, and the `/v1/models/` and `/v1/models/embedding` list entries. The SDK's own
tests compare some of these objects as whole dicts, so the values follow Letta's code paths
(the provider lists it syncs into its database, `get_llm_config_from_handle`, the
`letta_v1_agent` reasoning policy, `LLMConfig._to_model_settings`), not the schema defaults.

Nothing here does I/O. Like Letta, the server asks each provider for its models at start
(discovery.py) and hands the answers in as `DiscoveredModel`s; a provider that could not be
asked offers a fixed set instead: the usual models of OpenAI and Anthropic, the models named in
the configuration for a local OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio).

The simulated models (`sim/agent`, `sim/embedding`) are always offered and say so wherever a
client looks: `provider_name`, `display_name` and a `sim://` endpoint that no HTTP client can
reach by accident.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from kelpie_trio.llm.config import (
    ANTHROPIC_BASE_URL,
    OPENAI_BASE_URL,
    CatalogConfig,
    LocalEmbedding,
    LocalServer,
)
from kelpie_trio.llm.model_traits import (
    apply_v1_reasoning,
    hides_reasoning,
    model_settings_from_llm_config,
    takes_images,
    thinking_budget,
)

__all__ = [
    "ANTHROPIC_BASE_URL",
    "OPENAI_BASE_URL",
    "SIM_CHAT_HANDLE",
    "SIM_CHAT_MODEL",
    "SIM_EMBEDDING_DIM",
    "SIM_EMBEDDING_HANDLE",
    "SIM_ENDPOINT",
    "SIM_PROVIDER_NAME",
    "CatalogConfig",
    "DiscoveredModel",
    "LocalEmbedding",
    "LocalServer",
    "ModelCatalog",
    "UnknownModel",
    "hides_reasoning",
    "model_settings_from_llm_config",
    "provider_model",
    "takes_images",
    "thinking_budget",
]

# Both endpoint-type enums (LLMConfig.model_endpoint_type, Model.provider_type) are closed, so
# the simulator cannot name itself there: it claims "openai", the closest kin (it implements the
# same LlmClient interface as the OpenAI-compatible provider, and its model_settings take the
# OpenAI shape every client knows). The free-text fields carry the truth instead.
SIM_PROVIDER_NAME = "sim (simulated, offline)"
# Not a URL any HTTP client can open: code that mistakes a sim config for a real OpenAI one fails
# loudly instead of falling back to api.openai.com (which a missing endpoint would invite).
SIM_ENDPOINT = "sim://offline"
SIM_CHAT_HANDLE = "sim/agent"
# The name the simulated provider knows its chat model by, as `gpt-4o-mini` is OpenAI's name for
# the handle `openai/gpt-4o-mini`: requests carry this, never the handle.
SIM_CHAT_MODEL = "agent"
SIM_EMBEDDING_HANDLE = "sim/embedding"
# The width of text-embedding-3-small, so archives and tests written for the usual OpenAI
# embedding model see the same shape from the simulated one.
SIM_EMBEDDING_DIM = 1536

# Letta 0.16.8 `model_settings.global_max_context_window_limit`: an agent's context window is
# the model's, capped at this, unless the request names `context_window_limit`.
GLOBAL_MAX_CONTEXT_WINDOW = 128_000
# Letta's LLM_MAX_CONTEXT_WINDOW["DEFAULT"]: the window of an OpenAI-listed model it knows
# nothing about (the OpenAI model list reports none).
_UNKNOWN_OPENAI_CONTEXT_WINDOW = 30_000
DEFAULT_EMBEDDING_CHUNK_SIZE = 300
# The EmbeddingConfig default. Letta's OpenAI provider says 1024, but agents and list entries are
# rebuilt from Letta's database, which does not keep it, so clients see 32.
_EMBEDDING_BATCH_SIZE = 32
# Letta's base Provider.get_default_max_output_tokens, used by vLLM and Ollama.
_LOCAL_MAX_TOKENS = 4096

# Letta's constants.PROVIDER_ORDER (the providers this catalog can offer); others sort after.
_PROVIDER_ORDER = {"letta": 0, "openai": 1, "anthropic": 2, "ollama": 3, "vllm": 9}

# (model, context window) of the usual OpenAI chat models. Context windows are Letta 0.16.8's
# (litellm's max_input_tokens); every one gets 16384 output tokens, the value Letta's
# `get_default_max_output_tokens` gives them when it rebuilds configs from its database.
_OPENAI_CHAT = (
    ("gpt-4.1", 1_047_576),
    ("gpt-4.1-mini", 1_047_576),
    ("gpt-4.1-nano", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-4o-mini", 128_000),
    ("gpt-5", 272_000),
    ("gpt-5-mini", 272_000),
    ("gpt-5-nano", 272_000),
    ("o3", 200_000),
    ("o4-mini", 200_000),
)
_OPENAI_MAX_TOKENS = 16_384
_OPENAI_EMBEDDING = (
    ("text-embedding-3-large", 3072),
    ("text-embedding-3-small", 1536),
    ("text-embedding-ada-002", 1536),
)
# Letta's hardcoded Anthropic MODEL_LIST gives 200k to every model.
_ANTHROPIC_CHAT = (
    "claude-haiku-4-5-20251001",
    "claude-opus-4-1-20250805",
    "claude-opus-4-5-20251101",
    "claude-opus-4-6",
    "claude-sonnet-4-20250514",
    "claude-sonnet-4-5-20250929",
    "claude-sonnet-4-6",
)
_ANTHROPIC_CONTEXT_WINDOW = 200_000


class UnknownModel(ValueError):
    """No model with this handle is offered (the API answers 4xx)."""

    def __init__(self, handle: str, known: Iterable[str], *, kind: str = "model") -> None:
        self.handle = handle
        self.known = tuple(known)
        shown = ", ".join(self.known[:6])
        more = f" and {len(self.known) - 6} more" if len(self.known) > 6 else ""
        provider = handle.split("/", 1)[0] if "/" in handle else None
        # The usual cause: a handle of a provider whose key was never given.
        hint = (
            f" (no {provider!r} provider is configured)"
            if provider and not any(h.startswith(provider + "/") for h in self.known)
            else ""
        )
        super().__init__(f"{kind} {handle!r} not found{hint}; known handles: {shown}{more}")


def provider_model(handle: str | None, llm_config: Mapping[str, Any] | None) -> str:
    """The name the provider knows an agent's model by: its llm_config's `model`.

    A handle (`openai/gpt-4o-mini`) is this server's name for a model, not the provider's:
    OpenAI, Anthropic, vLLM and Ollama answer 404 to it. Only an agent without a model name in
    its llm_config falls back to the handle's part after the provider prefix.
    """
    model = (llm_config or {}).get("model")
    if isinstance(model, str) and model:
        return model
    handle = handle or ""
    return handle.split("/", 1)[1] if "/" in handle else handle


@attrs.frozen
class _Llm:
    handle: str
    model: str
    endpoint_type: str  # LLMConfig.model_endpoint_type
    endpoint: str
    context_window: int  # the model's own maximum, before the global cap
    max_tokens: int
    provider_name: str
    display_name: str | None = None
    simulated: bool = False


@attrs.frozen
class _Embedding:
    handle: str
    model: str
    endpoint_type: str  # EmbeddingConfig.embedding_endpoint_type
    endpoint: str
    dim: int
    # Letta lists an embedding model's provider as its endpoint type ("openai" even for Ollama);
    # only the simulator departs from that, to say what it is.
    list_provider_name: str
    display_name: str | None = None
    simulated: bool = False


@attrs.frozen
class DiscoveredModel:
    """A model a provider listed when asked, with its context window when it reported one."""

    name: str
    context_window: int | None = None


# What discovery found, by provider: "openai", "anthropic", or a local server's handle prefix.
# A provider missing here could not be asked, and offers its fixed set.
Discovered = Mapping[str, Sequence[DiscoveredModel]]


def _sort_key(provider_name: str, model: str) -> tuple[int, str, str]:
    return (_PROVIDER_ORDER.get(provider_name, 999), provider_name, model)


def _openai_llms(config: CatalogConfig, found: Sequence[DiscoveredModel] | None) -> list[_Llm]:
    endpoint = config.openai_base_url or OPENAI_BASE_URL
    known = dict(_OPENAI_CHAT)
    if found is None:
        offered = list(_OPENAI_CHAT)
    else:
        # A model this table knows keeps its values (gpt-4o-mini as Letta fills it in); one it
        # does not gets the window it reported, else Letta's default.
        offered = [
            (m.name, known.get(m.name) or m.context_window or _UNKNOWN_OPENAI_CONTEXT_WINDOW)
            for m in found
        ]
    return [
        _Llm(f"openai/{m}", m, "openai", endpoint, cw, _OPENAI_MAX_TOKENS, "openai")
        for m, cw in offered
    ]


def _anthropic_llms(config: CatalogConfig, found: Sequence[DiscoveredModel] | None) -> list[_Llm]:
    if found is None:
        offered = [(m, _ANTHROPIC_CONTEXT_WINDOW) for m in _ANTHROPIC_CHAT]
    else:
        offered = [(m.name, m.context_window or _ANTHROPIC_CONTEXT_WINDOW) for m in found]
    return [
        _Llm(
            f"anthropic/{m}",
            m,
            "anthropic",
            config.anthropic_base_url,
            cw,
            _anthropic_max_tokens(m),
            "anthropic",
        )
        for m, cw in offered
    ]


def _local_llms(local: LocalServer, found: Sequence[DiscoveredModel] | None) -> list[_Llm]:
    if found is None:
        offered = [(m, local.context_window) for m in local.models]
    else:
        offered = [(m.name, m.context_window or local.context_window) for m in found]
    return [
        _Llm(
            f"{local.handle_prefix}/{m}",
            m,
            "openai",  # Letta's vLLM and Ollama providers both speak the OpenAI API
            local.openai_base_url,
            cw,
            _LOCAL_MAX_TOKENS,
            local.handle_prefix,
        )
        for m, cw in offered
    ]


def _offered_llms(config: CatalogConfig, discovered: Discovered) -> list[_Llm]:
    llms: list[_Llm] = []
    if config.openai_enabled:
        llms += _openai_llms(config, discovered.get("openai"))
    if config.anthropic_enabled:
        llms += _anthropic_llms(config, discovered.get("anthropic"))
    for local in config.local_servers:
        llms += _local_llms(local, discovered.get(local.handle_prefix))
    # Mirrors gpt-4o-mini, the model Letta's SDK tests use, so the sim can stand in for it.
    llms.append(
        _Llm(
            SIM_CHAT_HANDLE,
            SIM_CHAT_MODEL,
            "openai",
            SIM_ENDPOINT,
            128_000,
            16_384,
            SIM_PROVIDER_NAME,
            display_name="Simulated agent model (offline, deterministic; not a language model)",
            simulated=True,
        )
    )
    llms.sort(key=lambda e: _sort_key(e.provider_name, e.model))
    return llms


def _offered_embeddings(config: CatalogConfig) -> list[_Embedding]:
    embeddings: list[_Embedding] = []
    if config.openai_enabled:
        endpoint = config.openai_base_url or OPENAI_BASE_URL
        embeddings += [
            _Embedding(f"openai/{m}", m, "openai", endpoint, dim, "openai")
            for m, dim in _OPENAI_EMBEDDING
        ]
    for local in config.local_servers:
        embeddings += [
            _Embedding(
                f"{local.handle_prefix}/{e.name}",
                e.name,
                "openai",
                local.openai_base_url,
                e.dim,
                "openai",
            )
            for e in local.embedding_models
        ]
    embeddings.append(
        _Embedding(
            SIM_EMBEDDING_HANDLE,
            "embedding",
            "openai",
            SIM_ENDPOINT,
            SIM_EMBEDDING_DIM,
            SIM_PROVIDER_NAME,
            display_name="Simulated embedding model (offline, deterministic; not semantic)",
            simulated=True,
        )
    )
    # Letta sorts embedding models by the provider named in the handle, then by model.
    embeddings.sort(key=lambda e: _sort_key(e.handle.split("/", 1)[0], e.model))
    return embeddings


def _anthropic_max_tokens(model: str) -> int:
    # AnthropicProvider.get_default_max_output_tokens in Letta 0.16.8.
    if "claude-opus-4-6" in model or "claude-sonnet-4-6" in model:
        return 21_000
    if "opus" in model or "sonnet" in model:
        return 16_384
    return 8_192


def _base_llm_config(entry: _Llm, context_window: int) -> dict[str, Any]:
    """An LLMConfig as Letta builds it from its database row: every field, schema order."""
    return {
        "model": entry.model,
        "display_name": entry.display_name,
        "model_endpoint_type": entry.endpoint_type,
        "model_endpoint": entry.endpoint,
        "provider_name": entry.provider_name,
        "provider_category": "base",
        "model_wrapper": None,
        "context_window": context_window,
        "put_inner_thoughts_in_kwargs": False,
        "handle": entry.handle,
        "temperature": 1.0,
        "max_tokens": entry.max_tokens,
        "enable_reasoner": True,
        "reasoning_effort": None,
        "max_reasoning_tokens": 0,
        "effort": None,
        "frequency_penalty": None,
        "compatibility_type": None,
        # LLMConfig's validator gives every gpt-5 model a verbosity.
        "verbosity": "medium" if entry.model.startswith("gpt-5") else None,
        "tier": None,
        "parallel_tool_calls": False,
        "response_format": None,
        "strict": False,
        "return_logprobs": False,
        "top_logprobs": None,
        "return_token_ids": False,
        "tool_call_parser": None,
    }


@attrs.frozen
class ModelCatalog:
    """The models offered under one `CatalogConfig`. Every call returns fresh dicts."""

    _llms: tuple[_Llm, ...]
    _embeddings: tuple[_Embedding, ...]

    @classmethod
    def from_config(
        cls, config: CatalogConfig | None = None, discovered: Discovered | None = None
    ) -> ModelCatalog:
        """The models `config` offers: each provider's `discovered` list where it was asked,
        else its fixed set."""
        config = config or CatalogConfig()
        llms = _offered_llms(config, discovered or {})
        return cls(tuple(llms), tuple(_offered_embeddings(config)))

    def handles(self) -> list[str]:
        """Chat model handles, in list order."""
        return [e.handle for e in self._llms]

    def embedding_handles(self) -> list[str]:
        return [e.handle for e in self._embeddings]

    def is_simulated(self, handle: str) -> bool:
        """Whether `handle` names a simulated model (chat or embedding) of this catalog."""
        return any(e.handle == handle and e.simulated for e in (*self._llms, *self._embeddings))

    def _llm(self, handle: str) -> _Llm:
        for entry in self._llms:
            if entry.handle == handle:
                return entry
        # Letta names the models of an OpenAI-compatible OPENAI_BASE_URL `openai-proxy/...`
        # (an agent file from such a server carries that handle); here they are `openai/...`.
        if handle.startswith("openai-proxy/"):
            alias = "openai/" + handle.removeprefix("openai-proxy/")
            for entry in self._llms:
                if entry.handle == alias and entry.endpoint != OPENAI_BASE_URL:
                    return entry
        raise UnknownModel(handle, self.handles())

    def _embedding(self, handle: str) -> _Embedding:
        for entry in self._embeddings:
            if entry.handle == handle:
                return entry
        raise UnknownModel(handle, self.embedding_handles(), kind="embedding model")

    def llm_config_for(
        self,
        handle: str,
        *,
        context_window_limit: int | None = None,
        max_tokens: int | None = None,
        reasoning: bool | None = None,
    ) -> dict[str, Any]:
        """The `llm_config` of a new agent created with `model=handle` (a letta_v1_agent).

        `context_window_limit`, `max_tokens` and `reasoning` are the CreateAgent fields of the
        same names. Like Letta, a limit above the model's own window is taken as given.
        """
        entry = self._llm(handle)
        if context_window_limit is None:
            context_window = min(entry.context_window, GLOBAL_MAX_CONTEXT_WINDOW)
        else:
            context_window = context_window_limit
        config = _base_llm_config(entry, context_window)
        if max_tokens is not None:
            config["max_tokens"] = max_tokens
        # Unset, Letta falls back to the config's enable_reasoner, which is True by default.
        apply_v1_reasoning(config, config["enable_reasoner"] if reasoning is None else reasoning)
        return config

    def model_settings_for(self, handle: str) -> dict[str, Any]:
        """The `model_settings` of a new agent created with `model=handle`."""
        return model_settings_from_llm_config(self.llm_config_for(handle))

    def embedding_config_for(
        self, handle: str, *, embedding_chunk_size: int | None = None
    ) -> dict[str, Any]:
        """The `embedding_config` of a new agent created with `embedding=handle`."""
        entry = self._embedding(handle)
        return {
            "embedding_endpoint_type": entry.endpoint_type,
            "embedding_endpoint": entry.endpoint,
            "embedding_model": entry.model,
            "embedding_dim": entry.dim,
            "embedding_chunk_size": embedding_chunk_size or DEFAULT_EMBEDDING_CHUNK_SIZE,
            "handle": entry.handle,
            "batch_size": _EMBEDDING_BATCH_SIZE,
            "azure_endpoint": None,
            "azure_version": None,
            "azure_deployment": None,
        }

    def list_models(self) -> list[dict[str, Any]]:
        """`GET /v1/models/`: Letta's `Model.from_llm_config` over its provider configs, which
        carry the model's full window and no agent's reasoning policy."""
        models = []
        for entry in self._llms:
            config = _base_llm_config(entry, entry.context_window)
            models.append(
                {
                    "handle": entry.handle,
                    "name": entry.model,
                    "display_name": entry.display_name or entry.model,
                    "provider_type": entry.endpoint_type,
                    "provider_name": entry.provider_name,
                    "model_type": "llm",
                    **{k: v for k, v in config.items() if k != "display_name"},
                    "max_context_window": entry.context_window,
                }
            )
        return models

    def list_embedding_models(self) -> list[dict[str, Any]]:
        """`GET /v1/models/embedding`: Letta's `EmbeddingModel.from_embedding_config`."""
        models = []
        for entry in self._embeddings:
            config = self.embedding_config_for(entry.handle)
            models.append(
                {
                    "handle": entry.handle,
                    "name": entry.model,
                    "display_name": entry.display_name or entry.model,
                    "provider_type": entry.endpoint_type,
                    "provider_name": entry.list_provider_name,
                    "model_type": "embedding",
                    **{k: v for k, v in config.items() if k != "handle"},
                }
            )
        return models
