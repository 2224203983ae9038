"""The web tools' checks and limits (kelpie_trio/tools/web.py): the address policy as a
function, then fetch_webpage on the real network stack (HttpxWeb) against HTTP servers
of the test's own on 127.0.0.1, and web_search against a strict fake of Exa's API."""

from __future__ import annotations

import functools
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from kelpie_trio.tools import web as web_module
from kelpie_trio.tools.web import (
    NOT_CONFIGURED,
    HttpxWeb,
    Page,
    WebError,
    WebSettings,
    WebTools,
    address_refusal,
    exa_request,
    is_public,
    url_refusal,
)

# -- the policy, as functions -----------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
     "169.254.169.254", "0.0.0.0", "100.64.0.1", "192.0.2.1", "224.0.0.1", "255.255.255.255",
     "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1",
     "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1",
     "not-an-address"],
)  # fmt: skip
def test_addresses_that_are_not_public_are_told_apart(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8"])  # fmt: skip
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(address)


def test_a_name_is_refused_when_any_of_its_addresses_is_private() -> None:
    refusal = address_refusal("mixed.test", ["93.184.216.34", "10.0.0.7"], False)
    assert refusal is not None and "10.0.0.7" in refusal
    assert "KELPIE_WEB_ALLOW_PRIVATE" in refusal
    assert address_refusal("mixed.test", ["93.184.216.34", "10.0.0.7"], True) is None
    assert address_refusal("nowhere.test", [], True) == "cannot resolve 'nowhere.test'"


@pytest.mark.parametrize(
    ("url", "words"),
    [("file:///etc/passwd", "only http and https"), ("ftp://example.com/x", "only http"),
     ("/relative/path", "only http"), ("http:///nohost", "no host"),
     ("http://example.com:99999999/", "not a valid URL")],
)  # fmt: skip
def test_only_http_and_https_urls_with_a_host_are_fetched(url: str, words: str) -> None:
    refusal = url_refusal(url)
    assert refusal is not None and words in refusal


def test_settings_come_from_the_environment() -> None:
    settings = WebSettings.from_env(
        {"KELPIE_WEB_ALLOW_PRIVATE": "yes", "KELPIE_WEB_TIMEOUT": "5",
         "KELPIE_WEB_MAX_BYTES": "1000", "EXA_API_KEY": "exa-1"}
    )  # fmt: skip
    assert (settings.allow_private, settings.timeout, settings.max_bytes) == (True, 5.0, 1000)
    assert settings.exa_api_key == "exa-1" and "exa-1" not in repr(settings)
    assert WebSettings.from_env({}) == WebSettings()
    with pytest.raises(ValueError, match="KELPIE_WEB_ALLOW_PRIVATE"):
        WebSettings.from_env({"KELPIE_WEB_ALLOW_PRIVATE": "maybe"})
    with pytest.raises(ValueError, match="KELPIE_WEB_MAX_BYTES"):
        WebSettings.from_env({"KELPIE_WEB_MAX_BYTES": "0"})


# -- fetch_webpage on the real stack, against local servers ----------------------------

Route = tuple[int, dict[str, str], bytes]
KELP = (
    b"<html><head><title>Kelp</title><script>var tracking = 1;</script></head><body>"
    b"<nav>Home | Shop</nav><article><h1>Giant kelp</h1><p>Giant kelp grows up to half "
    b"a metre a day in cold, clear water along rocky coasts.</p></article></body></html>"
)


class LocalServer:
    """A small HTTP/1.1 server on 127.0.0.1: fixed responses by path, each request
    recorded; a route of None never answers."""

    def __init__(self, routes: dict[str, Route | None]) -> None:
        self.routes = routes
        self.requests: list[str] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        path = data.split(b" ", 2)[1].decode()
        self.requests.append(path)
        route = self.routes.get(path, (404, {"Content-Type": "text/plain"}, b"Not Found"))
        if route is None:
            await trio.sleep_forever()
        status, headers, body = route
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        with trio.move_on_after(5):  # a client that stops reading (the byte limit) is fine
            with suppress(trio.BrokenResourceError):
                await stream.send_all(head.encode() + b"\r\n" + body)
        await stream.aclose()


@asynccontextmanager
async def serving(routes: dict[str, Route | None]) -> AsyncIterator[LocalServer]:
    server = LocalServer(routes)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        )
        server.port = listeners[0].socket.getsockname()[1]
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def tools(**settings: Any) -> AsyncIterator[WebTools]:
    config = WebSettings(**settings)
    web = HttpxWeb(config)
    try:
        yield WebTools(web, config)
    finally:
        await web.aclose()


