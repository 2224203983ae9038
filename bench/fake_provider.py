"""An OpenAI-compatible fake provider for the bench: deterministic, cheap, fixed latency.

    python -m bench.fake_provider --port 9100 --latency 0.5

Answers `POST .../chat/completions` after exactly `--latency` seconds with the same assistant
text every time (so a letta_v1 agent's turn is one LLM step), as JSON or, when the request asks
for `"stream": true`, as SSE chunks `--chunk-gap` seconds apart. `GET .../models` lists the one
model it serves, `gpt-4o-mini`; a request naming another (a handle such as `openai/gpt-4o-mini`
among them) gets OpenAI's 404 `model_not_found`, as the real API would answer. It runs on raw
trio sockets (no HTTP framework), so its own CPU stays small next to the server's; the bench
measures it anyway and keeps it out of the server's numbers.

An agent whose system prompt holds `BENCH-ASK:<agent id>` (the agents-messaging scenario's
askers) is answered first with a call of send_message_to_agent_and_wait_for_reply to that
agent, then, once the call's result is in, with the same sentence. One whose system prompt
holds `BENCH-APPROVE` (the approvals scenario's) is answered first with a call of
memory_insert, which its tool rules make wait for the client's approval; one whose prompt
holds `BENCH-MCP` (the mcp-calls scenario's) first with a call of the bench MCP server's
`bench_add`.

`POST .../embeddings` answers at once with one fixed 1536-wide vector per input for
text-embedding-3-small and text-embedding-ada-002 (other models: OpenAI's 404), so a
server that embeds what it indexes (a folder's file chunks, archival passages) can be
benched with its embedding calls made over HTTP.

`GET /bench/requests` (the bench's own route) answers how many chat completions it has been
asked for so far: the schedules scenario waits on it for its firings' LLM calls.

Prints `ready http://127.0.0.1:<port>` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import re
import sys

import trio

from bench.http1 import HttpError, read_request, reader_for

__all__ = ["COUNT_PATH", "REPLY_TEXT", "main"]

MODEL = "gpt-4o-mini"  # the one model served, as the server's catalog knows it
REPLY_TEXT = "Noted. The fake provider answers every request with this same sentence."
_WORDS = REPLY_TEXT.split(" ")
_ASK = re.compile(rb"BENCH-ASK:(agent-[0-9a-f-]{36})")
ASK_TOOL = "send_message_to_agent_and_wait_for_reply"
# The approvals scenario's agents: a call of a tool that needs the client's approval first.
APPROVE_MARK = b"BENCH-APPROVE"
APPROVE_TOOL = "memory_insert"
APPROVE_ARGS = {"label": "human", "new_string": "Seen.", "insert_line": 0}
# The mcp-calls scenario's agents: a call of the bench MCP server's tool (bench/mcp_echo.py).
MCP_MARK = b"BENCH-MCP"
MCP_TOOL = "bench_add"
COUNT_PATH = "/bench/requests"


def _ask_body(model: str, target: str, n: int) -> bytes:
    """A reply that asks agent `target` something and waits for its answer."""
    return _call_body(model, ASK_TOOL, {"message": "Status?", "other_agent_id": target}, n)


def _call_body(model: str, tool: str, arguments: dict, n: int) -> bytes:
    """A reply that calls `tool` with `arguments`."""
    call = {"id": f"call_bench_{n}", "type": "function",
            "function": {"name": tool, "arguments": json.dumps(arguments)}}  # fmt: skip
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return _completion(model, message, "tool_calls", completion_tokens=20)


def _completion(model: str, message: dict, finish: str, *, completion_tokens: int) -> bytes:
    """A chat completion (OpenAI's shape) whose one choice is `message`."""
    usage = {"prompt_tokens": 100, "completion_tokens": completion_tokens,
             "total_tokens": 100 + completion_tokens}  # fmt: skip
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
    ).encode()


def _first_step(request: dict) -> bool:
    messages = request.get("messages") or []
    return not (messages and messages[-1].get("role") == "tool")


def _asks(body: bytes, request: dict) -> str | None:
    """The agent an asker's step should ask: its first step only (a tool result ends it)."""
    found = _ASK.search(body)
    if found is None or not _first_step(request):
        return None
    return found.group(1).decode()


def _completion_body(model: str) -> bytes:
    message = {"role": "assistant", "content": REPLY_TEXT}
    return _completion(model, message, "stop", completion_tokens=14)


def _sse_chunks(model: str) -> list[bytes]:
    def chunk(delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        data = {"id": "chatcmpl-bench", "model": model, "choices": [choice]}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    pieces = [w + " " for w in _WORDS[:-1]] + [_WORDS[-1]]
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in pieces]
    events.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 100, "completion_tokens": 14, "total_tokens": 114}
    events.append(
        b"data: "
        + json.dumps({"id": "chatcmpl-bench", "choices": [], "usage": usage}).encode()
        + b"\n\n"
    )
    events.append(b"data: [DONE]\n\n")
    return events


