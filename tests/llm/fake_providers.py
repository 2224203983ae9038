"""A fake LLM provider on 127.0.0.1: OpenAI-format and Anthropic-format replies, scripted per test.

`FakeProvider` is a raw ASGI app served by Hypercorn's trio worker on a free loopback port.
A test scripts the replies it will give, in order (`provider.script(...)`), and reads back
what the client sent (`provider.received`).

It is as strict as the real APIs (provider_rules.py): a request OpenAI or Anthropic would
refuse (a model name it does not serve, such as a handle; `tool_choice` without tools; a tool
result that answers no call; Anthropic's turn rules, `max_tokens`, headers) gets the provider's
own status and error body and consumes no scripted reply. `GET /v1/models` lists the models it
serves in OpenAI's shape, or in Anthropic's when asked with Anthropic's headers. A stream
carries its usage chunk only when the request asked `stream_options.include_usage`, as OpenAI
does. Builders make the replies: JSON or SSE streams in
either format, errors with the provider's own error bodies (429 with Retry-After, 5xx, 4xx),
and misbehaviour: a slow reply (`delay`), a stream that stalls (`stall_after`) or whose
connection drops midway (`cut_after`). Delays are `trio.sleep`s, so under the `autojump_clock`
fixture they cost no wall time.

    async with serving() as provider:
        provider.script(openai_completion("hello"))
        client = OpenAiCompatibleClient(provider.url + "/v1")
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

import attrs
import hypercorn.config
import hypercorn.trio
import trio

from tests.llm.provider_rules import (
    Refusal,
    anthropic_headers_refusal,
    anthropic_refusal,
    openai_embeddings_refusal,
    openai_refusal,
)

__all__ = [
    "ANTHROPIC_MODELS",
    "OPENAI_EMBEDDING_MODELS",
    "OPENAI_MODELS",
    "FakeProvider",
    "Received",
    "Reply",
    "anthropic_error",
    "anthropic_message",
    "anthropic_stream",
    "openai_completion",
    "openai_error",
    "openai_stream",
    "serving",
]

# (call id, tool name, arguments): arguments as a dict for JSON replies, as the pieces of the
# JSON text for streams.
ToolCallSpec = tuple[str, str, Any]

# The models the fake serves unless a test says otherwise: the test suite's own names and the
# real names behind the handles the end-to-end tests use.
OPENAI_MODELS = ("gpt-test", "gpt-4o-mini", "gpt-4.1")
OPENAI_EMBEDDING_MODELS = ("text-embedding-3-small",)
ANTHROPIC_MODELS = ("claude-test", "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001")


@attrs.frozen
class Reply:
    status: int = 200
    json: Any = None  # the body of a JSON reply
    events: tuple[tuple[str | None, str], ...] | None = None  # (event name, data): an SSE reply
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0  # before the status line
    stall_after: int | None = None  # stream: after this many events, hang
    cut_after: int | None = None  # stream: after this many events, drop the connection

    def slow(self, seconds: float) -> Reply:
        return attrs.evolve(self, delay=seconds)


@attrs.frozen
class Received:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


class FakeProvider:
    def __init__(self) -> None:
        self.url = ""  # http://127.0.0.1:<port>, once serving
        self.replies: list[Reply] = []
        self.received: list[Received] = []  # every POST, refused or not
        self.refused: list[Refusal] = []
        self.listed = 0  # GET /v1/models answered
        # What `GET /v1/models` lists (a test may edit the entries: context windows, extras);
        # a model name outside these lists is refused.
        self.openai_models: list[dict[str, Any]] = [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}
            for m in (*OPENAI_MODELS, *OPENAI_EMBEDDING_MODELS)
        ]
        self.anthropic_models: list[dict[str, Any]] = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-09-29T00:00:00Z"}
            for m in ANTHROPIC_MODELS
        ]
        self.embedding_models = set(OPENAI_EMBEDDING_MODELS)
        # Set (to a function of the model and one text), embeddings are answered with its
        # vectors without a script, in OpenAI's shape; unset, they take scripted replies.
        self.embed: Callable[[str, str], list[float]] | None = None

    def serve_only(self, *, openai: Sequence[str] = (), anthropic: Sequence[str] = ()) -> None:
        """Serve exactly these model names."""
        self.openai_models = [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}
            for m in openai
        ]
        self.anthropic_models = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-09-29T00:00:00Z"}
            for m in anthropic
        ]
        self.embedding_models &= set(openai)

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"].rstrip("/")
        if method == "GET" and path.endswith("/models"):
            self.listed += 1
            await _send_json(send, self._model_list(headers, scope.get("query_string", b"")))
            return
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        self.received.append(Received(method, scope["path"], headers, parsed))
        refused = self._refusal(method, path, headers, parsed)
        if refused is not None:
            self.refused.append(refused)
            await _send_json(send, Reply(status=refused[0], json=refused[1]))
            return
        if self.embed is not None and method == "POST" and path.endswith("/embeddings"):
            await _send_json(send, Reply(json=_embeddings(self.embed, parsed)))
            return
        if self.replies:
            reply = self.replies.pop(0)
        else:  # a 4xx, so no client retries it: the test fails at once, saying why
            reply = openai_error(418, "fake provider: the test's script ran out of replies")
        if reply.delay:
            await trio.sleep(reply.delay)
        if reply.events is None:
            await _send_json(send, reply)
        else:
            await _send_sse(send, _as_asked(reply, path, parsed))

    def _refusal(self, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
        if method == "POST" and path.endswith("/chat/completions"):
            return openai_refusal(body, [m["id"] for m in self.openai_models])
        if method == "POST" and path.endswith("/messages"):
            return anthropic_refusal(headers, body, [m["id"] for m in self.anthropic_models])
        if method == "POST" and path.endswith("/embeddings"):
            return openai_embeddings_refusal(body, self.embedding_models)
        return 404, openai_error(404, f"Invalid URL ({method} {path})").json

    def _model_list(self, headers: dict[str, str], query: bytes) -> Reply:
        if "anthropic-version" not in headers and "x-api-key" not in headers:
            return Reply(json={"object": "list", "data": self.openai_models})
        if (refused := anthropic_headers_refusal(headers)) is not None:
            return Reply(status=refused[0], json=refused[1])
        # Anthropic pages its list: `limit` (default 20) after `after_id`.
        params = dict(p.split("=", 1) for p in query.decode().split("&") if "=" in p)
        ids = [m["id"] for m in self.anthropic_models]
        start = ids.index(params["after_id"]) + 1 if params.get("after_id") in ids else 0
        page = self.anthropic_models[start : start + int(params.get("limit", 20))]
        return Reply(
            json={
                "data": page,
                "has_more": start + len(page) < len(ids),
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            }
        )


def _embeddings(embed: Callable[[str, str], list[float]], body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's answer to an embeddings request the rules let through."""
    texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
    tokens = sum(len(t.split()) for t in texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": embed(body["model"], t)}
            for i, t in enumerate(texts)
        ],
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _as_asked(reply: Reply, path: str, body: Any) -> Reply:
    """An OpenAI stream as the request asked for it: the final usage chunk only with
    `stream_options.include_usage`."""
    if not path.endswith("/chat/completions") or reply.events is None:
        return reply
    options = body.get("stream_options") if isinstance(body, dict) else None
    if isinstance(options, dict) and options.get("include_usage"):
        # Asked for, every chunk carries a `usage` field, null but in the last one.
        return attrs.evolve(reply, events=tuple((n, _with_null_usage(d)) for n, d in reply.events))
    kept = tuple(e for e in reply.events if not _is_usage_chunk(e[1]))
    return attrs.evolve(reply, events=kept)


