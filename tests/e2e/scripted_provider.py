"""The strict fake provider (tests/llm/fake_providers.py) for a server in another process.

`ScriptedProvider` answers a chat completion with the next scripted reply, shaped as the
request asked (a stream when it set `stream`, else one JSON completion), so a test scripts
what the model says without knowing how each client's turn reaches the provider. A request
that outruns the script still gets the fake's 418 ("ran out of replies"), and what every
request carried stays in `received`. Run as a script (`python -m tests.e2e.scripted_provider
PORT`) it answers every request with a short text, for exploring a client by hand.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
import hypercorn.config
import hypercorn.trio
import trio

from tests.llm.fake_providers import FakeProvider, openai_completion, openai_stream

ToolCall = tuple[str, str, dict[str, Any]]


@attrs.frozen
class Say:
    """What the model says at one step: text, tool calls, or both."""

    text: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    pieces: Sequence[str] = ()  # the text's stream chunks (default: one chunk per word)
    delay: float = 0.0  # seconds before the provider answers (a slow model)


class ScriptedProvider(FakeProvider):
    def __init__(self, *, endless: str | None = None) -> None:
        super().__init__()
        self.says: list[Say] = []
        self.endless = endless  # when set, answer this text once the script is spent

    def say(self, *says: Say | str) -> None:
        self.says.extend(Say(s) if isinstance(s, str) else s for s in says)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].rstrip("/").endswith("/chat/completions"):
            await super().app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not self.replies and isinstance(request, dict):
            step = self.says.pop(0) if self.says else (
                Say(self.endless) if self.endless is not None else None)  # fmt: skip
            if step is not None:
                self.replies.append(_shaped(step, request))
        replayed = False

        async def again() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await super().app(scope, again, send)


def _shaped(step: Say, request: dict[str, Any]) -> Any:
    model = str(request.get("model", "gpt-test"))
    if request.get("stream"):
        pieces = list(step.pieces) or (_words(step.text) if step.text else [])
        calls = [(i, n, [json.dumps(a)]) for i, n, a in step.tool_calls]
        return openai_stream(pieces, tool_calls=calls, model=model).slow(step.delay)
    return openai_completion(step.text, tool_calls=step.tool_calls, model=model).slow(step.delay)


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


@contextlib.asynccontextmanager
async def scripted(port: int = 0, endless: str | None = None) -> AsyncIterator[ScriptedProvider]:
    provider = ScriptedProvider(endless=endless)
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(hypercorn.trio.serve, provider.app, config))
        provider.url = binds[0]
        try:
            yield provider
        finally:
            nursery.cancel_scope.cancel()


async def _main(port: int) -> None:
    async with scripted(port, endless="Hello from the scripted model.") as provider:
        print(provider.url, flush=True)
        while True:
            n = len(provider.received)
            await trio.sleep(0.5)
            for r in provider.received[n:]:
                keys = sorted(r.json) if isinstance(r.json, dict) else r.json
                print(r.method, r.path, keys, flush=True)
                if isinstance(r.json, dict):
                    print(
                        "  tools:",
                        [t["function"]["name"] for t in r.json.get("tools", [])],
                        "model:",
                        r.json.get("model"),
                        "stream:",
                        r.json.get("stream"),
                        flush=True,
                    )


if __name__ == "__main__":
    trio.run(_main, int(sys.argv[1]))
