"""What the real OpenAI and Anthropic APIs refuse, as the fake providers enforce it (sans-IO).

Each check takes a request body (and headers) and returns the refusal the real API gives, as
(status, error body), or None when the request is one the real API accepts. Statuses, error
types and the substance of the messages follow the providers' published API references
(OpenAI: chat/create, models/list, the error codes guide; Anthropic: messages, models/list,
errors); the messages are close to the real ones so a test reading them reads what a user of
the real API would. A fake that accepted more than the real API is how a handle sent as a model
name went unseen: every rule here has a test in test_fake_providers.py.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

__all__ = [
    "MAX_EMBEDDING_INPUTS",
    "Refusal",
    "anthropic_headers_refusal",
    "anthropic_refusal",
    "openai_embeddings_refusal",
    "openai_refusal",
]

MAX_EMBEDDING_INPUTS = 2048  # OpenAI: an embeddings request takes at most 2048 inputs

Refusal = tuple[int, dict[str, Any]]


# -- OpenAI chat completions ----------------------------------------------------------------


def _openai_error(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> Refusal:
    kind = "invalid_request_error"
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_embeddings_refusal(body: Any, models: Collection[str]) -> Refusal | None:
    """Why OpenAI would refuse this `POST /v1/embeddings` body, or None.

    `input` is one non-empty string or a non-empty list of at most 2048 of them (OpenAI also
    takes token arrays, which no client here sends: refused, so sending one is noticed); an
    empty string anywhere is refused; `encoding_format` is `float` or `base64`; `dimensions`
    only for the text-embedding-3 models, as a positive integer."""
    if not isinstance(body, dict):
        return _openai_error(400, "We could not parse the JSON body of your request.")
    model = body.get("model")
    if not model:
        return _openai_error(400, "you must provide a model parameter")
    if model not in models:
        return _openai_error(
            404, f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )  # fmt: skip
    texts = body.get("input")
    invalid = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
    if isinstance(texts, str):
        texts = [texts]
    if (
        not isinstance(texts, list)
        or not texts
        or len(texts) > MAX_EMBEDDING_INPUTS
        or not all(isinstance(t, str) and t for t in texts)
    ):
        return _openai_error(400, invalid, param="input")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return _openai_error(400, "'encoding_format' must be 'float' or 'base64'",
                             param="encoding_format")  # fmt: skip
    if "dimensions" in body and (
        not str(model).startswith("text-embedding-3")
        or not isinstance(body["dimensions"], int)
        or body["dimensions"] < 1
    ):
        return _openai_error(400, "This model does not support specifying dimensions.",
                             param="dimensions")  # fmt: skip
    return None


def openai_refusal(body: Any, models: Collection[str]) -> Refusal | None:
    """Why OpenAI would refuse this `POST /v1/chat/completions` body, or None."""
    if not isinstance(body, dict):
        return _openai_error(400, "We could not parse the JSON body of your request.")
    model = body.get("model")
    if not model:
        return _openai_error(400, "you must provide a model parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _openai_error(400, "[] is too short - 'messages'", param="messages")
    if model not in models:
        return _openai_error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if "tool_choice" in body and not body.get("tools"):
        return _openai_error(
            400,
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )
    if "stream_options" in body and not body.get("stream"):
        return _openai_error(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    return _openai_tool_turns(messages) or _openai_parts(messages, model)


# Image parts: the vision guide and chat/create's message schemas. Only user messages take
# image_url parts (system and developer take text parts, assistant text and refusal).
_OPENAI_USER_PARTS = ("text", "image_url", "input_audio", "file")
_OPENAI_TEXT_ONLY_MODELS = ("gpt-3.5", "o1-mini", "o3-mini")
_OPENAI_DETAIL = ("low", "high", "auto")


def _openai_parts(messages: list[Any], model: str) -> Refusal | None:
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        role = message.get("role")
        allowed = _OPENAI_USER_PARTS if role == "user" else ("text",)
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            where = f"messages[{i}].content[{j}]"
            if kind not in allowed:
                return _openai_error(
                    400, f"Invalid value: '{kind}'. Supported values are: "
                    + ", ".join(f"'{k}'" for k in allowed) + ".", param=f"{where}.type",
                )  # fmt: skip
            if kind == "text" and not isinstance(part.get("text"), str):
                return _openai_error(400, "Missing required parameter: 'text'.",
                                     param=f"{where}.text")  # fmt: skip
            if kind != "image_url":
                continue
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str):
                return _openai_error(400, "Missing required parameter: 'image_url.url'.",
                                     param=f"{where}.image_url.url")  # fmt: skip
            if not url.startswith(("http://", "https://", "data:image/")) or (
                url.startswith("data:") and ";base64," not in url
            ):
                return _openai_error(
                    400, "Invalid image URL: expected a URL or a base64 data URL of an image.",
                    param=f"{where}.image_url.url", code="invalid_image_url",
                )  # fmt: skip
            if image.get("detail", "auto") not in _OPENAI_DETAIL:
                return _openai_error(400, f"Invalid value: '{image.get('detail')}'.",
                                     param=f"{where}.image_url.detail")  # fmt: skip
            if model.startswith(_OPENAI_TEXT_ONLY_MODELS):
                return _openai_error(
                    400, "Invalid content type. image_url is only supported by certain models.",
                    param=f"{where}.type",
                )  # fmt: skip
    return None


def _openai_tool_turns(messages: list[Any]) -> Refusal | None:
    """A `tool` message answers a call of the assistant message before it; every call of an
    assistant message is answered by the `tool` messages right after it."""
    open_calls: dict[str, int] = {}  # call id -> index of the assistant message that made it
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return _openai_error(
                400, f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                "'user', 'tool', 'function' and 'developer'.",
                param=f"messages[{i}].role",
            )  # fmt: skip
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_calls:
                return _openai_error(
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"messages.[{i}].role",
                )
            del open_calls[call_id]
            continue
        if open_calls:
            first = min(open_calls.values())
            return _openai_error(
                400,
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(open_calls)}",
                param=f"messages.[{first}].role",
            )
        if role == "assistant":
            open_calls = {c.get("id"): i for c in message.get("tool_calls") or ()}
    if open_calls:
        first = min(open_calls.values())
        return _openai_error(
            400,
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(open_calls)}",
            param=f"messages.[{first}].role",
        )
    return None


# -- Anthropic Messages ---------------------------------------------------------------------


def _anthropic_error(status: int, kind: str, message: str) -> Refusal:
    return status, {"type": "error", "error": {"type": kind, "message": message}}


def _invalid(message: str) -> Refusal:
    return _anthropic_error(400, "invalid_request_error", message)


def anthropic_headers_refusal(headers: Mapping[str, str]) -> Refusal | None:
    """Every Anthropic endpoint wants a key and an API version."""
    if not headers.get("x-api-key"):
        return _anthropic_error(401, "authentication_error", "x-api-key header is required")
    if not headers.get("anthropic-version"):
        return _invalid("anthropic-version: header is required")
    return None


def anthropic_refusal(
    headers: Mapping[str, str], body: Any, models: Collection[str]
) -> Refusal | None:
    """Why Anthropic would refuse this `POST /v1/messages` request, or None."""
    if (refused := anthropic_headers_refusal(headers)) is not None:
        return refused
    if not isinstance(body, dict):
        return _invalid("There was an issue with your request body: not valid JSON")
    if not body.get("model"):
        return _invalid("model: Field required")
    if "max_tokens" not in body:
        return _invalid("max_tokens: Field required")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        return _invalid("max_tokens: Input should be greater than or equal to 1")
    messages = body.get("messages")
    if not isinstance(messages, list):
        return _invalid("messages: Field required")
    if body["model"] not in models:
        return _anthropic_error(404, "not_found_error", f"model: {body['model']}")
    if "tool_choice" in body and not body.get("tools"):
        return _invalid("tool_choice: tool_choice may only be specified while providing tools")
    return _anthropic_thinking(body, messages) or _anthropic_turns(messages)


_ADAPTIVE_MODELS = ("claude-opus-4-6", "claude-sonnet-4-6")


def _anthropic_thinking(body: dict[str, Any], messages: list[Any]) -> Refusal | None:
    """Extended thinking (the extended-thinking guide): a budget of at least 1,024 under
    max_tokens (adaptive only on the 4.6 models); no forced tool and no temperature but 1
    while thinking; a tool-use loop's last assistant turn opens with its thinking; and a
    thinking block sent back carries its signature."""
    thinking = body.get("thinking")
    for i, message in enumerate(messages):
        for j, block in enumerate(_blocks(message.get("content"))):
            if block.get("type") == "thinking" and not isinstance(block.get("signature"), str):
                return _invalid(f"messages.{i}.content.{j}.thinking.signature: Field required")
    if thinking is None or thinking.get("type") == "disabled":
        return None
    kind = thinking.get("type")
    if kind == "adaptive":
        if not str(body["model"]).startswith(_ADAPTIVE_MODELS):
            return _invalid(f"thinking.type: 'adaptive' is not supported for {body['model']}")
    elif kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return _invalid("thinking.enabled.budget_tokens: Input should be greater than or "
                            "equal to 1024")  # fmt: skip
        if budget >= body["max_tokens"]:
            return _invalid("`max_tokens` must be greater than `thinking.budget_tokens`")
    else:
        return _invalid(f"thinking.type: Input tag '{kind}' found using 'type' does not match "
                        "any of the expected tags: 'enabled', 'disabled', 'adaptive'")  # fmt: skip
    if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        return _invalid("Thinking may not be enabled when tool_choice forces tool use.")
    if body.get("temperature", 1) != 1:
        return _invalid("`temperature` may only be set to 1 when thinking is enabled or in "
                        "adaptive mode.")  # fmt: skip
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is not None:
        blocks = _blocks(messages[last].get("content"))
        if any(b.get("type") == "tool_use" for b in blocks) and (
            not blocks or blocks[0].get("type") not in ("thinking", "redacted_thinking")
        ):
            found = blocks[0].get("type") if blocks else "nothing"
            return _invalid(
                f"messages.{last}.content.0.type: Expected `thinking` or `redacted_thinking`, "
                f"but found `{found}`. When `thinking` is enabled, a final `assistant` message "
                "must start with a thinking block."
            )
    return None


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or () if isinstance(b, dict)]


_ANTHROPIC_BLOCKS = {
    "user": ("text", "image", "document", "tool_result"),
    "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
}
_ANTHROPIC_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _anthropic_block(block: dict[str, Any], role: str, where: str) -> Refusal | None:
    """A content block's type fits its turn; an image's source is base64 of one of the four
    image types, or a URL (the vision guide)."""
    kind = block.get("type")
    if kind not in _ANTHROPIC_BLOCKS[role]:
        expected = ", ".join(_ANTHROPIC_BLOCKS[role])
        return _invalid(f"{where}.type: Input tag '{kind}' found using 'type' does not match "
                        f"any of the expected tags: {expected}")  # fmt: skip
    if kind != "image":
        return None
    source = block.get("source")
    source_type = source.get("type") if isinstance(source, dict) else None
    if source_type == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return _invalid(f"{where}.source.url: Input should be a valid URL")
        return None
    if source_type != "base64":
        return _invalid(f"{where}.source: Input tag '{source_type}' found using 'type' does not "
                        "match any of the expected tags: 'base64', 'url'")  # fmt: skip
    if source.get("media_type") not in _ANTHROPIC_IMAGE_TYPES:
        return _invalid(
            f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
            "'image/gif' or 'image/webp'"
        )
    if not isinstance(source.get("data"), str) or not source["data"]:
        return _invalid(f"{where}.source.base64.data: Field required")
    return None


def _anthropic_turns(messages: list[Any]) -> Refusal | None:
    if not messages:
        return _invalid("messages: at least one message is required")
    pending: set[str] = set()  # tool_use ids the next user turn must answer
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return _invalid(
                f'messages.{i}.role: Input should be "user" or "assistant"'
                + (
                    "; the Messages API takes the system prompt as the top-level `system` "
                    "parameter, not as a message role"
                    if role == "system"
                    else ""
                )
            )
        if i == 0 and role != "user":
            return _invalid('messages: first message must use the "user" role')
        if i > 0 and messages[i - 1].get("role") == role:
            return _invalid(
                f'messages: roles must alternate between "user" and "assistant", but found '
                f'multiple "{role}" roles in a row'
            )
        content = message.get("content")
        blocks = _blocks(content)
        last_assistant = i == len(messages) - 1 and role == "assistant"
        if not blocks and not last_assistant:
            return _invalid(
                f"messages.{i}: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        for j, block in enumerate(blocks):
            if block.get("type") == "text" and not block.get("text"):
                return _invalid(f"messages.{i}.content.{j}.text: text content blocks must be "
                                "non-empty")  # fmt: skip
            if (refused := _anthropic_block(block, role, f"messages.{i}.content.{j}")) is not None:
                return refused
        answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if role == "user" and (unknown := answered - pending):
            return _invalid(
                f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` "
                f"blocks: {', '.join(sorted(map(str, unknown)))}. Each `tool_result` block "
                "must have a corresponding `tool_use` block in the previous message."
            )
        if pending and (missing := pending - answered):
            return _invalid(
                f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(missing))}. Each `tool_use` block must "
                "have a corresponding `tool_result` block in the next message."
            )
        pending = (
            {str(b.get("id")) for b in blocks if b.get("type") == "tool_use"}
            if role == "assistant"
            else set()
        )
    if pending and messages[-1].get("role") == "assistant":
        # A final assistant turn is a prefill: a tool call in it has no answer to wait for.
        return _invalid(
            f"messages.{len(messages) - 1}: `tool_use` ids were found without `tool_result` "
            f"blocks immediately after: {', '.join(sorted(pending))}. Each `tool_use` block "
            "must have a corresponding `tool_result` block in the next message."
        )
    return None
