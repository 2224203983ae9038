"""Anthropic's Messages API.

`AnthropicClient` maps an `LlmRequest` to `POST {base_url}/messages`: the system prompt goes
apart, tool calls and their results become `tool_use` / `tool_result` content blocks, and
`max_tokens`, which Anthropic requires, defaults to 4096. Replies (JSON, or the typed SSE
events `message_start` ... `message_stop`) come back as `LlmResponse` and stream events. The
HTTP plumbing and its error mapping are shared with the OpenAI-compatible client.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from kelpie_trio.llm.config import ANTHROPIC_BASE_URL
from kelpie_trio.llm.openai_compat import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    FinishReason,
    _HttpTransport,
    _loads,
)
from kelpie_trio.llm.types import (
    ChatMessage,
    Completed,
    ContentDelta,
    ContentPart,
    LlmClient,
    LlmFailure,
    LlmRateLimited,
    LlmRequest,
    LlmResponse,
    LlmStreamEvent,
    ReasoningDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS", "AnthropicClient"]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

_OPENING = {"type": "text", "text": "(The conversation so far.)"}

_TOOL_CHOICE = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}

# The HTTP status each error type of Anthropic's stands for, so an `error` event mid-stream is
# judged (retried or not) like the same error before it.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def _request_body(request: LlmRequest, *, stream: bool) -> dict[str, Any]:
    # The request's first message, when a system one, is the system prompt; any later one
    # (a system-role input: an event) stays where it is, as a user turn that says it is a
    # system alert, since the Messages API has no system role inside the conversation.
    lead = 1 if request.messages and request.messages[0].role == "system" else 0
    system = [m.content for m in request.messages[:lead] if m.content]
    messages: list[dict[str, Any]] = []
    for message in request.messages[lead:]:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _content_blocks(message)
        if not blocks:
            continue  # Anthropic refuses empty content
        # Consecutive turns of one role become one turn: the tool results answering parallel
        # calls must all sit in the user turn right after the calls.
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    if not messages or messages[0]["role"] != "user":
        # Anthropic refuses a conversation that does not open with the user; a history may
        # (an imported agent's greeting), so a user turn saying so goes first.
        messages.insert(0, {"role": "user", "content": [_OPENING]})
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
            for t in request.tools
        ]
        body["tool_choice"] = (
            {"type": "tool", "name": request.forced_tool}
            if request.forced_tool
            else _TOOL_CHOICE[request.tool_choice]
        )
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if _thinks(request):
        budget = request.thinking_budget or 0
        if budget:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
            body["max_tokens"] = max(body["max_tokens"], budget + 1)  # the reply's room too
        else:
            body["thinking"] = {"type": "adaptive"}
        body.pop("temperature", None)  # thinking takes only the default
    if stream:
        body["stream"] = True
    return body


def _thinks(request: LlmRequest) -> bool:
    """Whether this request asks for extended thinking. The API refuses it with a forced
    tool, and, within a tool-use loop, unless the loop's assistant turns open with their
    signed thinking: a loop begun without it goes on without it (its next user text
    turn may think again)."""
    if request.thinking_budget is None or request.forced_tool is not None:
        return False
    if request.tools and request.tool_choice == "required":
        return False
    for message in reversed(request.messages):
        if message.role == "user":
            return True
        if message.role == "assistant" and message.tool_calls and not message.thinking_signature:
            return False
    return True


def _content_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.content or "",
            }
        ]
    if message.role == "system":
        alert = f"<event>SYSTEM ALERT: {message.content}</event>"
        return [{"type": "text", "text": alert}] if message.content else []
    blocks: list[dict[str, Any]] = []
    if message.thinking_signature:  # sent back as given: the API checks its signature
        blocks.append({"type": "thinking", "thinking": message.thinking or "",
                       "signature": message.thinking_signature})  # fmt: skip
    if message.parts:
        blocks += [_anthropic_part(p) for p in message.parts if not _empty(p)]
    elif message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call)})
    return blocks


def _empty(part: ContentPart) -> bool:
    return isinstance(part, TextPart) and not part.text  # Anthropic refuses empty text blocks


def _anthropic_part(part: ContentPart) -> dict[str, Any]:
    """A content part of a user message; an image is an `image` block with a url or base64
    source (Anthropic has no detail setting: it is dropped)."""
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if part.url is not None:
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    source = {"type": "base64", "media_type": part.media_type, "data": part.data}
    return {"type": "image", "source": source}


def _input(call: ToolCall) -> dict[str, Any]:
    # Anthropic wants an object. A call whose arguments were not one (a model's malformed JSON)
    # is replayed with none; the tool result that follows it already says what went wrong.
    try:
        value = json.loads(call.arguments) if call.arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _finish_reason(stop_reason: str | None, has_tool_calls: bool) -> FinishReason:
    if stop_reason == "max_tokens":
        return "length"
    if stop_reason == "tool_use" or has_tool_calls:
        return "tool_calls"
    return "stop"  # end_turn, stop_sequence, refusal, pause_turn


def _usage(data: Any, previous: Usage | None = None) -> Usage:
    if not isinstance(data, dict):
        return previous or Usage()
    # input_tokens leaves out what was read from or written to the prompt cache.
    prompt = sum(
        data.get(k) or 0
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    if previous is not None and not prompt:
        prompt = previous.prompt_tokens  # message_delta repeats only the output count
    completion = data.get("output_tokens")
    if completion is None and previous is not None:
        completion = previous.completion_tokens
    return Usage(prompt_tokens=prompt, completion_tokens=completion or 0)


def _response(data: Any, request: LlmRequest) -> LlmResponse:
    try:
        blocks = data["content"]
        text = "".join(b["text"] for b in blocks if b.get("type") == "text")
        thoughts = [b for b in blocks if b.get("type") == "thinking"]
        thinking = "".join(b.get("thinking") or "" for b in thoughts) or None
        signature = thoughts[-1].get("signature") if len(thoughts) == 1 else None
        calls = tuple(
            ToolCall(id=b["id"], name=b["name"], arguments=json.dumps(b.get("input") or {}))
            for b in blocks
            if b.get("type") == "tool_use"
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise LlmFailure(f"anthropic reply without usable content: {error!r}") from error
    return LlmResponse(
        message=ChatMessage(
            "assistant", text or None, calls, thinking=thinking, thinking_signature=signature
        ),
        finish_reason=_finish_reason(data.get("stop_reason"), bool(calls)),
        usage=_usage(data.get("usage")),
        model=data.get("model") or request.model,
    )


def _stream_error(error: Any) -> LlmFailure | LlmRateLimited:
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    text = f"anthropic failed mid-stream: {kind}: {message}"
    status = _ERROR_STATUS.get(kind or "")
    if status == 429:
        return LlmRateLimited(text)
    return LlmFailure(text, status=status)


class _AnthropicStream:
    """Assembles a streamed reply from its typed events (sans-IO)."""

    def __init__(self, request: LlmRequest) -> None:
        self.model = request.model
        self.text: list[str] = []
        # content block index -> (tool ordinal, id, name, argument pieces)
        self.tools: dict[int, tuple[int, str, str, list[str]]] = {}
        self.stop_reason: str | None = None
        self.usage = Usage()
        self.stopped = False
        self.thinking: list[str] = []
        self.signatures: list[str] = []

    def feed(self, data: str) -> list[LlmStreamEvent]:
        event = _loads(data, "anthropic")
        try:
            return self._feed(event)
        except (KeyError, TypeError, AttributeError) as error:
            raise LlmFailure(f"anthropic streamed a malformed event: {data[:200]!r}") from error

    def _feed(self, event: Any) -> list[LlmStreamEvent]:
        kind = event.get("type")
        if kind == "error":
            raise _stream_error(event.get("error"))
        if kind == "message_start":
            message = event.get("message") or {}
            self.model = message.get("model") or self.model
            self.usage = _usage(message.get("usage"))
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                ordinal = len(self.tools)
                self.tools[event["index"]] = (ordinal, block["id"], block["name"], [])
                return [ToolCallDelta(ordinal, block["id"], block["name"], "")]
            if block.get("type") == "text" and block.get("text"):
                self.text.append(block["text"])
                return [ContentDelta(block["text"])]
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                self.text.append(delta["text"])
                return [ContentDelta(delta["text"])]
            if delta.get("type") == "input_json_delta" and event.get("index") in self.tools:
                ordinal, _, _, pieces = self.tools[event["index"]]
                piece = delta.get("partial_json") or ""
                pieces.append(piece)
                return [ToolCallDelta(ordinal, None, None, piece)] if piece else []
            if delta.get("type") == "thinking_delta" and delta.get("thinking"):
                self.thinking.append(delta["thinking"])
                return [ReasoningDelta(delta["thinking"])]
            if delta.get("type") == "signature_delta":
                self.signatures.append(delta.get("signature") or "")
        elif kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            self.usage = _usage(event.get("usage"), self.usage)
        elif kind == "message_stop":
            self.stopped = True
        return []  # ping, content_block_stop, and event types newer than this code

    def finish(self) -> LlmResponse:
        if not self.stopped:
            raise LlmFailure("anthropic stream ended before message_stop")
        calls = tuple(
            ToolCall(id=call_id, name=name, arguments="".join(pieces) or "{}")
            for _, call_id, name, pieces in sorted(self.tools.values())
        )
        return LlmResponse(
            message=ChatMessage(
                "assistant",
                "".join(self.text) or None,
                calls,
                thinking="".join(self.thinking) or None,
                # One signed block is sent back whole; several (rare) are not kept.
                thinking_signature=self.signatures[0] if len(self.signatures) == 1 else None,
            ),
            finish_reason=_finish_reason(self.stop_reason, bool(calls)),
            usage=self.usage,
            model=self.model,
        )


class AnthropicClient(LlmClient):
    """The Messages API at `base_url` (Anthropic's own unless a proxy is named).

    Sends `x-api-key` and `anthropic-version`. `timeout` bounds each wait for bytes, so a
    stream may run longer as long as it keeps producing.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = ANTHROPIC_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        anthropic_version: str = ANTHROPIC_VERSION,
    ) -> None:
        self._transport = _HttpTransport(
            provider="anthropic",
            base_url=base_url,
            headers={"x-api-key": api_key, "anthropic-version": anthropic_version},
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
        self.base_url = base_url

    def __repr__(self) -> str:  # never the key
        return f"AnthropicClient(base_url={self.base_url!r})"

    async def complete(self, request: LlmRequest) -> LlmResponse:
        body = _request_body(request, stream=False)
        return _response(await self._transport.post_json("messages", body), request)

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmStreamEvent]:
        state = _AnthropicStream(request)
        body = _request_body(request, stream=True)
        async with contextlib.aclosing(self._transport.sse_data("messages", body)) as sse:
            async for data in sse:
                for event in state.feed(data):
                    yield event
                if state.stopped:
                    break
        yield Completed(state.finish())

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> AnthropicClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
