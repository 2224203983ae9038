"""What a model can do, and how Letta configures it (sans-IO).

From an agent's `llm_config` alone: whether its model takes images, hides its reasoning
or thinks with a budget; how Letta's `letta_v1_agent` sets its reasoning fields; and the
`model_settings` Letta derives from it (`LLMConfig._to_model_settings`). The catalog
(catalog.py) builds configs with these; the agent loop and the send options ask them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "apply_v1_reasoning",
    "hides_reasoning",
    "model_settings_from_llm_config",
    "takes_images",
    "thinking_budget",
]


# Chat models of the providers' lists that take no images (their APIs refuse image parts).
_TEXT_ONLY_OPENAI = ("gpt-3.5", "gpt-4-0", "o1-mini", "o1-preview", "o3-mini")
_TEXT_ONLY_ANTHROPIC = ("claude-2", "claude-instant")


def takes_images(llm_config: Mapping[str, Any]) -> bool:
    """Whether an agent's model takes image parts in a user message.

    Every model this catalog lists for OpenAI and Anthropic does; the older text-only
    ones above (which an agent file or a discovered list may name) do not. The simulated
    model takes them (it records what it is sent and answers as it always does), so the
    simulator carries images through its faults. A local server's model (vLLM, Ollama,
    llama.cpp) cannot be told apart: it is assumed to take them, and a server that
    refuses ends the turn with its error (stop reason llm_api_error)."""
    model = str(llm_config.get("model") or "")
    endpoint_type = llm_config.get("model_endpoint_type")
    if endpoint_type == "anthropic":
        return not model.startswith(_TEXT_ONLY_ANTHROPIC)
    return not (model == "gpt-4" or model.startswith(_TEXT_ONLY_OPENAI))


def hides_reasoning(llm_config: Mapping[str, Any]) -> bool:
    """Whether the model reasons without showing it: OpenAI's reasoning models (o1, o3, o4,
    gpt-5) do; Letta shows their replies with a hidden_reasoning_message ("omitted")."""
    model = str(llm_config.get("model") or "")
    return llm_config.get("model_endpoint_type") == "openai" and _is_openai_reasoner(model)


def thinking_budget(llm_config: Mapping[str, Any]) -> int | None:
    """The extended-thinking budget of an Anthropic reasoning model whose agent reasons
    (`enable_reasoner`, as Letta sets it from `reasoning`): its `max_reasoning_tokens`, at
    least the API's 1,024; 0 for the 4.6 models, which think adaptively; None: no thinking."""
    model = str(llm_config.get("model") or "")
    if llm_config.get("model_endpoint_type") != "anthropic" or not _is_anthropic_reasoner(model):
        return None
    if not llm_config.get("enable_reasoner"):
        return None
    if model.startswith(("claude-opus-4-6", "claude-sonnet-4-6")):
        return 0
    return max(int(llm_config.get("max_reasoning_tokens") or 0), 1024)


def _is_openai_reasoner(model: str) -> bool:
    return model.startswith(("o1", "o3", "o4", "gpt-5"))


def _is_anthropic_reasoner(model: str) -> bool:
    return model.startswith(
        ("claude-opus-4", "claude-sonnet-4", "claude-3-7-sonnet", "claude-haiku-4-5")
    )


def apply_v1_reasoning(config: dict[str, Any], reasoning: bool) -> None:
    """Letta's `apply_reasoning_setting_to_config` for a letta_v1_agent, the default agent type."""
    model = config["model"]
    endpoint_type = config["model_endpoint_type"]
    if endpoint_type == "openai" and _is_openai_reasoner(model):
        # Native reasoners cannot be switched off.
        config["put_inner_thoughts_in_kwargs"] = False
        config["enable_reasoner"] = True
        if config["reasoning_effort"] is None:
            if model.startswith(("gpt-5.1", "gpt-5.2", "gpt-5.3", "gpt-5.4")):
                config["reasoning_effort"] = "none"
            elif model.startswith("gpt-5") and "codex" not in model.lower():
                config["reasoning_effort"] = "minimal"
            else:
                config["reasoning_effort"] = "medium"
        if model.startswith("gpt-5") and config["verbosity"] is None:
            config["verbosity"] = "medium"
    elif endpoint_type in ("anthropic", "bedrock") and _is_anthropic_reasoner(model):
        config["enable_reasoner"] = reasoning
        config["put_inner_thoughts_in_kwargs"] = False
        # The 4.6 models think adaptively: no budget to set.
        adaptive = model.startswith(("claude-opus-4-6", "claude-sonnet-4-6"))
        if reasoning and config["max_reasoning_tokens"] == 0 and not adaptive:
            config["max_reasoning_tokens"] = 1024
        if (
            model.startswith(("claude-opus-4-5", "claude-opus-4-6", "claude-sonnet-4-6"))
            and config["effort"] is None
        ):
            config["effort"] = "medium"
    else:
        # Everything else: no simulated reasoning through tool-call kwargs.
        config["put_inner_thoughts_in_kwargs"] = False
        config["enable_reasoner"] = False
        config["max_reasoning_tokens"] = 0


