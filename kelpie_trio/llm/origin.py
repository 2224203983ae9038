"""HTTP to one LLM provider: a lean HTTP/1.1 client on trio streams and h11.

Every agent step makes one provider call, so its client is on the hot path. httpx spent
~0.55 ms of CPU on one small POST to the bench's provider where h11 on a trio stream spends
~0.17 (bench/RESULTS.md): the same parser under httpx's client, auth, redirect, model and
pool layers. `LeanOrigin` speaks what a provider call needs and no more: POST a body to a
path under the base URL and read the reply whole or as it streams; keep-alive connections
reused newest first; TLS with the CA bundle httpx would use. The timeout bounds each wait
(the connection with its TLS handshake, each send, each read), as `httpx.Timeout` does, so
a stream may run long while it keeps producing.

Proxies are left to httpx: when the environment names one for the base URL's scheme
(`HTTPS_PROXY`, `ALL_PROXY`, ...) and `NO_PROXY` does not exempt its host, `open_origin`
gives an `HttpxOrigin` instead, which speaks through it as the providers always have here.

Both raise `OriginTimeout` (no byte in time) and `OriginError` (refused, cut, not HTTP);
the LLM clients map them onto their retryable errors (openai_compat.py).
"""

from __future__ import annotations

import contextlib
import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import attrs
import h11
import httpx
import orjson
import trio

from kelpie_trio import __version__
from kelpie_trio.http_pool import ClientPool

__all__ = [
    "HttpxOrigin",
    "LeanOrigin",
    "Origin",
    "OriginError",
    "OriginTimeout",
    "Reply",
    "StreamedReply",
    "open_origin",
]

KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)
MAX_IDLE = 256  # idle connections kept; a loaded node has one call per active thread
MAX_BODY = 64 * 1024 * 1024  # a reply larger than this is a broken server, not a completion
_READ_SIZE = 65536


class OriginError(Exception):
    """The provider could not be reached or broke HTTP: refused, cut midway, not HTTP."""


class OriginTimeout(OriginError):
    """No progress in time: connecting, sending, or waiting for the reply's next bytes."""


@attrs.frozen
class Reply:
    """A whole reply. Header names are lower case; repeated headers are joined by ", "."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def is_error(self) -> bool:
        return self.status >= 400

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return orjson.loads(self.body)


class StreamedReply(Protocol):
    """A reply whose body is read as it arrives."""

    status: int
    reason: str
    headers: Mapping[str, str]

    async def next_chunk(self) -> bytes | None:
        """The body's next bytes, None once it has ended."""
        ...

    async def read(self) -> Reply:
        """The rest of the body, as a whole reply (an error's body, say)."""
        ...


class Origin(Protocol):
    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply: ...

    def stream(
        self, path: str, body: bytes, headers: Mapping[str, str]
    ) -> contextlib.AbstractAsyncContextManager[StreamedReply]: ...

    async def aclose(self) -> None: ...


def open_origin(
    base_url: str, headers: Mapping[str, str], *, timeout: float, connect_timeout: float
) -> Origin:
    """The client for `base_url`: lean, unless the environment routes it through a proxy
    or the URL is one only httpx reads (credentials, a query) or refuses at its first call
    (no host, another scheme), as it did before."""
    parts = urlsplit(base_url)
    proxies = urllib.request.getproxies()
    proxied = bool(proxies.get(parts.scheme) or proxies.get("all"))
    if (
        (proxied and not urllib.request.proxy_bypass(parts.hostname or ""))
        or parts.username is not None
        or parts.query
        or parts.scheme not in ("http", "https")
        or not parts.hostname
    ):
        return HttpxOrigin(base_url, headers, timeout=timeout, connect_timeout=connect_timeout)
    return LeanOrigin(base_url, headers, timeout=timeout, connect_timeout=connect_timeout)


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """The CA bundle and settings httpx would verify with (its `create_ssl_context`, which
    honours SSL_CERT_FILE and SSL_CERT_DIR); built once, loading it costs ~25 ms of CPU."""
    context = httpx.create_ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def _joined_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:  # h11 lower-cases the names
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


