"""The OpenAI chat completions API, as OpenAI, vLLM, Ollama and llama.cpp servers speak it.

`OpenAiCompatibleClient` maps an `LlmRequest` to `POST {base_url}/chat/completions` and the
reply (JSON, or SSE chunks ending in `[DONE]`) back to `LlmResponse` and stream events. The
wire mapping is plain functions over dicts; the client is the thin shell that does the I/O.

The HTTP plumbing both providers share lives here too, in `_HttpTransport`: the provider's
connections (origin.py), SSE framing, and the mapping of HTTP failures onto the `LlmError`s that
`RetryingLlmClient` (retry.py) knows how to treat: 429 -> `LlmRateLimited`, 5xx and broken
connections -> `LlmFailure` (retried), timeouts -> `LlmTimeout`, other 4xx -> `LlmFailure`
with the provider's own message (not retried).
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Literal

import orjson

from kelpie_trio.llm.chat_log import ChatRun, Prompt
from kelpie_trio.llm.origin import OriginError, OriginTimeout, Reply, open_origin
from kelpie_trio.llm.retry import parse_retry_after
from kelpie_trio.llm.types import (
    ChatMessage,
    Completed,
    ContentDelta,
    ContentPart,
    LlmClient,
    LlmError,
    LlmFailure,
    LlmRateLimited,
    LlmRequest,
    LlmResponse,
    LlmStreamEvent,
    LlmTimeout,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["OpenAiCompatibleClient"]

FinishReason = Literal["stop", "tool_calls", "length"]

DEFAULT_TIMEOUT = 120.0  # seconds without a byte from the provider (per read, not per reply)
DEFAULT_CONNECT_TIMEOUT = 10.0


# -- HTTP plumbing shared with anthropic.py -------------------------------------------------

_JSON_HEADERS = {"Content-Type": "application/json"}


def _dumps(body: Mapping[str, Any] | bytes) -> bytes:
    """The request body, by orjson: the prompt (system text, tool schemas, history) is the
    biggest thing the server serializes per step. Bytes are a body encoded already."""
    return body if isinstance(body, bytes) else orjson.dumps(body)


class _HttpTransport:
    """One provider's connections (llm/origin.py), speaking JSON in and JSON or SSE out."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        timeout: float,
        connect_timeout: float,
    ) -> None:
        self.provider = provider
        self.base_url = base_url
        self._origin = open_origin(
            base_url, headers, timeout=timeout, connect_timeout=connect_timeout
        )

    async def post_json(self, path: str, body: Mapping[str, Any] | bytes) -> Any:
        with self._mapped_errors():
            reply = await self._origin.post(path, _dumps(body), _JSON_HEADERS)
        if reply.is_error:
            raise self._error_for(reply)
        try:
            return reply.json()
        except ValueError as error:
            raise LlmFailure(f"{self.provider} answered with a body that is not JSON") from error

    async def sse_data(self, path: str, body: Mapping[str, Any] | bytes) -> AsyncIterator[str]:
        """The `data` of each server-sent event, in order, until the provider closes."""
        with self._mapped_errors():
            async with self._origin.stream(path, _dumps(body), _JSON_HEADERS) as reply:
                if reply.status >= 400:
                    raise self._error_for(await reply.read())
                lines = _Lines()
                data: list[str] = []
                while True:
                    chunk = await reply.next_chunk()
                    for line in lines.feed(chunk) if chunk is not None else lines.end():
                        if not line:  # a blank line ends an event
                            if data:
                                yield "\n".join(data)
                                data = []
                        elif line.startswith("data:"):
                            data.append(line[5:].removeprefix(" "))
                        # `event:`, `id:`, `retry:` and `:` comments carry nothing we need:
                        # both providers repeat the event type inside the data.
                    if chunk is None:
                        break
                if data:
                    yield "\n".join(data)

    async def aclose(self) -> None:
        await self._origin.aclose()

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        try:
            yield
        except OriginTimeout as error:
            raise LlmTimeout(f"{self.provider}: no answer in time ({error})") from error
        except OriginError as error:
            # Refused or dropped connections, a stream cut midway: transient, like a 5xx.
            raise LlmFailure(f"{self.provider}: {error}") from error

    def _error_for(self, reply: Reply) -> LlmError:
        status = reply.status
        text = f"{self.provider} answered {status}: {_error_message(reply)}"
        if status == 429:
            return LlmRateLimited(text, retry_after=_retry_after(reply.headers))
        return LlmFailure(text, status=status)


