"""What every LLM provider speaks: requests, replies, stream events, errors.

The OpenAI-compatible and Anthropic providers and the simulator's
`SimLlmClient` all implement `LlmClient`, so the agent loop never knows which
one it is talking to, and the simulator's LLM faults exercise the same error
paths a real provider's failures take.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import attrs

__all__ = [
    "ChatMessage",
    "Completed",
    "ContentDelta",
    "ContentPart",
    "ImagePart",
    "LlmClient",
    "LlmError",
    "LlmFailure",
    "LlmRateLimited",
    "LlmRequest",
    "LlmResponse",
    "LlmStreamEvent",
    "LlmTimeout",
    "ReasoningDelta",
    "TextPart",
    "ToolCall",
    "ToolCallDelta",
    "ToolSchema",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]


@attrs.frozen
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it


@attrs.frozen
class TextPart:
    text: str


@attrs.frozen
class ImagePart:
    """An image in a user message: at a URL the provider fetches, or inline (base64)."""

    url: str | None = None
    data: str | None = None  # base64, with its media_type
    media_type: str | None = None
    detail: str | None = None  # OpenAI's "low" | "high" | "auto"


ContentPart = TextPart | ImagePart


@attrs.frozen
class ChatMessage:
    role: Role
    content: str | None = None  # the text (of all text parts, when `parts` is given)
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # role "tool": the call this result answers
    # A user message with images: its content in order, text and images. Empty: `content`.
    parts: tuple[ContentPart, ...] = ()
    # An assistant's native reasoning (Anthropic's thinking block) and the signature that
    # lets it be sent back, as the API wants within a tool-use loop.
    thinking: str | None = None
    thinking_signature: str | None = None


@attrs.frozen
class ToolSchema:
    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON schema of the arguments object


@attrs.frozen
class LlmRequest:
    model: str
    # A tuple, or a `chat_log.Prompt`: a window's history shown without a copy.
    messages: Sequence[ChatMessage]
    tools: tuple[ToolSchema, ...] = ()
    tool_choice: Literal["auto", "required", "none"] = "auto"
    # The one tool the model must call (a tool rule forces it); over `tool_choice`.
    forced_tool: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    # Native reasoning (Anthropic's extended thinking): its token budget, 0 for adaptive
    # thinking (the 4.6 models), None for none.
    thinking_budget: int | None = None


@attrs.frozen
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen
class LlmResponse:
    message: ChatMessage  # role "assistant": text, tool calls, or both
    finish_reason: Literal["stop", "tool_calls", "length"]
    usage: Usage
    model: str


@attrs.frozen
class ContentDelta:
    text: str


@attrs.frozen
class ReasoningDelta:
    text: str  # the next piece of the model's native reasoning


@attrs.frozen
class ToolCallDelta:
    index: int
    id: str | None
    name: str | None
    arguments: str  # the next piece of the JSON arguments


@attrs.frozen
class Completed:
    response: LlmResponse  # the whole reply, as `complete` would have returned it


LlmStreamEvent = ContentDelta | ReasoningDelta | ToolCallDelta | Completed


class LlmError(Exception):
    """The provider did not produce a reply."""


class LlmTimeout(LlmError):
    """The provider did not answer in time."""


class LlmFailure(LlmError):
    """The provider answered with an error (a 5xx, a broken stream)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LlmRateLimited(LlmError):
    """The provider refused for now (HTTP 429); `retry_after` seconds, when it said."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LlmClient(abc.ABC):
    @abc.abstractmethod
    async def complete(self, request: LlmRequest) -> LlmResponse: ...

    @abc.abstractmethod
    def stream(self, request: LlmRequest) -> AsyncIterator[LlmStreamEvent]:
        """Deltas as the model produces them, then one `Completed` with the whole reply."""