def _with_null_usage(data: str) -> str:
    try:
        chunk = json.loads(data)
    except ValueError:
        return data  # [DONE]
    if isinstance(chunk, dict) and "usage" not in chunk:
        chunk["usage"] = None
    return json.dumps(chunk)


def _is_usage_chunk(data: str) -> bool:
    try:
        chunk = json.loads(data)
    except ValueError:
        return False
    return isinstance(chunk, dict) and chunk.get("choices") == [] and "usage" in chunk


async def _send_json(send: Any, reply: Reply) -> None:
    body = json.dumps(reply.json).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.encode(), v.encode()) for k, v in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_sse(send: Any, reply: Reply) -> None:
    assert reply.events is not None
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    headers += [(k.encode(), v.encode()) for k, v in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    for sent, (name, data) in enumerate(reply.events):
        if sent == reply.stall_after:
            await trio.sleep_forever()
        if sent == reply.cut_after:
            return  # no final chunk: the server closes the connection mid-body
        frame = (f"event: {name}\n" if name else "") + f"data: {data}\n\n"
        await send({"type": "http.response.body", "body": frame.encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[FakeProvider]:
    """A `FakeProvider` listening on a free port of 127.0.0.1 until the block ends."""
    provider = FakeProvider()
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(hypercorn.trio.serve, provider.app, config))
        provider.url = binds[0]
        try:
            yield provider
        finally:
            nursery.cancel_scope.cancel()


# -- OpenAI chat completions ----------------------------------------------------------------


def openai_completion(
    content: str | None = None,
    *,
    tool_calls: Sequence[ToolCallSpec] = (),
    finish_reason: str | None = None,
    usage: tuple[int, int] = (11, 7),
    model: str = "gpt-test",
) -> Reply:
    """A chat completion; tool call arguments given as dicts."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            for call_id, name, arguments in tool_calls
        ]
    return Reply(
        json={
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
                }
            ],
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": sum(usage),
            },
        }
    )


def openai_stream(
    pieces: Sequence[str] = (),
    *,
    tool_calls: Sequence[ToolCallSpec] = (),
    finish_reason: str | None = None,
    usage: tuple[int, int] | None = (11, 7),
    model: str = "gpt-test",
    done: bool = True,
) -> Reply:
    """A streamed chat completion: text pieces, then each tool call's argument pieces."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return json.dumps({"id": "chatcmpl-fake", "model": model, "choices": [choice]})

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in pieces]
    for index, (call_id, name, arguments) in enumerate(tool_calls):
        first = {"index": index, "id": call_id, "type": "function"}
        events.append(chunk({"tool_calls": [{**first, "function": {"name": name}}]}))
        events += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in arguments
        ]
    events.append(chunk({}, finish_reason or ("tool_calls" if tool_calls else "stop")))
    if usage is not None:
        totals = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
        events.append(json.dumps({"id": "chatcmpl-fake", "choices": [], "usage": totals}))
    if done:
        events.append("[DONE]")
    return Reply(events=tuple((None, e) for e in events))