class _Lines:
    """A byte stream's lines as it arrives. A line ends at CRLF, LF or CR, as SSE allows."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[str]:
        data = self._rest + data
        held = b""
        if data.endswith(b"\r"):  # maybe the first half of a CRLF: wait for the next byte
            data, held = data[:-1], b"\r"
        parts = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._rest = parts.pop() + held  # the line not finished yet
        return [part.decode("utf-8", errors="replace") for part in parts]

    def end(self) -> list[str]:
        """What is left once the stream ended: a line ended by a CR held back, or one
        without a line break."""
        rest, self._rest = self._rest, b""
        if rest.endswith(b"\r"):
            return [rest[:-1].decode("utf-8", errors="replace")]
        return [rest.decode("utf-8", errors="replace")] if rest else []


def _error_message(reply: Reply) -> str:
    """The provider's own words: OpenAI and Anthropic say `{"error": {"message": ...}}`,
    Ollama `{"error": "..."}`, older vLLM `{"message": ...}`."""
    try:
        data = reply.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(data.get("message"), str):
            return data["message"]
    text = reply.text.strip()
    return text[:500] if text else reply.reason


def _retry_after(headers: Mapping[str, str]) -> float | None:
    # OpenAI also sends milliseconds, the more precise of the two.
    if (ms := headers.get("retry-after-ms")) is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000)
    return parse_retry_after(headers.get("retry-after"), date=headers.get("date"))


def _loads(data: str, provider: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as error:
        raise LlmFailure(
            f"{provider} streamed an event that is not JSON: {data[:200]!r}"
        ) from error


# -- the OpenAI wire format ----------------------------------------------------------------


def _request_body(
    request: LlmRequest, *, stream: bool, max_tokens_field: str = "max_tokens"
) -> dict[str, Any]:
    """The chat completions request body for `request`."""
    body: dict[str, Any] = {"messages": [_openai_message(m) for m in request.messages]}
    body.update(_body_fields(request, stream=stream, max_tokens_field=max_tokens_field))
    return body


def _body_fields(request: LlmRequest, *, stream: bool, max_tokens_field: str) -> dict[str, Any]:
    """Everything of the request body but its messages."""
    body: dict[str, Any] = {"model": request.model}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": dict(t.parameters),
                },
            }
            for t in request.tools
        ]
        # Servers refuse a tool_choice without tools, so it only goes with them.
        body["tool_choice"] = (
            {"type": "function", "function": {"name": request.forced_tool}}
            if request.forced_tool
            else request.tool_choice
        )
    if request.max_tokens is not None:
        body[max_tokens_field] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _encoded_body(request: LlmRequest, *, stream: bool, max_tokens_field: str) -> bytes:
    """`_request_body`, encoded. A window's history (a `Prompt`) is not walked: its log's
    messages encoded by an earlier step are copied as bytes, only the new ones encoded."""
    messages = request.messages
    if not isinstance(messages, Prompt):
        return _dumps(_request_body(request, stream=stream, max_tokens_field=max_tokens_field))
    parts: list[bytes | bytearray] = [orjson.dumps(_openai_message(m)) for m in messages.head]
    if messages.run:
        parts.append(_encoded_run(messages.run))
    fields = _dumps(_body_fields(request, stream=stream, max_tokens_field=max_tokens_field))
    return b"".join((b'{"messages":[', b",".join(parts), b"],", fields[1:]))


class _EncodedLog:
    """A `ChatLog`'s messages in this wire format so far, each one's JSON and a comma back
    to back in `data`: message i and its comma are `data[ends[i] : ends[i + 1]]`."""

    __slots__ = ("data", "ends")

    def __init__(self) -> None:
        self.data = bytearray()
        self.ends = [0]


def _encoded_run(run: ChatRun) -> bytearray:
    """The messages of `run`, encoded and joined by commas (without brackets)."""
    log = run.log
    encoded = log.encoded.get("openai")
    if encoded is None:
        encoded = log.encoded["openai"] = _EncodedLog()
    data, ends = encoded.data, encoded.ends
    for message in itertools.islice(log.items, len(ends) - 1, run.end):
        data += orjson.dumps(_openai_message(message))
        data += b","
        ends.append(len(data))
    return data[ends[run.start] : ends[run.end] - 1]


def _openai_message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id,
            "content": message.content or "",
        }
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.parts:
        wire["content"] = [_openai_part(p) for p in message.parts]
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    elif message.content is None:
        wire["content"] = ""
    return wire


def _openai_part(part: ContentPart) -> dict[str, Any]:
    """A content part of a user message; an image is an `image_url` part whose URL is the
    image's own or a data URL of its base64 bytes."""
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    url = part.url if part.url is not None else f"data:{part.media_type};base64,{part.data}"
    image: dict[str, Any] = {"url": url}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def _finish_reason(reason: str | None, has_tool_calls: bool) -> FinishReason:
    if reason == "length":
        return "length"
    # Some local servers say "stop" even when the reply is a tool call.
    if has_tool_calls or reason in ("tool_calls", "function_call"):
        return "tool_calls"
    return "stop"


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    return Usage(
        prompt_tokens=data.get("prompt_tokens") or 0,
        completion_tokens=data.get("completion_tokens") or 0,
    )


