"""The model catalog: which handles are offered, and the Letta 0.16.8 records for each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from letta_client.types import (
    AnthropicModelSettings,
    EmbeddingConfig,
    EmbeddingModel,
    LlmConfig,
    Model,
    OpenAIModelSettings,
)
from pydantic import BaseModel

from kelpie_trio.llm.catalog import (
    SIM_CHAT_HANDLE,
    SIM_EMBEDDING_HANDLE,
    CatalogConfig,
    LocalEmbedding,
    LocalServer,
    ModelCatalog,
    UnknownModel,
    model_settings_from_llm_config,
    provider_model,
)

OPENAPI = Path("/work/shared/letta/openapi-letta-0.16.8.json")

# What Letta's own SDK tests compare, as a whole dict, for an agent on openai/gpt-4o-mini.
LETTA_GPT_4O_MINI_SETTINGS = {
    "max_output_tokens": 16384,
    "parallel_tool_calls": True,
    "strict": False,
    "provider_type": "openai",
    "temperature": 1.0,
    "reasoning": {"reasoning_effort": "minimal"},
    "response_format": None,
}

LOCAL = LocalServer(
    "http://localhost:11434",
    kind="ollama",
    models=("llama3.2",),
    embedding_models=(LocalEmbedding("nomic-embed-text", 768),),
)
EVERYTHING = ModelCatalog.from_config(
    CatalogConfig(openai_api_key="sk-test", anthropic_api_key="sk-ant-test", local=LOCAL)
)


def catalog(**config: Any) -> ModelCatalog:
    return ModelCatalog.from_config(CatalogConfig(**config))


def validate_strictly(sdk_model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """Parse with the SDK's own model in strict mode; every key known, every required one sent."""
    obj = sdk_model.model_validate(data, strict=True)
    assert not obj.model_extra, f"keys the SDK does not know: {obj.model_extra}"
    required = {name for name, field in sdk_model.model_fields.items() if field.is_required()}
    assert required <= obj.model_fields_set
    return obj


# -- which handles are offered --------------------------------------------------------------


def test_without_providers_only_the_simulated_models_are_offered() -> None:
    empty = catalog()
    assert empty.handles() == [SIM_CHAT_HANDLE]
    assert empty.embedding_handles() == [SIM_EMBEDDING_HANDLE]


def test_an_openai_key_offers_the_usual_openai_handles() -> None:
    offered = catalog(openai_api_key="sk-test")
    assert {"openai/gpt-4o-mini", "openai/gpt-4o", "openai/gpt-4.1"} <= set(offered.handles())
    assert "openai/text-embedding-3-small" in offered.embedding_handles()
    assert offered.llm_config_for("openai/gpt-4o-mini")["model_endpoint"] == (
        "https://api.openai.com/v1"
    )
    assert not any(h.startswith("anthropic/") for h in offered.handles())


def test_an_openai_compatible_base_url_alone_offers_openai_handles_there() -> None:
    offered = catalog(openai_base_url="http://127.0.0.1:9999/v1")
    assert "openai/gpt-4o-mini" in offered.handles()
    assert offered.llm_config_for("openai/gpt-4o-mini")["model_endpoint"] == (
        "http://127.0.0.1:9999/v1"
    )
    config = offered.embedding_config_for("openai/text-embedding-3-small")
    assert config["embedding_endpoint"] == "http://127.0.0.1:9999/v1"


def test_an_anthropic_key_offers_claude_handles() -> None:
    offered = catalog(anthropic_api_key="sk-ant-test")
    claude = [h for h in offered.handles() if h.startswith("anthropic/")]
    assert "anthropic/claude-sonnet-4-5-20250929" in claude
    assert set(offered.handles()) == {*claude, SIM_CHAT_HANDLE}
    assert offered.embedding_handles() == [SIM_EMBEDDING_HANDLE]  # Anthropic has no embeddings


@pytest.mark.parametrize("kind", ["vllm", "ollama", "llamacpp"])
def test_a_local_server_offers_its_models_under_its_kind(kind: str) -> None:
    server = LocalServer(
        "http://gpu:8000/",
        kind=kind,  # type: ignore[arg-type]
        models=("qwen3-8b",),
        embedding_models=(LocalEmbedding("bge-m3", 1024),),
    )
    offered = catalog(local=server)
    assert offered.handles() == [f"{kind}/qwen3-8b", SIM_CHAT_HANDLE]
    assert offered.embedding_handles() == [f"{kind}/bge-m3", SIM_EMBEDDING_HANDLE]
    config = offered.llm_config_for(f"{kind}/qwen3-8b")
    assert config["model_endpoint"] == "http://gpu:8000/v1"
    assert config["model_endpoint_type"] == "openai"  # all three speak the OpenAI API
    assert offered.embedding_config_for(f"{kind}/bge-m3")["embedding_dim"] == 1024