# Provider families whose model_settings are just the common fields.
_PLAIN_SETTINGS = ("azure", "xai", "groq", "deepseek", "together", "bedrock", "openrouter")


def model_settings_from_llm_config(llm_config: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's `model_settings`, derived from its `llm_config` as Letta's
    `LLMConfig._to_model_settings` does (Letta stores only the llm_config).

    The values come from the llm_config, not from the ModelSettings schema defaults (which say
    4096 tokens, temperature 0.7, reasoning "high", strict true for OpenAI): the SDK's tests
    compare the result as a whole dict.
    """

    def get(name: str, default: Any = None) -> Any:
        value = llm_config.get(name)
        return default if value is None else value

    endpoint_type = llm_config.get("model_endpoint_type")
    max_tokens = get("max_tokens")
    temperature = get("temperature", 1.0)
    reasoning_tokens = get("max_reasoning_tokens", 0)
    thinking_type = "enabled" if get("enable_reasoner", True) else "disabled"

    if endpoint_type == "openai":
        settings = {
            "max_output_tokens": max_tokens or 4096,
            "parallel_tool_calls": True,
            "provider_type": "openai",
            "temperature": temperature,
            "reasoning": {"reasoning_effort": get("reasoning_effort", "minimal")},
            "response_format": None,
            "strict": get("strict", False),
        }
        handle = get("handle", "")
        if handle.startswith("sglang/") or "sglang" in get("provider_name", "").lower():
            # SGLang is OpenAI-compatible; its settings name it and its tool-call parser.
            settings |= {
                "provider_type": "sglang",
                "tool_call_parser": llm_config.get("tool_call_parser"),
            }
        return settings
    if endpoint_type in ("anthropic", "minimax"):  # MiniMax speaks Anthropic's API
        return {
            "max_output_tokens": max_tokens or 4096,
            "parallel_tool_calls": True,
            "provider_type": "anthropic",
            "temperature": temperature,
            "thinking": {"type": thinking_type, "budget_tokens": reasoning_tokens or 1024},
            "response_format": None,
            "verbosity": llm_config.get("verbosity"),
            # Letta's minimax branch does not pass effort.
            "effort": llm_config.get("effort") if endpoint_type == "anthropic" else None,
            "strict": get("strict", False),
        }
    if endpoint_type in ("google_ai", "google_vertex"):
        return {
            "max_output_tokens": max_tokens or 65536,
            "parallel_tool_calls": True,
            "provider_type": endpoint_type,
            "temperature": temperature,
            "thinking_config": {
                "include_thoughts": reasoning_tokens > 0,
                "thinking_budget": reasoning_tokens or 1024,
            },
            "response_schema": None,
        }
    if endpoint_type in ("zai", "zai_coding"):
        return {
            "max_output_tokens": max_tokens or 4096,
            "parallel_tool_calls": True,
            "provider_type": "zai",
            "temperature": temperature,
            "response_format": None,
            "thinking": {"type": thinking_type, "clear_thinking": False},
        }
    if endpoint_type == "chatgpt_oauth":
        return {
            "max_output_tokens": max_tokens or 4096,
            "parallel_tool_calls": True,
            "provider_type": "chatgpt_oauth",
            "temperature": temperature,
            "reasoning": {"reasoning_effort": get("reasoning_effort", "medium")},
        }
    if endpoint_type == "baseten":
        return {
            "max_output_tokens": max_tokens or 4096,
            "parallel_tool_calls": True,
            "provider_type": "baseten",
            "temperature": temperature,
        }
    if endpoint_type in _PLAIN_SETTINGS:
        return {
            "max_output_tokens": max_tokens or 4096,
            "parallel_tool_calls": True,
            "provider_type": endpoint_type,
            "temperature": temperature,
            "response_format": None,
        }
    # Letta's fallback for endpoint types it has no settings class for (ollama, vllm, ...).
    return {"max_output_tokens": max_tokens or 4096, "parallel_tool_calls": True}
