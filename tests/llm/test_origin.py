"""The provider's HTTP client (kelpie_trio/llm/origin.py) against raw servers on loopback.

Each test's server is a function over one accepted connection, so it can misbehave exactly:
close a kept-alive connection, cut a body, stall, answer without a length. The client must
reuse a connection only when it is whole and open, and say what failed otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h11
import orjson
import pytest
import trio
import trio.testing
import trustme

from kelpie_trio.llm.openai_compat import _Lines
from kelpie_trio.llm.origin import (
    KEEPALIVE_EXPIRY,
    HttpxOrigin,
    LeanOrigin,
    OriginError,
    OriginTimeout,
    open_origin,
)

Handler = Callable[[trio.SocketStream, "Peer"], Awaitable[None]]
BODY = orjson.dumps({"model": "m", "messages": []})
JSON = {"Content-Type": "application/json"}
LIMITS: dict[str, Any] = {"headers": {}, "timeout": 10, "connect_timeout": 5}
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class Peer:
    """What the server saw: requests (h11 events with their body) and connections."""

    def __init__(self) -> None:
        self.requests: list[tuple[h11.Request, bytes]] = []
        self.connections = 0
        self.closed = trio.Event()  # set by handlers that close a connection on purpose


async def read_request(stream: Any, http: h11.Connection) -> tuple[Any, bytes]:
    """One request and its body, or (None, b"") when the client hung up first."""
    head: Any = None
    body = b""
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return head, body
        else:  # ConnectionClosed
            return None, b""


def reply(body: bytes, *extra: tuple[str, str], status: int = 200) -> bytes:
    head = f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in extra)
    return head.encode() + b"\r\n" + body


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[str, Peer]]:
    peer = Peer()

    async def accepted(stream: trio.SocketStream) -> None:
        peer.connections += 1
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await handler(stream, peer)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, accepted, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1", peer
        nursery.cancel_scope.cancel()


def keep_alive(answer: Callable[[Any, bytes], Awaitable[None]]) -> Handler:
    """A keep-alive server: each request answered by `answer(stream, body)` in raw bytes."""

    async def serve(stream: trio.SocketStream, peer: Peer) -> None:
        while True:
            # A fresh h11 state each time: the raw answer bypassed it.
            head, body = await read_request(stream, h11.Connection(h11.SERVER))
            if head is None:
                return
            peer.requests.append((head, body))
            await answer(stream, body)

    return serve


async def echo(stream: Any, body: bytes) -> None:
    await stream.send_all(reply(body))


answer_each = keep_alive(echo)  # a well-behaved server: each request's body echoed back


def lean(url: str, **kwargs: Any) -> LeanOrigin:
    return LeanOrigin(url, {"Authorization": "Bearer k"}, timeout=10, connect_timeout=5, **kwargs)


async def test_calls_reuse_one_connection_and_send_the_request_as_built() -> None:
    async with serving(answer_each) as (url, peer):
        origin = lean(url)
        first = await origin.post("chat/completions", BODY, JSON)
        second = await origin.post("/chat/completions", b'{"n":2}', JSON)
        await origin.aclose()
    assert (first.status, first.json(), second.json()) == (200, orjson.loads(BODY), {"n": 2})
    assert first.headers["content-type"] == "application/json"
    assert peer.connections == 1 and origin.connections_opened == 1
    head = peer.requests[0][0]
    assert (head.method, head.target) == (b"POST", b"/v1/chat/completions")
    headers = dict(head.headers)
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert headers[b"host"] == f"127.0.0.1:{port}".encode()
    assert headers[b"authorization"] == b"Bearer k"
    assert headers[b"accept-encoding"] == b"identity"  # bodies are read as they come
    assert headers[b"content-length"] == str(len(BODY)).encode()


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def once_then_close(stream: trio.SocketStream, peer: Peer) -> None:
        head, body = await read_request(stream, h11.Connection(h11.SERVER))
        peer.requests.append((head, body))
        await stream.send_all(reply(body))  # keep-alive by HTTP/1.1's default...
        await stream.aclose()  # ...then closed, as a server's idle timeout does
        peer.closed.set()

    async with serving(once_then_close) as (url, peer):
        origin = lean(url)
        await origin.post("chat/completions", BODY, JSON)
        await peer.closed.wait()
        with trio.fail_after(5):  # the server's FIN has reached the idle connection
            await trio.lowlevel.wait_readable(origin._idle[-1]._socket)
        again = await origin.post("chat/completions", b"{}", JSON)
        await origin.aclose()
    assert again.json() == {}
    assert origin.connections_opened == 2 and len(peer.requests) == 2


async def test_connection_close_and_a_reply_read_to_the_end_are_not_reused() -> None:
    after_close: list[bytes] = []

    async def closing(stream: trio.SocketStream, peer: Peer) -> None:
        head, body = await read_request(stream, h11.Connection(h11.SERVER))
        peer.requests.append((head, body))
        if len(peer.requests) == 1:
            await stream.send_all(reply(body, ("Connection", "close")))
            # Left open: the client must not send on it, only hang up.
            after_close.append(await stream.receive_some(65536))
        else:  # HTTP/1.0 style: no length, the body ends when the connection does
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
            await stream.send_all(body)
            await stream.aclose()

    async with serving(closing) as (url, _):
        origin = lean(url)
        with trio.fail_after(5):
            first = await origin.post("chat/completions", b'{"a":1}', JSON)
            second = await origin.post("chat/completions", b'{"b":2}', JSON)
            third = await origin.post("chat/completions", b'{"c":3}', JSON)
        await origin.aclose()
    assert [r.json() for r in (first, second, third)] == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert origin.connections_opened == 3
    assert after_close == [b""]


async def test_a_chunked_reply_is_read_whole_and_its_connection_reused() -> None:
    async def chunked(stream: trio.SocketStream, body: bytes) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (body[:3], body[3:]):
            await stream.send_all(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        await stream.send_all(b"0\r\n\r\n")

    async with serving(keep_alive(chunked)) as (url, _):
        origin = lean(url)
        replies = [await origin.post("x", BODY, JSON) for _ in range(3)]
        await origin.aclose()
    assert all(r.body == BODY for r in replies)
    assert origin.connections_opened == 1


async def test_a_body_cut_midway_fails_and_its_connection_is_dropped() -> None:
    async def cut(stream: trio.SocketStream, peer: Peer) -> None:
        head, body = await read_request(stream, h11.Connection(h11.SERVER))
        peer.requests.append((head, body))
        if len(peer.requests) == 1:
            await stream.send_all(reply(b"x" * 100)[:-90])  # ten bytes of a hundred
            await stream.aclose()
        else:
            await stream.send_all(reply(body))

    async with serving(cut) as (url, _):
        origin = lean(url)
        with pytest.raises(OriginError, match="RemoteProtocolError"):
            await origin.post("x", BODY, JSON)
        assert (await origin.post("x", b"{}", JSON)).json() == {}
        await origin.aclose()
    assert origin.connections_opened == 2


async def test_a_reply_that_is_not_http_fails() -> None:
    async def garbage(stream: trio.SocketStream, peer: Peer) -> None:
        await read_request(stream, h11.Connection(h11.SERVER))
        await stream.send_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    async with serving(garbage) as (url, _):
        origin = lean(url)
        with pytest.raises(OriginError, match="RemoteProtocolError"):
            await origin.post("x", BODY, JSON)
        await origin.aclose()


async def test_a_server_that_stalls_times_out_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stall(stream: trio.SocketStream, peer: Peer) -> None:
        await read_request(stream, h11.Connection(h11.SERVER))
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await trio.sleep_forever()

    async with serving(stall) as (url, _):
        origin = lean(url)
        start = trio.current_time()
        with pytest.raises(OriginTimeout, match="ReadTimeout"):
            await origin.post("x", BODY, JSON)
        assert trio.current_time() - start == pytest.approx(10, abs=0.5)
        await origin.aclose()


async def test_a_refused_connection_fails() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    origin = lean(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(OriginError, match=r"connect 127\.0\.0\.1"):
        await origin.post("x", BODY, JSON)


async def test_a_cancelled_call_closes_its_connection() -> None:
    async def silent_first(stream: trio.SocketStream, peer: Peer) -> None:
        http = h11.Connection(h11.SERVER)
        head, body = await read_request(stream, http)
        peer.requests.append((head, body))
        if len(peer.requests) == 1:
            assert await stream.receive_some(10) == b""  # the client hung up
            peer.closed.set()
        else:
            await stream.send_all(reply(body))

    async with serving(silent_first) as (url, peer):
        origin = lean(url)
        with trio.move_on_after(0.2):
            await origin.post("x", BODY, JSON)
        with trio.fail_after(5):
            await peer.closed.wait()
        assert (await origin.post("x", b"{}", JSON)).json() == {}
        await origin.aclose()
    assert origin.connections_opened == 2


async def test_an_idle_connection_expires(autojump_clock: trio.testing.MockClock) -> None:
    async with serving(answer_each) as (url, _):
        origin = lean(url)
        await origin.post("x", BODY, JSON)
        await trio.sleep(KEEPALIVE_EXPIRY / 2)
        await origin.post("x", BODY, JSON)
        assert origin.connections_opened == 1
        await trio.sleep(KEEPALIVE_EXPIRY + 1)
        await origin.post("x", BODY, JSON)
        await origin.aclose()
    assert origin.connections_opened == 2


async def test_a_stream_read_to_its_end_keeps_the_connection_and_one_left_early_does_not() -> None:
    async with serving(answer_each) as (url, _):
        origin = lean(url)
        async with origin.stream("x", b"0123456789", JSON) as streamed:
            assert streamed.status == 200
            assert (await streamed.read()).body == b"0123456789"
        async with origin.stream("x", b"abc", JSON) as streamed:
            assert await streamed.next_chunk() == b"abc"
            assert await streamed.next_chunk() is None
        assert origin.connections_opened == 1
        async with origin.stream("x", b"{}", JSON) as streamed:
            pass  # the caller stops before the body
        await origin.post("x", BODY, JSON)
        await origin.aclose()
    assert origin.connections_opened == 2


async def test_tls_is_verified_against_the_ca_bundle() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)

    async def tls(stream: trio.SocketStream, peer: Peer) -> None:
        wrapped = trio.SSLStream(stream, server_context, server_side=True)
        with contextlib.suppress(trio.BrokenResourceError):
            await answer_each(wrapped, peer)  # type: ignore[arg-type]

    async with serving(tls) as (url, _):
        https = url.replace("http://127.0.0.1", "https://localhost")
        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        origin = lean(https, tls_context=trusted)
        assert (await origin.post("x", BODY, JSON)).body == BODY
        assert (await origin.post("x", b"{}", JSON)).json() == {}
        assert origin.connections_opened == 1
        await origin.aclose()
        stranger = lean(https)  # the default bundle does not know this CA
        with pytest.raises(OriginError, match="CERTIFICATE_VERIFY_FAILED"):
            await stranger.post("x", BODY, JSON)


async def test_a_proxy_in_the_environment_is_honoured_through_httpx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def proxy(stream: trio.SocketStream, peer: Peer) -> None:
        head, body = await read_request(stream, h11.Connection(h11.SERVER))
        peer.requests.append((head, body))
        await stream.send_all(reply(b'{"via":"proxy"}'))

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    async with serving(proxy) as (proxy_url, peer):
        monkeypatch.setenv("HTTP_PROXY", proxy_url.removesuffix("/v1"))
        origin = open_origin("http://provider.invalid/v1", **LIMITS)
        assert isinstance(origin, HttpxOrigin)
        answer = await origin.post("chat/completions", BODY, JSON)
        await origin.aclose()
    assert answer.json() == {"via": "proxy"}
    assert peer.requests[0][0].target == b"http://provider.invalid/v1/chat/completions"
    monkeypatch.setenv("NO_PROXY", "provider.invalid")  # bypassed: spoken directly
    assert isinstance(open_origin("http://provider.invalid/v1", **LIMITS), LeanOrigin)
    monkeypatch.delenv("HTTP_PROXY")
    assert isinstance(open_origin("http://127.0.0.1:1/v1", **LIMITS), LeanOrigin)
    assert isinstance(  # credentials in the URL: httpx's basic auth
        open_origin("http://u:p@127.0.0.1:1/v1", **LIMITS), HttpxOrigin
    )
    # Not a URL LeanOrigin speaks: httpx refuses it at the call, an LLM failure as before.
    assert isinstance(open_origin("http:///v1", **LIMITS), HttpxOrigin)


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([b"data: a\n\n"], ["data: a", ""]),
        ([b"data: a\r", b"\ndata: b\r\n\r\n"], ["data: a", "data: b", ""]),  # CRLF split
        ([b"data: a\rdata: b\r", b"\r"], ["data: a", "data: b", ""]),  # CR alone
        ([b"da", b"ta: \xc3", b"\xa9\n"], ["data: \u00e9"]),  # UTF-8 split across chunks
        ([b"data: last"], ["data: last"]),  # no line break at the end
    ],
)
def test_lines_are_split_at_any_line_break_across_chunks(
    chunks: list[bytes], lines: list[str]
) -> None:
    splitter = _Lines()
    seen = [line for chunk in chunks for line in splitter.feed(chunk)]
    assert seen + splitter.end() == lines


async def test_the_httpx_origin_posts_and_streams_the_same_way() -> None:
    async with serving(answer_each) as (url, _):
        origin = HttpxOrigin(url, {"Authorization": "Bearer k"}, timeout=10, connect_timeout=5)
        posted = await origin.post("x", BODY, JSON)
        async with origin.stream("x", b"0123456789", JSON) as streamed:
            first = await streamed.next_chunk()
            rest = await streamed.read()
        async with origin.stream("x", b"abc", JSON) as streamed:
            chunks = [await streamed.next_chunk(), await streamed.next_chunk()]
        await origin.aclose()
    assert (posted.status, posted.body, posted.headers["content-type"]) == (
        200,
        BODY,
        "application/json",
    )
    assert first == b"0123456789" and (rest.status, rest.body) == (200, b"")  # the rest
    assert chunks == [b"abc", None]


async def test_the_httpx_origin_says_what_failed(autojump_clock: trio.testing.MockClock) -> None:
    async def stall(stream: trio.SocketStream, peer: Peer) -> None:
        await read_request(stream, h11.Connection(h11.SERVER))
        await trio.sleep_forever()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = HttpxOrigin(f"http://127.0.0.1:{port}/v1", {}, timeout=10, connect_timeout=5)
    with pytest.raises(OriginError, match="ConnectError"):
        await refused.post("x", BODY, JSON)
    async with serving(stall) as (url, _):
        slow = HttpxOrigin(url, {}, timeout=10, connect_timeout=5)
        with pytest.raises(OriginTimeout, match="ReadTimeout"):
            await slow.post("x", BODY, JSON)
        await slow.aclose()


async def test_a_reply_over_the_body_bound_fails_and_its_connection_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kelpie_trio.llm import origin as origin_module

    monkeypatch.setattr(origin_module, "MAX_BODY", 100)
    async with serving(answer_each) as (url, _):
        origin = lean(url)
        with pytest.raises(OriginError, match="larger than 100 bytes"):
            await origin.post("x", b"x" * 101, JSON)
        assert (await origin.post("x", b"{}", JSON)).json() == {}
        await origin.aclose()
    assert origin.connections_opened == 2