def _response(data: Any, request: LlmRequest) -> LlmResponse:
    """An `LlmResponse` from a chat completions reply body."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        calls = tuple(
            ToolCall(
                id=call.get("id") or f"call_{i}",
                name=call["function"]["name"],
                arguments=call["function"].get("arguments") or "{}",
            )
            for i, call in enumerate(message.get("tool_calls") or ())
        )
    except (KeyError, IndexError, TypeError) as error:
        raise LlmFailure(f"openai-compatible reply without a usable choice: {error!r}") from error
    return LlmResponse(
        message=ChatMessage("assistant", message.get("content") or None, calls),
        finish_reason=_finish_reason(choice.get("finish_reason"), bool(calls)),
        usage=_usage(data.get("usage")),
        model=data.get("model") or request.model,
    )


class _OpenAiStream:
    """Assembles a streamed reply from its chunks (sans-IO)."""

    def __init__(self, request: LlmRequest) -> None:
        self.model = request.model
        self.text: list[str] = []
        self.calls: dict[int, list[Any]] = {}  # index -> [id, name, argument pieces]
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.done = False

    def feed(self, data: str) -> list[LlmStreamEvent]:
        if data.strip() == "[DONE]":
            self.done = True
            return []
        chunk = _loads(data, "openai-compatible server")
        try:
            return self._feed(chunk)
        except (KeyError, TypeError, AttributeError) as error:
            raise LlmFailure(
                f"openai-compatible server streamed a malformed chunk: {data[:200]!r}"
            ) from error

    def _feed(self, chunk: Any) -> list[LlmStreamEvent]:
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise LlmFailure(f"openai-compatible server failed mid-stream: {message}")
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        events: list[LlmStreamEvent] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if content := delta.get("content"):
                self.text.append(content)
                events.append(ContentDelta(content))
            for call in delta.get("tool_calls") or ():
                events.append(self._tool_call_delta(call))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _tool_call_delta(self, call: dict[str, Any]) -> ToolCallDelta:
        function = call.get("function") or {}
        call_id, name = call.get("id"), function.get("name")
        index = call.get("index")
        if index is None:
            # Servers that send each call whole and unindexed: a new id is a new call.
            known = [i for i, entry in self.calls.items() if call_id and entry[0] == call_id]
            if known:
                index = known[0]
            elif call_id or not self.calls:
                index = len(self.calls)
            else:
                index = max(self.calls)  # more of the latest call
        entry = self.calls.setdefault(index, [None, None, []])
        entry[0] = entry[0] or call_id
        entry[1] = entry[1] or name
        arguments = function.get("arguments") or ""
        entry[2].append(arguments)
        return ToolCallDelta(index, call_id, name, arguments)

    def finish(self) -> LlmResponse:
        if not self.done and self.finish_reason is None:
            raise LlmFailure("openai-compatible stream ended before the reply was complete")
        calls = tuple(
            ToolCall(
                id=entry[0] or f"call_{index}",
                name=entry[1] or "",
                arguments="".join(entry[2]) or "{}",
            )
            for index, entry in sorted(self.calls.items())
        )
        return LlmResponse(
            message=ChatMessage("assistant", "".join(self.text) or None, calls),
            finish_reason=_finish_reason(self.finish_reason, bool(calls)),
            usage=self.usage,
            model=self.model,
        )


class OpenAiCompatibleClient(LlmClient):
    """Chat completions at `base_url` (ending in `/v1`, as the catalog's endpoints do).

    `api_key` goes out as a bearer token when given (local servers usually need none).
    `max_tokens_field` is `max_completion_tokens` for api.openai.com, whose reasoning models
    refuse `max_tokens`; vLLM, Ollama and llama.cpp know `max_tokens`. `timeout` bounds each
    wait for bytes, so a stream may run longer as long as it keeps producing.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_tokens_field: str = "max_tokens",
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = _HttpTransport(
            provider="openai-compatible server",
            base_url=base_url,
            headers=headers,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
        self.base_url = base_url
        self.max_tokens_field = max_tokens_field

    def __repr__(self) -> str:  # never the key
        return f"OpenAiCompatibleClient({self.base_url!r})"

    async def complete(self, request: LlmRequest) -> LlmResponse:
        body = _encoded_body(request, stream=False, max_tokens_field=self.max_tokens_field)
        return _response(await self._transport.post_json("chat/completions", body), request)

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmStreamEvent]:
        body = _encoded_body(request, stream=True, max_tokens_field=self.max_tokens_field)
        state = _OpenAiStream(request)
        async with contextlib.aclosing(self._transport.sse_data("chat/completions", body)) as sse:
            async for data in sse:
                for event in state.feed(data):
                    yield event
                if state.done:
                    break
        yield Completed(state.finish())

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> OpenAiCompatibleClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