def test_models_are_listed_in_letta_provider_order_with_the_sim_last() -> None:
    providers = [m["handle"].split("/")[0] for m in EVERYTHING.list_models()]
    firsts = list(dict.fromkeys(providers))
    assert firsts == ["openai", "anthropic", "ollama", "sim"]


# -- the simulated models say what they are -------------------------------------------------


def test_the_simulated_chat_model_is_labeled_simulated_wherever_a_client_looks() -> None:
    [listed] = [m for m in EVERYTHING.list_models() if m["handle"] == SIM_CHAT_HANDLE]
    assert "simulated" in listed["provider_name"]
    assert "Simulated" in listed["display_name"]
    config = EVERYTHING.llm_config_for(SIM_CHAT_HANDLE)
    assert "simulated" in config["provider_name"]
    assert config["model_endpoint"].startswith("sim://")  # no HTTP client can call it
    assert EVERYTHING.is_simulated(SIM_CHAT_HANDLE)
    assert not EVERYTHING.is_simulated("openai/gpt-4o-mini")


def test_the_simulated_embedding_model_is_labeled_simulated() -> None:
    [listed] = [
        m for m in EVERYTHING.list_embedding_models() if m["handle"] == SIM_EMBEDDING_HANDLE
    ]
    assert "simulated" in listed["provider_name"]
    assert "Simulated" in listed["display_name"]
    assert EVERYTHING.embedding_config_for(SIM_EMBEDDING_HANDLE)["embedding_endpoint"] == (
        "sim://offline"
    )
    assert EVERYTHING.is_simulated(SIM_EMBEDDING_HANDLE)


def test_the_simulated_entries_parse_with_the_sdk_despite_its_closed_enums() -> None:
    sim = catalog()
    validate_strictly(Model, sim.list_models()[0])
    validate_strictly(EmbeddingModel, sim.list_embedding_models()[0])
    validate_strictly(LlmConfig, sim.llm_config_for(SIM_CHAT_HANDLE))
    validate_strictly(OpenAIModelSettings, sim.model_settings_for(SIM_CHAT_HANDLE))


# -- model_settings -------------------------------------------------------------------------


def test_gpt_4o_mini_model_settings_are_exactly_what_letta_sdk_tests_compare() -> None:
    settings = catalog(openai_api_key="sk-test").model_settings_for("openai/gpt-4o-mini")
    assert settings == LETTA_GPT_4O_MINI_SETTINGS
    validate_strictly(OpenAIModelSettings, settings)


def test_claude_model_settings_carry_the_thinking_budget_of_a_reasoning_agent() -> None:
    settings = EVERYTHING.model_settings_for("anthropic/claude-sonnet-4-5-20250929")
    assert settings == {
        "max_output_tokens": 16384,
        "parallel_tool_calls": True,
        "provider_type": "anthropic",
        "temperature": 1.0,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "response_format": None,
        "verbosity": None,
        "effort": None,
        "strict": False,
    }
    validate_strictly(AnthropicModelSettings, settings)


def test_model_settings_follow_an_updated_llm_config() -> None:
    config = EVERYTHING.llm_config_for("openai/gpt-4o-mini")
    config.update(max_tokens=2048, temperature=0.2, reasoning_effort="low")
    assert model_settings_from_llm_config(config) == {
        **LETTA_GPT_4O_MINI_SETTINGS,
        "max_output_tokens": 2048,
        "temperature": 0.2,
        "reasoning": {"reasoning_effort": "low"},
    }


def test_turning_reasoning_off_disables_claude_thinking() -> None:
    config = EVERYTHING.llm_config_for("anthropic/claude-sonnet-4-5-20250929", reasoning=False)
    assert config["enable_reasoner"] is False and config["max_reasoning_tokens"] == 0
    assert model_settings_from_llm_config(config)["thinking"] == {
        "type": "disabled",
        "budget_tokens": 1024,
    }


# -- llm_config and embedding_config --------------------------------------------------------


def test_gpt_4o_mini_agent_config_has_letta_values() -> None:
    config = EVERYTHING.llm_config_for("openai/gpt-4o-mini")
    assert config["model"] == "gpt-4o-mini" and config["handle"] == "openai/gpt-4o-mini"
    assert config["context_window"] == 128000 and config["max_tokens"] == 16384
    assert config["temperature"] == 1.0 and config["provider_name"] == "openai"
    assert config["provider_category"] == "base"
    # Not a reasoning model: a letta_v1_agent gets no (simulated) reasoning.
    assert config["enable_reasoner"] is False
    assert config["put_inner_thoughts_in_kwargs"] is False