class _Connection:
    __slots__ = ("http", "idle_since", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = stream
        self.http = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    @property
    def _socket(self) -> trio.socket.SocketType:
        stream = self.stream
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        assert isinstance(stream, trio.SocketStream)
        return stream.socket

    def peer_spoke(self) -> bool:
        """Whether bytes (or the end) arrived while idle: a closed keep-alive connection."""
        return self._socket.is_readable()

    def close(self) -> None:
        """At once, without waiting: a TLS connection goes without its close_notify, which
        nobody waits for (and a connection dropped mid-reply cannot send anyway)."""
        self._socket.close()


class LeanOrigin:
    """HTTP/1.1 keep-alive connections to one origin; see the module's docstring."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        connect_timeout: float,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        if parts.username is not None or parts.query or parts.fragment:
            raise ValueError("credentials or a query in the base URL: use HttpxOrigin")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self._prefix = parts.path.rstrip("/") + "/"
        default_port = 443 if self.tls else 80
        authority = self.host if ":" not in self.host else f"[{self.host}]"
        if self.port != default_port:
            authority = f"{authority}:{self.port}"
        self._headers = [
            ("Host", authority),
            ("Accept", "*/*"),
            # Without it a server may compress; the client reads bodies as they are.
            ("Accept-Encoding", "identity"),
            ("User-Agent", f"kelpie-trio/{__version__}"),
            *headers.items(),
        ]
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._tls_context = tls_context
        self._idle: list[_Connection] = []
        self._closed = False
        self.connections_opened = 0  # for tests and the bench: reuse shows here

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        async with self.stream(path, body, headers) as reply:
            return await reply.read()

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[StreamedReply]:
        conn = await self._checkout()
        reply: _LeanStreamedReply | None = None
        try:
            response = await self._exchange(conn, path, body, headers)
            reply = _LeanStreamedReply(self, conn, response)
            yield reply
        finally:
            # Reused only when its body was read to the end; anything else (an error, a
            # cancellation, a reader that stopped early) leaves it mid-reply.
            if reply is not None and reply.ended:
                self._checkin(conn)
            else:
                conn.close()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- connections ---------------------------------------------------------------------

    async def _checkout(self) -> _Connection:
        if self._closed:
            raise OriginError("the client is closed")
        now = trio.current_time()
        while self._idle:
            conn = self._idle.pop()  # the newest: the likeliest to be open still
            if now - conn.idle_since < KEEPALIVE_EXPIRY and not conn.peer_spoke():
                return conn
            conn.close()
        return await self._connect()

    def _checkin(self, conn: _Connection) -> None:
        http = conn.http
        if (
            self._closed
            or len(self._idle) >= MAX_IDLE
            or http.our_state is not h11.DONE
            or http.their_state is not h11.DONE
        ):  # the server said close, or we have enough
            conn.close()
            return
        http.start_next_cycle()
        conn.idle_since = trio.current_time()
        self._idle.append(conn)

    async def _connect(self) -> _Connection:
        with trio.move_on_after(self.connect_timeout) as scope, self._errors("connect"):
            tcp = await trio.open_tcp_stream(self.host, self.port)
            conn = _Connection(tcp)
            if self.tls:
                context = self._tls_context or default_tls_context()
                conn.stream = trio.SSLStream(
                    tcp, context, server_hostname=self.host, https_compatible=True
                )
                try:
                    await conn.stream.do_handshake()
                except BaseException:
                    conn.close()
                    raise
            self.connections_opened += 1
            return conn
        assert scope.cancelled_caught
        raise OriginTimeout(
            f"ConnectTimeout: no connection to {self.host}:{self.port} "
            f"in {self.connect_timeout:g} s"
        )

    # -- one exchange --------------------------------------------------------------------

    async def _exchange(
        self, conn: _Connection, path: str, body: bytes, headers: Mapping[str, str]
    ) -> h11.Response:
        """Send the request; its response's head."""
        http = conn.http
        request = h11.Request(
            method="POST",
            target=self._prefix + path.lstrip("/"),
            headers=[*self._headers, *headers.items(), ("Content-Length", str(len(body)))],
        )
        data = http.send(request) + http.send(h11.Data(data=body)) + http.send(h11.EndOfMessage())
        with trio.move_on_after(self.timeout) as scope, self._errors("send"):
            await conn.stream.send_all(data)
        if scope.cancelled_caught:
            raise OriginTimeout(f"WriteTimeout: sending took over {self.timeout:g} s")
        while True:
            event = await self._next_event(conn)
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):  # 100 Continue and such
                raise OriginError(f"RemoteProtocolError: unexpected {type(event).__name__}")

    async def _next_chunk(self, conn: _Connection) -> bytes | None:
        event = await self._next_event(conn)
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            return None
        raise OriginError(f"RemoteProtocolError: unexpected {type(event).__name__}")

    async def _next_event(self, conn: _Connection) -> Any:
        http = conn.http
        while True:
            with self._errors("read"):
                event = http.next_event()
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.ConnectionClosed):
                    raise OriginError("RemoteProtocolError: the server closed the connection")
                return event
            with trio.move_on_after(self.timeout) as scope, self._errors("read"):
                data = await conn.stream.receive_some(_READ_SIZE)
            if scope.cancelled_caught:
                raise OriginTimeout(f"ReadTimeout: no bytes from the server in {self.timeout:g} s")
            http.receive_data(data)  # b"": the server closed (h11 tells if that was early)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except h11.ProtocolError as error:
            raise OriginError(f"RemoteProtocolError: {error}") from error
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as error:
            cause = error.__cause__ or error
            raise OriginError(
                f"{doing} {self.host}:{self.port} failed: {type(cause).__name__}: {cause}"
            ) from error