class FakeResolver(trio.abc.HostnameResolver):
    """Names of the test's own: each to the addresses given, any other name as usual."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names

    async def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> Any:  # fmt: skip
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.names:
            return await trio.to_thread.run_sync(
                socket.getaddrinfo, host, port, family, type, proto, flags
            )
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, int(port))) for a in self.names[name]]  # fmt: skip

    async def getnameinfo(self, sockaddr: Any, flags: int) -> Any:
        raise NotImplementedError


@pytest.fixture
def names() -> Callable[[dict[str, list[str]]], None]:
    def install(mapping: dict[str, list[str]]) -> None:
        trio.socket.set_custom_hostname_resolver(FakeResolver(mapping))

    return install


async def test_a_local_page_is_read_as_text_when_private_addresses_are_allowed() -> None:
    routes = {"/kelp": (200, {"Content-Type": "text/html; charset=utf-8"}, KELP)}
    async with serving(routes) as server, tools(allow_private=True) as web:
        status, text = await web.fetch_webpage(f"{server.url}/kelp")
    assert status == "success"
    assert "Giant kelp grows up to half a metre a day" in text
    assert "tracking" not in text and "<p>" not in text


async def test_loopback_is_refused_by_default_and_nothing_is_sent() -> None:
    routes = {"/kelp": (200, {"Content-Type": "text/html"}, KELP)}
    async with serving(routes) as server, tools() as web:
        for url in (f"{server.url}/kelp", f"http://localhost:{server.port}/kelp",
                    f"http://[::ffff:127.0.0.1]:{server.port}/kelp"):  # fmt: skip
            status, text = await web.fetch_webpage(url)
            assert status == "error" and "not public" in text, (url, text)
            assert "KELPIE_WEB_ALLOW_PRIVATE" in text
        status, text = await web.fetch_webpage(f"http://0.0.0.0:{server.port}/kelp")
        assert status == "error" and "0.0.0.0" in text
    assert server.requests == []


async def test_a_name_resolving_to_a_private_address_is_refused(names: Any) -> None:
    routes = {"/kelp": (200, {"Content-Type": "text/html"}, KELP)}
    async with serving(routes) as server:
        names({"kelp.test": ["127.0.0.1"], "mixed.test": ["93.184.216.34", "127.0.0.1"],
               "meta.test": ["169.254.169.254"], "v6.test": ["fe80::1"]})  # fmt: skip
        async with tools() as web:
            refused = [("kelp.test", "127.0.0.1"), ("mixed.test", "127.0.0.1"),
                       ("meta.test", "169.254.169.254"), ("v6.test", "fe80::1")]  # fmt: skip
            for host, address in refused:
                status, text = await web.fetch_webpage(f"http://{host}:{server.port}/kelp")
                assert status == "error" and f"resolves to {address}" in text, text
        async with tools(allow_private=True) as web:  # the operator's choice: allowed
            status, text = await web.fetch_webpage(f"http://kelp.test:{server.port}/kelp")
            assert status == "success" and "Giant kelp" in text
    assert server.requests == ["/kelp"]


async def test_a_redirect_to_a_private_address_is_refused(
    names: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 127.0.0.1 stands for a public server here (nothing public is reachable from a test);
    # its redirect points at a name of a private address.
    real = web_module.is_public
    monkeypatch.setattr(web_module, "is_public", lambda a: a == "127.0.0.1" or real(a))
    names({"public.test": ["127.0.0.1"], "intranet.test": ["10.1.2.3"]})
    async with serving({}) as server:
        server.routes["/go"] = (302, {"Location": f"http://intranet.test:{server.port}/x"}, b"")
        server.routes["/hop"] = (301, {"Location": "/kelp"}, b"")
        server.routes["/kelp"] = (200, {"Content-Type": "text/html"}, KELP)
        async with tools() as web:
            status, text = await web.fetch_webpage(f"http://public.test:{server.port}/go")
            assert status == "error" and "'intranet.test'" in text and "10.1.2.3" in text
            status, text = await web.fetch_webpage(f"http://public.test:{server.port}/hop")
            assert status == "success" and "Giant kelp" in text
    assert server.requests == ["/go", "/hop", "/kelp"]


async def test_redirects_are_limited_and_go_to_http_only() -> None:
    async with serving({}) as server:
        server.routes["/loop"] = (302, {"Location": "/loop"}, b"")
        server.routes["/file"] = (302, {"Location": "file:///etc/passwd"}, b"")
        async with tools(allow_private=True, max_redirects=3) as web:
            status, text = await web.fetch_webpage(f"{server.url}/loop")
            assert status == "error" and "more than 3 redirects" in text
            status, text = await web.fetch_webpage(f"{server.url}/file")
            assert status == "error" and "only http and https" in text
    assert server.requests == ["/loop"] * 4 + ["/file"]


async def test_a_large_page_is_cut_at_the_byte_limit() -> None:
    body = b"kelp " * 200_000  # a megabyte
    routes = {"/big": (200, {"Content-Type": "text/plain"}, body)}
    async with serving(routes) as server, tools(allow_private=True, max_bytes=10_000) as web:
        status, text = await web.fetch_webpage(f"{server.url}/big")
    assert status == "success"
    assert text.startswith("kelp kelp") and "only its first 10000 bytes were read" in text
    assert len(text) < 10_100


async def test_a_server_that_never_answers_ends_at_the_time_limit() -> None:
    async with serving({"/hang": None}) as server, tools(allow_private=True, timeout=0.3) as web:
        status, text = await web.fetch_webpage(f"{server.url}/hang")
    assert status == "error" and "took longer than 0.3 s" in text


async def test_errors_and_pages_that_are_not_text_come_back_as_tool_errors() -> None:
    routes = {"/img": (200, {"Content-Type": "image/png"}, b"\x89PNG....")}
    async with serving(routes) as server, tools(allow_private=True) as web:
        assert await web.fetch_webpage(f"{server.url}/missing") == (
            "error", f"fetching {server.url}/missing failed: HTTP 404"
        )  # fmt: skip
        status, text = await web.fetch_webpage(f"{server.url}/img")
        assert status == "error" and "image/png" in text
        status, text = await web.fetch_webpage("http://127.0.0.1:1/")  # nobody listens
        assert status == "error" and "cannot connect" in text
        assert await web.run("fetch_webpage", {"url": 3}, {}) == ("error", "url must be a string")


# -- web_search, against a strict fake of Exa's API ------------------------------------


class FakeExa:
    """Exa's POST /search: the key in x-api-key, a JSON body in camelCase, results with
    title, url, publishedDate, author, text, highlights and summary."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    async def get(self, url: str, *, max_bytes: int, allow_private: bool) -> Page:
        raise AssertionError("web_search fetches no page")

    async def post_json(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, bytes]:
        self.requests.append((url, body, headers))
        if self.status != 200:
            return self.status, b'{"error": "invalid API key"}'
        hit = {"title": "Kelp", "url": "https://kelp.example/", "publishedDate": "2025-01-01",
               "author": "Ada", "text": "All about kelp.", "highlights": ["Kelp grows."],
               "summary": "Kelp is a seaweed.", "score": 0.9, "id": "x"}  # fmt: skip
        return 200, orjson.dumps({"requestId": "r1", "results": [hit]})

    async def html_text(self, html: str, url: str) -> str:
        raise AssertionError("web_search reads no page")


