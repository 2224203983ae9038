"""The options of a send beyond its messages (Letta's LettaRequest): each is honoured, or
refused with a 422 that names it when set to something this server does not do. None is
dropped silently: a client that asks for something gets it or is told."""

from __future__ import annotations

from typing import Any

from kelpie_trio.errors import Invalid
from kelpie_trio.llm.catalog import ModelCatalog, UnknownModel

__all__ = [
    "MESSAGE_TYPES",
    "check_return_types",
    "check_unsupported",
    "override_config",
    "shown",
]

# Letta's MessageType: what include_return_message_types may name.
MESSAGE_TYPES = frozenset({
    "system_message", "user_message", "assistant_message", "reasoning_message",
    "hidden_reasoning_message", "tool_call_message", "tool_return_message",
    "approval_request_message", "approval_response_message", "summary_message",
    "event_message",
})  # fmt: skip

# Options not served, and the value that asks for nothing (what a client that does not set
# them sends, or Letta's default); anything else is refused.
_UNSUPPORTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "override_system": ((None,), "a per-request system prompt is not supported"),
    "return_logprobs": ((None, False), "log probabilities are not returned"),
    "top_logprobs": ((None,), "log probabilities are not returned"),
    "return_token_ids": ((None, False), "token ids are not returned"),
    # Reasoning is the agent's setting (its llm_config / model_settings), as in Letta 0.16.8,
    # whose loop reads nothing of this deprecated field; asking for it (the default) changes
    # nothing, and turning it off for one request cannot be honoured, so it is refused.
    "enable_thinking": ((None, True, "true", "True"), "reasoning cannot be turned off for one "
                        "request; set the agent's reasoning (PATCH /v1/agents/{agent_id} "
                        "with model_settings) instead"),
}  # fmt: skip


def override_config(catalog: ModelCatalog, handle: str | None) -> dict[str, Any] | None:
    """The llm_config of a send's override_model, as the catalog gives it for a new agent
    of that model (an unknown handle is refused as agent create refuses it)."""
    if handle is None:
        return None
    try:
        return catalog.llm_config_for(handle)
    except UnknownModel as error:
        raise Invalid.field(["body", "override_model"], str(error)) from None


def check_unsupported(body: dict[str, Any]) -> None:
    for name, (fine, why) in _UNSUPPORTED.items():
        value = body.get(name)
        if not any(value == ok and type(value) is type(ok) for ok in fine):
            raise Invalid.field(["body", name], f"{name} is not supported here: {why}")


def check_return_types(types: list[str] | None) -> frozenset[str] | None:
    if types is None:
        return None
    for i, kind in enumerate(types):
        if kind not in MESSAGE_TYPES:
            raise Invalid.field(["body", "include_return_message_types", i],
                                f"not a message type: {kind!r}")  # fmt: skip
    return frozenset(types)


def shown(event: dict[str, Any], types: frozenset[str] | None) -> bool:
    """Whether a message or event is returned: stop reasons, usage, pings and errors
    always are; messages when their type was asked for (or no types were named)."""
    kind = event.get("message_type")
    return types is None or kind not in MESSAGE_TYPES or kind in types