def openai_error(
    status: int, message: str = "fake error", *, retry_after: str | None = None
) -> Reply:
    headers = (("retry-after", retry_after),) if retry_after is not None else ()
    body = {"error": {"message": message, "type": "fake_error", "param": None, "code": None}}
    return Reply(status=status, json=body, headers=headers)


# -- Anthropic Messages ---------------------------------------------------------------------

StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence"]


def anthropic_message(
    text: str | None = None,
    *,
    tool_uses: Sequence[ToolCallSpec] = (),
    stop_reason: StopReason | None = None,
    usage: tuple[int, int] = (13, 5),
    model: str = "claude-test",
) -> Reply:
    """A Messages reply; tool inputs given as dicts."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [
        {"type": "tool_use", "id": call_id, "name": name, "input": arguments}
        for call_id, name, arguments in tool_uses
    ]
    return Reply(
        json={
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason or ("tool_use" if tool_uses else "end_turn"),
            "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
        }
    )


def anthropic_stream(
    pieces: Sequence[str] = (),
    *,
    tool_uses: Sequence[ToolCallSpec] = (),
    stop_reason: StopReason | None = None,
    usage: tuple[int, int] = (13, 5),
    model: str = "claude-test",
    error: tuple[str, str] | None = None,
    thinking: tuple[Sequence[str], str] | None = None,
) -> Reply:
    """A streamed Messages reply: a text block of `pieces`, then one block per tool use
    (arguments as JSON text pieces). `error=(type, message)` ends it with an `error` event
    after the first text piece instead. `thinking=(pieces, signature)` opens it with a
    thinking block."""
    events: list[tuple[str, dict[str, Any]]] = []
    start = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": usage[0], "output_tokens": 1},
    }
    events.append(("message_start", {"message": start}))
    index = 0
    if thinking is not None:
        thoughts, signature = thinking
        block = {"type": "thinking", "thinking": ""}
        events.append(("content_block_start", {"index": index, "content_block": block}))
        for piece in thoughts:
            delta = {"type": "thinking_delta", "thinking": piece}
            events.append(("content_block_delta", {"index": index, "delta": delta}))
        delta = {"type": "signature_delta", "signature": signature}
        events.append(("content_block_delta", {"index": index, "delta": delta}))
        events.append(("content_block_stop", {"index": index}))
        index += 1
    if pieces:
        block = {"type": "text", "text": ""}
        events.append(("content_block_start", {"index": index, "content_block": block}))
        events.append(("ping", {}))
        for piece in pieces:
            delta = {"type": "text_delta", "text": piece}
            events.append(("content_block_delta", {"index": index, "delta": delta}))
            if error is not None:
                kind, message = error
                events.append(("error", {"error": {"type": kind, "message": message}}))
                return _anthropic_sse(events)
        events.append(("content_block_stop", {"index": index}))
        index += 1
    for call_id, name, arguments in tool_uses:
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        events.append(("content_block_start", {"index": index, "content_block": block}))
        for piece in arguments:
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(("content_block_delta", {"index": index, "delta": delta}))
        events.append(("content_block_stop", {"index": index}))
        index += 1
    stop = stop_reason or ("tool_use" if tool_uses else "end_turn")
    events.append(
        (
            "message_delta",
            {
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage[1]},
            },
        )
    )
    events.append(("message_stop", {}))
    return _anthropic_sse(events)


def _anthropic_sse(events: list[tuple[str, dict[str, Any]]]) -> Reply:
    return Reply(events=tuple((name, json.dumps({"type": name, **data})) for name, data in events))


def anthropic_error(
    status: int,
    message: str = "fake error",
    *,
    kind: str = "api_error",
    retry_after: str | None = None,
) -> Reply:
    headers = (("retry-after", retry_after),) if retry_after is not None else ()
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return Reply(status=status, json=body, headers=headers)