async def test_web_search_without_a_key_says_how_to_configure_it() -> None:
    exa = FakeExa()
    tools_ = WebTools(exa, WebSettings())
    assert await tools_.run("web_search", {"query": "kelp"}, {}) == ("error", NOT_CONFIGURED)
    assert "EXA_API_KEY" in NOT_CONFIGURED and exa.requests == []


async def test_web_search_asks_exa_as_letta_does_and_shapes_its_answer() -> None:
    exa = FakeExa()
    tools_ = WebTools(exa, WebSettings(exa_api_key="server-key"))
    status, text = await tools_.run(
        "web_search",
        {"query": "giant kelp", "num_results": 500, "category": "news",
         "include_domains": ["kelp.example"]},
        {},
    )  # fmt: skip
    assert status == "success"
    [(url, body, headers)] = exa.requests
    assert url == "https://api.exa.ai/search" and headers == {"x-api-key": "server-key"}
    assert body["query"] == "giant kelp" and body["numResults"] == 100  # clamped to 1..100
    assert body["type"] == "auto" and body["category"] == "news"
    assert body["includeDomains"] == ["kelp.example"] and "excludeDomains" not in body
    assert body["contents"]["text"] is False
    assert body["contents"]["highlights"] == {"numSentences": 2, "highlightsPerUrl": 3,
                                              "query": "giant kelp"}  # fmt: skip
    assert orjson.loads(text) == {"query": "giant kelp", "results": [{
        "title": "Kelp", "url": "https://kelp.example/", "published_date": "2025-01-01",
        "author": "Ada", "highlights": ["Kelp grows."], "summary": "Kelp is a seaweed."},
    ]}  # fmt: skip


