"""SimWeb: the web of the simulator, for fetch_webpage and web_search (tools/web.py).

Simulated code opens no sockets, so the web here is what a scenario scripts: its DNS
(host -> addresses; a name not listed does not resolve), its pages (URL -> a page, or
a function of the fetch's number giving one, so a test can tell which fetch produced a
stored result), 404 for any other URL of a known host, and Exa's answers. It is as
strict as the real network behind `HttpxWeb`: the address policy is applied at the
"connection" with the same function, redirects come back unfollowed, a body is cut at
the byte limit, and a JSON API gets a status and bytes.

The fault table's tool faults reach it at "web.get" and "web.search": ToolTimeout is a
server that never answers (the tool's time limit ends the wait), ToolFail a connection
reset. No new fault types: these are the tool faults of an outside tool, as for MCP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import attrs
import orjson
import trio

from kelpie_trio.sim.faults import FaultType
from kelpie_trio.tools.web import Page, WebError, address_refusal, html_to_text

__all__ = ["SimPage", "SimWeb", "SimWebCall"]


@attrs.frozen
class SimPage:
    body: str | bytes
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    location: str | None = None  # a redirect's target


@attrs.frozen
class SimWebCall:
    index: int
    url: str
    at: float


PageSource = SimPage | Callable[[int], SimPage]


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class SimWeb:
    """The `Web` of the simulator (kelpie_trio/tools/web.py's interface)."""

    def __init__(
        self,
        world: Any,
        pages: dict[str, PageSource] | None = None,
        *,
        hosts: dict[str, list[str]] | None = None,
        search: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        latency: tuple[float, float] = (0.005, 0.05),
    ) -> None:
        self.world = world
        self.pages = dict(pages or {})
        self.hosts = dict(hosts or {})
        self.search = search
        self.latency = latency
        self.calls: list[SimWebCall] = []  # fetches that reached a server
        self.searches: list[dict[str, Any]] = []
        self.on_get: Callable[[str], None] | None = None  # a test's hook: crash a node here

    async def _latency(self) -> None:
        await trio.sleep(self.world.faults.uniform(*self.latency))

    async def _faults(self, op: str, what: str) -> None:
        world = self.world
        if world.faults.fires(FaultType.TOOL_TIMEOUT, op):
            world.trace.record(f"fault ToolTimeout {op} {what}")
            await trio.sleep_forever()  # never answers: the tool's time limit ends it
        if world.faults.fires(FaultType.TOOL_FAIL, op):
            world.trace.record(f"fault ToolFail {op} {what}")
            raise WebError(f"fetching {what} failed: the connection was reset")

    async def get(self, url: str, *, max_bytes: int, allow_private: bool) -> Page:
        await self._latency()
        host = urlsplit(url).hostname or ""
        addresses = [host] if _literal(host) else self.hosts.get(host, [])
        refusal = address_refusal(host, addresses, allow_private)
        if refusal is not None:
            raise WebError(refusal)
        await self._faults("web.get", url)
        if self.on_get is not None:
            self.on_get(url)
            await trio.lowlevel.checkpoint()
        index = len(self.calls)
        self.calls.append(SimWebCall(index, url, trio.current_time()))
        source = self.pages.get(url)
        if source is None:
            return Page(url, 404, "text/html", body=b"<html><body>Not Found</body></html>")
        page = source(index) if callable(source) else source
        body = page.body.encode() if isinstance(page.body, str) else page.body
        return Page(
            url,
            page.status,
            page.content_type,
            page.location,
            body[:max_bytes],
            cut=len(body) > max_bytes,
        )

    async def post_json(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, bytes]:
        await self._latency()
        await self._faults("web.search", url)
        if not headers.get("x-api-key"):
            return 401, b'{"error": "missing x-api-key"}'
        if self.search is None:
            return 404, b"Not Found"
        self.searches.append(body)
        return 200, orjson.dumps(self.search(body))

    async def html_text(self, html: str, url: str) -> str:
        return html_to_text(html, url)  # inline: no threads in simulated code
