"""Just enough HTTP/1.1 on trio sockets for the load generator and the fake provider.

The bench measures how much CPU a server spends per message, so the processes around it must
spend as little as they can: no httpx, no h11, no framework. A client `Connection` keeps one
keep-alive socket and reads Content-Length and chunked replies (SSE arrives chunked; each chunk
is handed over as it lands, with its arrival time). The server side is one function that reads
one request head and body from a stream. Nothing here is general-purpose: no pipelining, no
trailers, no 100-continue.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import attrs
import trio

__all__ = ["Connection", "HttpError", "Reply", "read_request", "split_url"]

_MAX_HEAD = 64 * 1024


class HttpError(Exception):
    """The peer broke the protocol or hung up mid-message."""


@attrs.define
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    chunk_times: list[float] = attrs.field(factory=list)  # perf_counter() at each body chunk


def split_url(url: str) -> tuple[str, int, str]:
    """(host, port, path prefix) of an http:// URL."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, not {url!r}")
    return parts.hostname or "127.0.0.1", parts.port or 80, parts.path.rstrip("/")


class _Reader:
    """Buffered reads from a stream: up to a delimiter, or an exact size."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise HttpError("connection closed by the peer")
        self.buffer += data

    async def until(self, delimiter: bytes, limit: int = _MAX_HEAD) -> bytes:
        start = 0
        while (at := self.buffer.find(delimiter, start)) < 0:
            if len(self.buffer) > limit:
                raise HttpError("header section too large")
            start = max(0, len(self.buffer) - len(delimiter) + 1)
            await self._fill()
        end = at + len(delimiter)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    async def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


def _parse_headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


async def read_request(reader: _Reader) -> tuple[str, str, dict[str, str], bytes]:
    """(method, target, headers, body) of the next request on a server-side connection."""
    head = await reader.until(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    try:
        method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    except ValueError as error:
        raise HttpError(f"bad request line {lines[0][:100]!r}") from error
    headers = _parse_headers(lines[1:])
    size = int(headers.get("content-length", "0"))
    body = await reader.exactly(size) if size else b""
    return method, target, headers, body


def reader_for(stream: trio.abc.ReceiveStream) -> _Reader:
    return _Reader(stream)


class Connection:
    """One keep-alive HTTP/1.1 connection to `base_url`, reconnecting when the server closes.

    Not safe for concurrent use: each load-generator worker owns one.
    """

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None) -> None:
        self.host, self.port, self.prefix = split_url(base_url)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._fixed = f"Host: {self.host}:{self.port}\r\n{extra}".encode("latin-1")
        self._stream: trio.SocketStream | None = None
        self._reader: _Reader | None = None

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream, self._reader = self._stream, None, None
            await stream.aclose()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        stream: bool = False,
        content_type: str = "application/json",
    ) -> Reply:
        """One request; the whole reply. With `stream`, each body chunk's arrival time is
        recorded in `chunk_times` (time to first chunk, gaps between chunks). A body is
        JSON unless `content_type` says otherwise (a multipart upload)."""
        for attempt in range(2):
            fresh = self._stream is None
            if fresh:
                self._stream = await trio.open_tcp_stream(self.host, self.port)
                self._reader = _Reader(self._stream)
            try:
                return await self._exchange(method, path, body, stream, content_type)
            except (HttpError, trio.BrokenResourceError, trio.ClosedResourceError):
                await self.aclose()
                # A keep-alive socket the server closed while idle: one retry on a new one.
                if fresh or attempt:
                    raise
        raise AssertionError("unreachable")

    async def _exchange(
        self, method: str, path: str, body: bytes | None, stream: bool, content_type: str
    ) -> Reply:
        assert self._stream is not None and self._reader is not None
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._fixed
        if body is not None:
            head += b"Content-Type: %s\r\nContent-Length: %d\r\n" % (
                content_type.encode("latin-1"),
                len(body),
            )
        await self._stream.send_all(head + b"\r\n" + (body or b""))
        reader = self._reader
        raw = await reader.until(b"\r\n\r\n")
        lines = raw[:-4].split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError) as error:
            raise HttpError(f"bad status line {lines[0][:100]!r}") from error
        headers = _parse_headers(lines[1:])
        times: list[float] = []
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            async for chunk in self._chunks():
                if stream:
                    times.append(time.perf_counter())
                parts.append(chunk)
            data = b"".join(parts)
        elif "content-length" in headers:
            data = await reader.exactly(int(headers["content-length"]))
            if stream:
                times.append(time.perf_counter())
        else:  # read to close
            parts = []
            try:
                while True:
                    await reader._fill()
                    parts.append(bytes(reader.buffer))
                    reader.buffer.clear()
            except HttpError:
                pass
            data = b"".join(parts)
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return Reply(status, headers, data, times)

    async def _chunks(self) -> AsyncIterator[bytes]:
        assert self._reader is not None
        reader = self._reader
        while True:
            size_line = await reader.until(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                await reader.until(b"\r\n")  # no trailers: the final CRLF
                return
            chunk = await reader.exactly(size + 2)
            yield chunk[:-2]