async def test_web_search_prefers_the_agents_own_key_and_returns_text_when_asked() -> None:
    exa = FakeExa()
    tools_ = WebTools(exa, WebSettings(exa_api_key="server-key"))
    status, text = await tools_.run(
        "web_search", {"query": "kelp", "include_text": True}, {"EXA_API_KEY": "agent-key"}
    )
    assert status == "success" and orjson.loads(text)["results"][0]["text"] == "All about kelp."
    assert exa.requests[0][2] == {"x-api-key": "agent-key"}


async def test_web_search_errors_are_tool_errors() -> None:
    tools_ = WebTools(FakeExa(status=401), WebSettings(exa_api_key="bad"))
    status, text = await tools_.run("web_search", {"query": "kelp"}, {})
    assert status == "error" and "HTTP 401" in text and "invalid API key" in text
    assert await tools_.run("web_search", {"query": "  "}, {}) == (
        "error", "the query is empty: say what to search for"
    )  # fmt: skip
    status, text = await tools_.run("web_search", {"query": "kelp", "category": "gossip"}, {})
    assert status == "error" and "category must be one of" in text
    with pytest.raises(ValueError, match="query must be a string"):
        exa_request({"query": None})


async def test_a_failing_connection_to_exa_is_a_tool_error() -> None:
    class Down(FakeExa):
        async def post_json(self, url: str, body: Any, headers: Any) -> tuple[int, bytes]:
            raise WebError("connection refused")

    tools_ = WebTools(Down(), WebSettings(exa_api_key="k"))
    assert await tools_.run("web_search", {"query": "kelp"}, {}) == (
        "error", "web search failed: connection refused"
    )  # fmt: skip


# -- https: the connection goes to the checked address, TLS still checks the name ------


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the name kelp.test (openssl, as on the machine)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command (to make a test certificate) is not on this machine")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=kelp.test", "-addext", "subjectAltName=DNS:kelp.test",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@asynccontextmanager
async def serving_tls(
    routes: dict[str, Route | None], cert: Path, key: Path
) -> AsyncIterator[LocalServer]:
    server = LocalServer(routes)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handle(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, context, server_side=True)
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await tls.do_handshake()
            await server.handle(tls)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        server.port = listeners[0].socket.getsockname()[1]
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


async def test_https_pages_are_fetched_with_the_name_checked(tmp_path: Path, names: Any) -> None:
    cert, key = _certificate(tmp_path)
    trusted = ssl.create_default_context(cafile=str(cert))
    names({"kelp.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    routes = {"/kelp": (200, {"Content-Type": "text/html"}, KELP)}
    config = WebSettings(allow_private=True)
    web = HttpxWeb(config, verify=trusted)
    try:
        async with serving_tls(routes, cert, key) as server:
            tools_ = WebTools(web, config)
            status, text = await tools_.fetch_webpage(f"https://kelp.test:{server.port}/kelp")
            assert status == "success" and "Giant kelp" in text, text
            # Same address, another name: the certificate does not match, the fetch fails.
            status, text = await tools_.fetch_webpage(f"https://other.test:{server.port}/kelp")
            assert status == "error" and "certificate" in text.lower(), text
        assert server.requests == ["/kelp"]
    finally:
        await web.aclose()


@pytest.mark.parametrize(
    "url",
    ["http://a..b/", "http://xn--/x", "http://" + "a" * 300 + ".com/", "http://[::1/",
     "http://example.com\x00/", "https://256.1.1.1/", "http:///", "http://:80/", ""],
)  # fmt: skip
async def test_a_url_no_client_can_use_is_a_tool_error(url: str) -> None:
    async with tools() as web:
        status, text = await web.fetch_webpage(url)
    assert status == "error" and ("not a valid URL" in text or "failed" in text
                                  or "only http" in text), text  # fmt: skip


async def test_a_page_the_converter_chokes_on_is_a_tool_error() -> None:
    class Choking(FakeExa):
        async def get(self, url: str, *, max_bytes: int, allow_private: bool) -> Page:
            return Page(url, 200, "text/html", body=b"<html><p>x</p></html>")

        async def html_text(self, html: str, url: str) -> str:
            raise RuntimeError("parser exploded")

    status, text = await WebTools(Choking(), WebSettings()).fetch_webpage("http://x.test/")
    assert (status, text) == ("error", "could not read the HTML of http://x.test/: parser exploded")
