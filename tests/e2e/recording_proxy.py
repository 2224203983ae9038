"""A recording reverse proxy on 127.0.0.1 between a real client and the server under test.

Every request is passed through unchanged (streams relayed chunk by chunk) and recorded:
method, path, query, the JSON body (or its text), and the status the server answered. The
end-to-end tests read `proxy.calls` to say which routes Letta's own clients used and which
of them the server refused; run as a script (`python -m tests.e2e.recording_proxy UPSTREAM
PORT LOG`) it writes one JSON line a request to LOG, for exploring what a client does.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import hypercorn.config
import hypercorn.trio
import trio

# Hop-by-hop headers are the proxy's own business; the rest go through as they came.
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host",
        "content-length", "proxy-connection"}  # fmt: skip


class _CutStream(Exception):
    """Raised in the middle of a response: the server (Hypercorn) then drops the connection
    without ending the chunked body, which the client reads as a broken stream."""


@attrs.define
class Call:
    method: str
    path: str
    query: str
    body: Any  # parsed JSON, text, or None
    status: int | None = None  # None while the answer has not started
    response: Any = None  # parsed JSON answers (not streams), for reading failures
    streamed: bool = False

    def line(self) -> str:
        return json.dumps(attrs.asdict(self), default=str)


class RecordingProxy:
    def __init__(self, upstream: str, log: Any = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.url = ""
        self.calls: list[Call] = []
        self._log = log
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=None)
        # Drop the next event stream answering a POST whose path ends so, after this many
        # events: the client sees its connection cut mid-stream, as on a network failure.
        self.cut_next: tuple[str, int] | None = None
        self.cut: list[Call] = []

    def routes(self) -> list[tuple[str, str, int | None]]:
        return [(c.method, c.path, c.status) for c in self.calls]

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
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        query = scope.get("query_string", b"").decode("latin-1")
        call = Call(scope["method"], scope["path"], query, parsed)
        self.calls.append(call)
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in _HOP
        ]
        request = self._client.build_request(
            scope["method"], scope["path"] + (f"?{query}" if query else ""),
            headers=headers, content=body,
        )  # fmt: skip
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as error:
            call.status = 502
            self._write(call)
            data = json.dumps({"detail": f"proxy: {error!r}"}).encode()
            await send({"type": "http.response.start", "status": 502,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": data})
            return
        call.status = response.status_code
        call.streamed = "text/event-stream" in response.headers.get("content-type", "")
        out = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in response.headers.items()
            if k.lower() not in _HOP and k.lower() != "content-encoding"
        ]
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": out})  # fmt: skip
        kept = b""
        cut_after = None
        cut = self.cut_next
        if cut and call.streamed and call.method == "POST" and call.path.endswith(cut[0]):
            cut_after, self.cut_next = cut[1], None
        try:
            async for chunk in (
                response.aiter_lines() if cut_after is not None else response.aiter_raw()
            ):
                if cut_after is not None:
                    if chunk.startswith("data:") and kept.count(b"data:") >= cut_after:
                        self.cut.append(call)
                        raise _CutStream
                    chunk = (chunk + "\n").encode()
                if len(kept) < (20_000 if call.streamed else 200_000):  # enough to read
                    kept += chunk
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()
            try:
                call.response = (
                    json.loads(kept)
                    if kept and not call.streamed
                    else (kept.decode("utf-8", "replace") if kept else None)
                )
            except ValueError:
                call.response = kept.decode("utf-8", "replace")
            self._write(call)

    def _write(self, call: Call) -> None:
        if self._log is not None:
            self._log.write(call.line() + "\n")
            self._log.flush()


@contextlib.asynccontextmanager
async def recording(upstream: str, log: Any = None) -> AsyncIterator[RecordingProxy]:
    proxy = RecordingProxy(upstream, log)
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(hypercorn.trio.serve, proxy.app, config))
        proxy.url = binds[0]
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
            await proxy._client.aclose()


async def _main(upstream: str, port: int, path: str) -> None:
    with open(path, "a") as log:  # noqa: ASYNC230 - a local file, once at start
        proxy = RecordingProxy(upstream, log)
        config = hypercorn.config.Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        await hypercorn.trio.serve(proxy.app, config)


if __name__ == "__main__":
    trio.run(_main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