class _LeanStreamedReply:
    def __init__(self, origin: LeanOrigin, conn: _Connection, response: h11.Response) -> None:
        self._origin = origin
        self._conn = conn
        self.status = response.status_code
        self.reason = response.reason.decode("latin-1")
        self.headers = _joined_headers(response.headers)
        self.ended = False

    async def next_chunk(self) -> bytes | None:
        if self.ended:
            return None
        chunk = await self._origin._next_chunk(self._conn)
        self.ended = chunk is None
        return chunk

    async def read(self) -> Reply:
        chunks = []
        size = 0
        while (chunk := await self.next_chunk()) is not None:
            size += len(chunk)
            if size > MAX_BODY:
                raise OriginError(f"the reply is larger than {MAX_BODY} bytes")
            chunks.append(chunk)
        return Reply(self.status, self.reason, self.headers, b"".join(chunks))


class HttpxOrigin:
    """The same calls through httpx (small pools, `ClientPool`), which speaks proxies."""

    def __init__(
        self, base_url: str, headers: Mapping[str, str], *, timeout: float, connect_timeout: float
    ) -> None:
        self._pool = ClientPool(
            base_url=base_url,
            headers=dict(headers),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
        )

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        with _httpx_errors(), self._pool.client() as http:
            response = await http.post(path, content=body, headers=dict(headers))
        return _reply_of(response, response.content)

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[StreamedReply]:
        with _httpx_errors(), self._pool.client() as http:
            async with http.stream("POST", path, content=body, headers=dict(headers)) as response:
                yield _HttpxStreamedReply(response)

    async def aclose(self) -> None:
        await self._pool.aclose()


def _reply_of(response: httpx.Response, body: bytes) -> Reply:
    return Reply(response.status_code, response.reason_phrase, dict(response.headers.items()), body)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as error:
        raise OriginTimeout(f"{type(error).__name__}: {error}") from error
    except httpx.HTTPError as error:
        raise OriginError(f"{type(error).__name__}: {error}") from error


class _HttpxStreamedReply:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.aiter_bytes()
        self.status = response.status_code
        self.reason = response.reason_phrase
        self.headers = dict(response.headers.items())

    async def next_chunk(self) -> bytes | None:
        with _httpx_errors():
            return await anext(self._chunks, None)

    async def read(self) -> Reply:
        chunks = []
        while (chunk := await self.next_chunk()) is not None:
            chunks.append(chunk)
        return _reply_of(self._response, b"".join(chunks))