def test_an_agent_context_window_is_capped_at_128k_unless_a_limit_is_given() -> None:
    assert EVERYTHING.llm_config_for("openai/gpt-4.1")["context_window"] == 128000
    listed = {m["handle"]: m for m in EVERYTHING.list_models()}
    assert listed["openai/gpt-4.1"]["max_context_window"] == 1047576
    limited = EVERYTHING.llm_config_for("openai/gpt-4.1", context_window_limit=50000)
    assert limited["context_window"] == 50000


def test_openai_reasoning_models_always_reason() -> None:
    o3 = EVERYTHING.llm_config_for("openai/o3", reasoning=False)
    assert o3["enable_reasoner"] is True and o3["reasoning_effort"] == "medium"
    gpt5 = EVERYTHING.llm_config_for("openai/gpt-5")
    assert gpt5["reasoning_effort"] == "minimal" and gpt5["verbosity"] == "medium"


@pytest.mark.parametrize("handle", EVERYTHING.handles())
def test_every_llm_config_parses_with_the_sdk_and_sets_its_required_fields(handle: str) -> None:
    config = EVERYTHING.llm_config_for(handle)
    assert validate_strictly(LlmConfig, config).handle == handle


@pytest.mark.parametrize("handle", EVERYTHING.embedding_handles())
def test_every_embedding_config_parses_with_the_sdk_and_sets_its_required_fields(
    handle: str,
) -> None:
    config = EVERYTHING.embedding_config_for(handle)
    assert validate_strictly(EmbeddingConfig, config).handle == handle


def test_text_embedding_3_small_config_has_letta_values() -> None:
    assert EVERYTHING.embedding_config_for("openai/text-embedding-3-small") == {
        "embedding_endpoint_type": "openai",
        "embedding_endpoint": "https://api.openai.com/v1",
        "embedding_model": "text-embedding-3-small",
        "embedding_dim": 1536,
        "embedding_chunk_size": 300,
        "handle": "openai/text-embedding-3-small",
        "batch_size": 32,
        "azure_endpoint": None,
        "azure_version": None,
        "azure_deployment": None,
    }


def test_model_settings_of_every_handle_parse_with_the_sdk() -> None:
    for handle in EVERYTHING.handles():
        settings = EVERYTHING.model_settings_for(handle)
        shape = AnthropicModelSettings if handle.startswith("anthropic/") else OpenAIModelSettings
        validate_strictly(shape, settings)


# -- the list entries -----------------------------------------------------------------------


def test_every_model_list_entry_parses_with_the_sdk_and_sets_its_required_fields() -> None:
    for entry in EVERYTHING.list_models():
        model = validate_strictly(Model, entry)
        assert model.handle == entry["handle"] and entry["model_type"] == "llm"


def test_every_embedding_list_entry_parses_with_the_sdk_and_sets_its_required_fields() -> None:
    for entry in EVERYTHING.list_embedding_models():
        model = validate_strictly(EmbeddingModel, entry)
        assert model.handle == entry["handle"] and entry["model_type"] == "embedding"


def test_list_entries_carry_the_provider_config_not_an_agents() -> None:
    listed = {m["handle"]: m for m in EVERYTHING.list_models()}
    assert listed["openai/gpt-4o-mini"]["enable_reasoner"] is True  # LLMConfig's default
    assert listed["openai/gpt-4o-mini"]["display_name"] == "gpt-4o-mini"


@pytest.mark.skipif(not OPENAPI.exists(), reason="the reference OpenAPI document is not here")
def test_every_record_matches_the_letta_0_16_8_schema() -> None:
    schemas = json.loads(OPENAPI.read_text())["components"]["schemas"]

    def check(name: str, data: dict[str, Any]) -> None:
        schema = schemas[name]
        assert set(data) <= set(schema["properties"]), (name, set(data) - set(schema["properties"]))
        assert set(schema.get("required", ())) <= set(data), name

    for handle in EVERYTHING.handles():
        check("LLMConfig", EVERYTHING.llm_config_for(handle))
        settings = EVERYTHING.model_settings_for(handle)
        shape = (
            "AnthropicModelSettings" if handle.startswith("anthropic/") else "OpenAIModelSettings"
        )
        # model_settings carry every field of their schema: Letta serializes them all.
        assert set(settings) == set(schemas[shape]["properties"]), handle
    for handle in EVERYTHING.embedding_handles():
        check("EmbeddingConfig", EVERYTHING.embedding_config_for(handle))
    for entry in EVERYTHING.list_models():
        check("Model", entry)
    for entry in EVERYTHING.list_embedding_models():
        check("EmbeddingModel", entry)


