"""Asking providers for their models: parsing each server's list (sans-IO), asking the strict
fakes over HTTP, the catalog built from the answers, and the fixed set when nobody answers."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from kelpie_trio.cli import main
from kelpie_trio.llm.catalog import DiscoveredModel, ModelCatalog, UnknownModel
from kelpie_trio.llm.config import CatalogConfig, LocalServer
from kelpie_trio.llm.discovery import (
    discover,
    keep_catalog_fresh,
    parse_anthropic_models,
    parse_openai_models,
)
from kelpie_trio.llm.providers import client_for
from tests.llm.fake_providers import serving

# -- parsing --------------------------------------------------------------------------------


def test_openais_own_list_keeps_only_chat_models_as_letta_does() -> None:
    body = {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 1, "owned_by": "openai"}
            for m in (
                "gpt-4o-mini",
                "o3",
                "gpt-4o-realtime-preview",
                "text-embedding-3-small",
                "whisper-1",
                "dall-e-3",
                "gpt-4o-mini-tts",
                "gpt-5",
            )
        ],
    }
    assert parse_openai_models(body, official=True) == [
        DiscoveredModel("gpt-4o-mini"),
        DiscoveredModel("o3"),
        DiscoveredModel("gpt-5"),
    ]
    # A proxy or local server lists what it serves: all of it.
    assert len(parse_openai_models(body)) == 8


def test_context_windows_are_read_where_each_server_reports_them() -> None:
    body = {
        "data": [
            {"id": "meta-llama/Llama-3.1-8B-Instruct", "max_model_len": 32768},  # vLLM
            {"id": "qwen/qwen3-32b", "context_length": 40960},  # OpenRouter
            {"id": "llama-3.3-70b", "context_window": 131072},  # Groq
            {"id": "local-model", "max_context_length": 8192, "type": "llm"},  # LM Studio
            {"id": "nomic-embed", "type": "embeddings"},  # LM Studio's embedding model
            {"id": "model.gguf", "meta": {"n_ctx_train": 4096, "n_embd": 2048}},  # llama.cpp
            {"id": "llama3.2:latest", "object": "model", "owned_by": "library"},  # Ollama
            {"id": "llama3.2:latest"},  # listed twice: once
            {"object": "model"},  # no id: not a model
        ]
    }
    assert parse_openai_models(body) == [
        DiscoveredModel("meta-llama/Llama-3.1-8B-Instruct", 32768),
        DiscoveredModel("qwen/qwen3-32b", 40960),
        DiscoveredModel("llama-3.3-70b", 131072),
        DiscoveredModel("local-model", 8192),
        DiscoveredModel("model.gguf", 4096),
        DiscoveredModel("llama3.2:latest", None),
    ]


def test_a_bare_list_is_a_model_list_and_anything_else_is_not() -> None:
    assert parse_openai_models([{"id": "m"}]) == [DiscoveredModel("m")]
    for nonsense in ({"models": []}, "<html>", None):
        with pytest.raises(ValueError):
            parse_openai_models(nonsense)


def test_an_anthropic_page_gives_its_models_and_where_the_next_starts() -> None:
    page = {
        "data": [
            {
                "type": "model",
                "id": "claude-sonnet-4-6",
                "display_name": "Claude Sonnet 4.6",
                "created_at": "2026-02-17T00:00:00Z",
                "max_input_tokens": 1_000_000,
            },
            {
                "type": "model",
                "id": "claude-haiku-4-5-20251001",
                "display_name": "Haiku 4.5",
                "created_at": "2025-10-01T00:00:00Z",
            },
            {"type": "model", "id": "claude-2.1", "display_name": "Claude 2.1"},
        ],
        "has_more": True,
        "first_id": "claude-sonnet-4-6",
        "last_id": "claude-2.1",
    }
    models, after = parse_anthropic_models(page)
    assert models == [
        DiscoveredModel("claude-sonnet-4-6", 1_000_000),
        DiscoveredModel("claude-haiku-4-5-20251001", None),
    ]
    assert after == "claude-2.1"
    assert parse_anthropic_models({**page, "has_more": False})[1] is None
    with pytest.raises(ValueError):
        parse_anthropic_models({"type": "error"})


# -- the catalog from what was found --------------------------------------------------------

OPENAI = CatalogConfig(openai_api_key="sk-test")


def test_discovered_models_replace_the_fixed_set_and_known_ones_keep_lettas_values() -> None:
    fixed = ModelCatalog.from_config(OPENAI)
    found = ModelCatalog.from_config(
        OPENAI, {"openai": [DiscoveredModel("gpt-4o-mini"), DiscoveredModel("gpt-9", 400_000)]}
    )
    assert found.handles() == ["openai/gpt-4o-mini", "openai/gpt-9", "sim/agent"]
    assert found.llm_config_for("openai/gpt-4o-mini") == fixed.llm_config_for("openai/gpt-4o-mini")
    assert found.model_settings_for("openai/gpt-4o-mini") == {
        "max_output_tokens": 16384,
        "parallel_tool_calls": True,
        "provider_type": "openai",
        "temperature": 1.0,
        "reasoning": {"reasoning_effort": "minimal"},
        "response_format": None,
        "strict": False,
    }
    (gpt9,) = [m for m in found.list_models() if m["handle"] == "openai/gpt-9"]
    assert gpt9["max_context_window"] == 400_000 and gpt9["model"] == "gpt-9"
    with pytest.raises(UnknownModel):
        found.llm_config_for("openai/gpt-4.1")  # not listed by the provider: not offered


def test_an_unknown_openai_model_without_a_window_gets_lettas_default() -> None:
    catalog = ModelCatalog.from_config(OPENAI, {"openai": [DiscoveredModel("my-finetune")]})
    assert catalog.llm_config_for("openai/my-finetune")["context_window"] == 30_000


def test_anthropic_and_local_models_take_the_windows_they_report() -> None:
    config = CatalogConfig(
        anthropic_api_key="sk-ant",
        local=LocalServer("http://127.0.0.1:11434", kind="ollama", models=("fixed",)),
    )
    catalog = ModelCatalog.from_config(
        config,
        {
            "anthropic": [DiscoveredModel("claude-new-5", 500_000)],
            "ollama": [DiscoveredModel("qwen3:8b", 40_960), DiscoveredModel("llama3.2:latest")],
        },
    )
    assert catalog.handles() == [
        "anthropic/claude-new-5",
        "ollama/llama3.2:latest",
        "ollama/qwen3:8b",
        "sim/agent",
    ]
    windows = {m["handle"]: m["max_context_window"] for m in catalog.list_models()}
    assert windows["anthropic/claude-new-5"] == 500_000
    assert windows["ollama/qwen3:8b"] == 40_960
    assert windows["ollama/llama3.2:latest"] == 128_000  # Letta's default for a silent Ollama
    assert catalog.llm_config_for("ollama/qwen3:8b")["model"] == "qwen3:8b"


def test_openai_proxy_handles_from_letta_name_the_proxys_models() -> None:
    proxy = CatalogConfig(openai_api_key="sk", openai_base_url="http://127.0.0.1:9/v1")
    config = ModelCatalog.from_config(proxy).llm_config_for("openai-proxy/gpt-4o-mini")
    assert (config["model"], config["model_endpoint"]) == ("gpt-4o-mini", "http://127.0.0.1:9/v1")
    with pytest.raises(UnknownModel):  # OpenAI's own API is not a proxy
        ModelCatalog.from_config(OPENAI).llm_config_for("openai-proxy/gpt-4o-mini")


# -- asking over HTTP -----------------------------------------------------------------------


async def test_every_configured_provider_is_asked_for_its_models() -> None:
    async with serving() as openai, serving() as anthropic, serving() as ollama:
        openai.serve_only(openai=["gpt-4o-mini", "gpt-test"])
        anthropic.serve_only(anthropic=["claude-sonnet-4-5-20250929"])
        anthropic.anthropic_models[0]["max_input_tokens"] = 200_000
        ollama.serve_only(openai=["llama3.2:latest", "qwen3:8b"])
        ollama.openai_models[1]["max_model_len"] = 40_960
        config = CatalogConfig(
            openai_api_key="sk-test",
            openai_base_url=openai.url + "/v1",
            anthropic_api_key="sk-ant-test",
            anthropic_base_url=anthropic.url + "/v1",
            servers=[LocalServer(ollama.url, prefix="ollama")],
        )
        found = await discover(config)
    assert found == {
        "openai": [DiscoveredModel("gpt-4o-mini"), DiscoveredModel("gpt-test")],
        "anthropic": [DiscoveredModel("claude-sonnet-4-5-20250929", 200_000)],
        "ollama": [DiscoveredModel("llama3.2:latest"), DiscoveredModel("qwen3:8b", 40_960)],
    }
    assert (openai.listed, anthropic.listed, ollama.listed) == (1, 1, 1)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_provider_that_cannot_be_asked_offers_the_fixed_set() -> None:
    async with serving() as refusing:
        config = CatalogConfig(
            openai_api_key="sk-test",
            openai_base_url=f"http://127.0.0.1:{closed_port()}/v1",  # nobody listens
            anthropic_api_key="",  # no key: Anthropic is not configured
            local=LocalServer(refusing.url, kind="vllm", models=("fixed-model",)),
        )
        refusing.openai_models = "not a list"  # type: ignore[assignment]
        found = await discover(config, within=5)
    assert found == {}
    catalog = ModelCatalog.from_config(config, found)
    assert "openai/gpt-4o-mini" in catalog.handles()  # the fixed OpenAI set
    assert "vllm/fixed-model" in catalog.handles()


async def test_an_anthropic_list_without_models_offers_the_fixed_set() -> None:
    async with serving() as anthropic:
        config = CatalogConfig(anthropic_api_key="sk", anthropic_base_url=anthropic.url + "/v1")
        anthropic.anthropic_models = []  # an empty list says nothing either
        assert await discover(config) == {}
    assert "anthropic/claude-sonnet-4-5-20250929" in ModelCatalog.from_config(config).handles()


# -- several OpenAI-compatible endpoints ----------------------------------------------------


def test_several_endpoints_are_configured_each_under_its_own_prefix() -> None:
    config = CatalogConfig.from_env(
        {
            "KELPIE_LOCAL_LLM_URL": "http://10.0.0.5:8000",  # the first way keeps working
            "KELPIE_LOCAL_LLM_MODELS": "meta-llama/Llama-3.1-8B-Instruct",
            "KELPIE_LLM_ENDPOINTS": "ollama=http://127.0.0.1:11434, lmstudio=http://h:1234/v1",
            "KELPIE_LLM_API_KEY_LMSTUDIO": "lm-key",
        }
    )
    assert [(s.handle_prefix, s.openai_base_url) for s in config.local_servers] == [
        ("vllm", "http://10.0.0.5:8000/v1"),
        ("ollama", "http://127.0.0.1:11434/v1"),
        ("lmstudio", "http://h:1234/v1"),
    ]
    assert [s.api_key for s in config.local_servers] == [None, None, "lm-key"]
    assert "lm-key" not in repr(config)
    catalog = ModelCatalog.from_config(
        config, {"ollama": [DiscoveredModel("qwen3:8b")], "lmstudio": [DiscoveredModel("m")]}
    )
    assert {"vllm/meta-llama/Llama-3.1-8B-Instruct", "ollama/qwen3:8b", "lmstudio/m"} <= set(
        catalog.handles()
    )
    client = client_for(catalog.llm_config_for("lmstudio/m"), config)
    assert client.base_url == "http://h:1234/v1"
    assert client_for(catalog.llm_config_for("ollama/qwen3:8b"), config).base_url == (
        "http://127.0.0.1:11434/v1"
    )


@pytest.mark.parametrize(
    "endpoints",
    ["openai=http://x", "ollama=http://x,ollama=http://y", "no-url", "Bad Name=http://x"],
)
def test_a_bad_endpoint_list_is_refused_with_why(endpoints: str) -> None:
    with pytest.raises(ValueError, match="KELPIE_LLM_ENDPOINTS"):
        CatalogConfig.from_env({"KELPIE_LLM_ENDPOINTS": endpoints})


def test_serve_refuses_a_bad_endpoint_list_before_starting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KELPIE_LLM_ENDPOINTS", "anthropic=http://127.0.0.1:1")
    assert main(["serve", "--store", "memory", "--port", "0"]) == 2
    assert "KELPIE_LLM_ENDPOINTS" in capsys.readouterr().err


async def test_a_refresh_publishes_what_the_providers_list_now(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every period the providers are asked again; one that does not answer this time keeps
    the models it listed last instead of falling back to the fixed set."""
    config = CatalogConfig(openai_api_key="sk", servers=[LocalServer("http://o", prefix="ollama")])
    answers = [
        {"openai": [DiscoveredModel("gpt-4o-mini")], "ollama": [DiscoveredModel("qwen3:8b")]},
        {"ollama": [DiscoveredModel("qwen3:8b"), DiscoveredModel("llama3.2:latest")]},
    ]
    published: list[tuple[float, list[str]]] = []

    async def ask(_: CatalogConfig) -> dict[str, list[DiscoveredModel]]:
        return answers.pop(0)

    def publish(catalog: ModelCatalog) -> None:
        published.append((trio.current_time(), catalog.handles()))

    start = trio.current_time()
    with trio.move_on_after(250):
        await keep_catalog_fresh(
            config, 100, publish, found={"openai": [DiscoveredModel("gpt-4.1")]}, ask=ask
        )
    assert [(t - start, h) for t, h in published] == [
        (100, ["openai/gpt-4o-mini", "ollama/qwen3:8b", "sim/agent"]),
        (200, ["openai/gpt-4o-mini", "ollama/llama3.2:latest", "ollama/qwen3:8b", "sim/agent"]),
    ]


def test_the_refresh_period_is_read_from_the_environment() -> None:
    assert CatalogConfig.from_env({}).refresh_seconds is None
    assert CatalogConfig.from_env({"KELPIE_MODELS_REFRESH": "600"}).refresh_seconds == 600
    for bad in ("0", "-5", "soon"):
        with pytest.raises(ValueError, match="KELPIE_MODELS_REFRESH"):
            CatalogConfig.from_env({"KELPIE_MODELS_REFRESH": bad})