EMBEDDING_MODELS = ("text-embedding-3-small", "text-embedding-ada-002")
EMBEDDING_DIM = 1536  # both models' width
# One vector for every input: the bench measures the server's handling of embeddings, not
# their meaning. Not all equal components, so a server normalizing it does real work.
_VECTOR = json.dumps([round(((i * 7919) % 1000) / 1000 - 0.5, 3) for i in range(EMBEDDING_DIM)])


def _embeddings_body(model: object, count: int) -> bytes:
    items = ",".join(
        f'{{"object":"embedding","index":{i},"embedding":{_VECTOR}}}' for i in range(count)
    )
    usage = json.dumps({"prompt_tokens": 8 * count, "total_tokens": 8 * count})
    return (
        f'{{"object":"list","model":{json.dumps(model)},"data":[{items}],"usage":{usage}}}'
    ).encode()


def _unknown_model(model: object) -> bytes:
    message = f"The model `{model}` does not exist or you do not have access to it."
    error = {"message": message, "type": "invalid_request_error", "param": None,
             "code": "model_not_found"}  # fmt: skip
    return json.dumps({"error": error}).encode()


def _json_response(body: bytes, status: int = 200) -> bytes:
    return (
        b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        % (status, len(body))
        + body
    )


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


class FakeProvider:
    def __init__(self, latency: float, chunk_gap: float) -> None:
        self.latency = latency
        self.chunk_gap = chunk_gap
        self.requests = 0
        self._json: dict[str, bytes] = {}
        self._sse: dict[str, list[bytes]] = {}

    async def handle(self, stream: trio.SocketStream) -> None:
        reader = reader_for(stream)
        try:
            while True:
                method, target, _headers, body = await read_request(reader)
                await self._answer(stream, method, target, body)
        except (HttpError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up: the usual end of a keep-alive connection

    async def _answer(
        self, stream: trio.SocketStream, method: str, target: str, body: bytes
    ) -> None:
        path = target.split("?", 1)[0].rstrip("/")
        if method == "GET" and path == COUNT_PATH:  # the bench's own: not an OpenAI route
            counted = json.dumps({"chat_completions": self.requests}).encode()
            await stream.send_all(_json_response(counted))
            return
        if method == "GET" and path.endswith("/models"):
            model = {"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}
            listing = {"object": "list", "data": [model]}
            await stream.send_all(_json_response(json.dumps(listing).encode()))
            return
        if method == "POST" and path.endswith("/embeddings"):
            try:
                request = json.loads(body)
                texts = request["input"]
            except (ValueError, KeyError, TypeError):
                await stream.send_all(_json_response(b'{"error": {"message": "bad JSON"}}', 400))
                return
            if request.get("model") not in EMBEDDING_MODELS:
                await stream.send_all(_json_response(_unknown_model(request.get("model")), 404))
                return
            count = 1 if isinstance(texts, str) else len(texts)
            await stream.send_all(_json_response(_embeddings_body(request.get("model"), count)))
            return
        if method != "POST" or not path.endswith("/chat/completions"):
            error = {"error": {"message": f"fake provider: no route {method} {path}"}}
            await stream.send_all(_json_response(json.dumps(error).encode(), 404))
            return
        self.requests += 1
        # Cheap: find the model and the stream flag without parsing the whole request.
        try:
            request = json.loads(body)
            model = request.get("model")
            streaming = bool(request.get("stream"))
        except (ValueError, AttributeError):
            await stream.send_all(_json_response(b'{"error": {"message": "bad JSON"}}', 400))
            return
        if model != MODEL:
            await stream.send_all(_json_response(_unknown_model(model), 404))
            return
        await trio.sleep(self.latency)
        target = _asks(body, request)
        if target is not None and not streaming:
            await stream.send_all(_json_response(_ask_body(model, target, self.requests)))
            return
        if APPROVE_MARK in body and _first_step(request) and not streaming:
            call = _call_body(model, APPROVE_TOOL, APPROVE_ARGS, self.requests)
            await stream.send_all(_json_response(call))
            return
        if MCP_MARK in body and _first_step(request) and not streaming:
            call = _call_body(model, MCP_TOOL, {"a": 2, "b": 3}, self.requests)
            await stream.send_all(_json_response(call))
            return
        if not streaming:
            if model not in self._json:
                self._json[model] = _json_response(_completion_body(model))
            await stream.send_all(self._json[model])
            return
        if model not in self._sse:
            self._sse[model] = _sse_chunks(model)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        for event in self._sse[model]:
            if self.chunk_gap:
                await trio.sleep(self.chunk_gap)
            await stream.send_all(_chunked(event))
        await stream.send_all(b"0\r\n\r\n")


async def serve(host: str, port: int, latency: float, chunk_gap: float) -> None:
    provider = FakeProvider(latency, chunk_gap)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, provider.handle, port, host=host)
        )
        bound = listeners[0].socket.getsockname()[1]
        print(f"ready http://{host}:{bound}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_provider", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument(
        "--chunk-gap", type=float, default=0.0, help="seconds between streamed chunks"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.host, args.port, args.latency, args.chunk_gap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