# -- unknown handles and other contracts ----------------------------------------------------


def test_an_unknown_handle_raises_unknown_model_naming_known_handles() -> None:
    with pytest.raises(UnknownModel) as raised:
        EVERYTHING.llm_config_for("openai/gpt-9")
    assert isinstance(raised.value, ValueError)
    assert "openai/gpt-9" in str(raised.value) and "openai/gpt-4.1" in str(raised.value)
    with pytest.raises(UnknownModel):
        EVERYTHING.model_settings_for("nonsense")


def test_a_handle_of_an_unconfigured_provider_says_so() -> None:
    with pytest.raises(UnknownModel, match="no 'openai' provider is configured"):
        catalog().llm_config_for("openai/gpt-4o-mini")


def test_an_embedding_handle_is_not_a_chat_model_and_vice_versa() -> None:
    with pytest.raises(UnknownModel):
        EVERYTHING.llm_config_for("openai/text-embedding-3-small")
    with pytest.raises(UnknownModel, match="embedding model"):
        EVERYTHING.embedding_config_for("openai/gpt-4o-mini")


def test_each_call_returns_fresh_dicts() -> None:
    first = EVERYTHING.model_settings_for("openai/gpt-4o-mini")
    first["reasoning"]["reasoning_effort"] = "high"
    EVERYTHING.list_models()[0]["handle"] = "changed"
    assert EVERYTHING.model_settings_for("openai/gpt-4o-mini") == LETTA_GPT_4O_MINI_SETTINGS
    assert EVERYTHING.list_models()[0]["handle"] != "changed"


def test_api_keys_stay_out_of_reprs() -> None:
    config = CatalogConfig(
        openai_api_key="sk-secret-1",
        anthropic_api_key="sk-secret-2",
        local=LocalServer("http://gpu", api_key="sk-secret-3"),
    )
    assert "secret" not in repr(config)


def test_config_from_the_environment() -> None:
    config = CatalogConfig.from_env(
        {
            "OPENAI_API_KEY": "",  # empty counts as unset
            "OPENAI_API_BASE": "http://proxy/v1",
            "ANTHROPIC_API_KEY": "sk-ant",
            "KELPIE_LOCAL_LLM_URL": "http://gpu:8000",
            "KELPIE_LOCAL_LLM_KIND": "llamacpp",
            "KELPIE_LOCAL_LLM_MODELS": "qwen3, gemma3",
            "KELPIE_LOCAL_EMBEDDING_MODELS": "bge-m3:1024",
        }
    )
    assert config.openai_api_key is None and config.openai_base_url == "http://proxy/v1"
    assert config.anthropic_enabled
    assert config.local == LocalServer(
        "http://gpu:8000",
        kind="llamacpp",
        models=("qwen3", "gemma3"),
        embedding_models=(LocalEmbedding("bge-m3", 1024),),
    )
    with pytest.raises(ValueError, match="KELPIE_LOCAL_LLM_KIND"):
        CatalogConfig.from_env({"KELPIE_LOCAL_LLM_URL": "http://x", "KELPIE_LOCAL_LLM_KIND": "tgi"})


@pytest.mark.parametrize(
    ("config", "handle"),
    [
        (CatalogConfig(openai_api_key="sk"), "openai/gpt-4o-mini"),
        (CatalogConfig(anthropic_api_key="sk"), "anthropic/claude-sonnet-4-5-20250929"),
        (
            CatalogConfig(local=LocalServer("http://h:8000", models=("meta-llama/Llama-3.1-8B",))),
            "vllm/meta-llama/Llama-3.1-8B",
        ),
        (CatalogConfig(), SIM_CHAT_HANDLE),
    ],
)
def test_a_turn_asks_for_the_providers_model_name_not_the_handle(
    config: CatalogConfig, handle: str
) -> None:
    llm_config = ModelCatalog.from_config(config).llm_config_for(handle)
    name = provider_model(handle, llm_config)
    assert name == llm_config["model"] == handle.split("/", 1)[1]


def test_an_agent_without_a_model_name_in_its_config_falls_back_to_the_handles_tail() -> None:
    assert provider_model("openai/gpt-4o-mini", None) == "gpt-4o-mini"
    assert provider_model("openai/gpt-4o-mini", {"model": ""}) == "gpt-4o-mini"
    assert provider_model(None, None) == ""
