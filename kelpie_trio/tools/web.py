"""The builtin web tools, `fetch_webpage` and `web_search` (Letta's `letta_builtin` tools).

What they decide is here as plain functions: which URLs and addresses may be fetched
(`url_refusal`, `address_refusal`), what a page becomes for the model (`page_result`),
what is asked of Exa and what of its answer the model sees (`exa_request`,
`exa_result`). The I/O sits behind `Web`: `HttpxWeb` on a node, a scripted web in the
simulator (kelpie_trio/sim/web.py), so the redirect loop and its time limit
(`WebTools.fetch_webpage`) are the same code in both.

The address check is made where a connection is opened (`_CheckedBackend`, under
httpx): every address a name resolves to must be public, and the connection goes to
an address that was checked, so a DNS answer that changes between a check and the
connect cannot point the fetch at this host's network, and neither can a redirect.

Every failure comes back as ("error", text) for the tool's return: a web tool never
fails the agent's turn.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import attrs
import httpcore
import httpx
import orjson
import trio

from kelpie_trio.http_pool import ClientPool

__all__ = [
    "WEB_TOOLS",
    "HttpxWeb",
    "Page",
    "Web",
    "WebError",
    "WebSettings",
    "WebTools",
    "address_refusal",
    "exa_request",
    "exa_result",
    "page_result",
    "url_refusal",
]

WEB_TOOLS = frozenset({"fetch_webpage", "web_search"})

EXA_SEARCH_URL = "https://api.exa.ai/search"
NOT_CONFIGURED = (
    "web search is not configured on this server: set EXA_API_KEY (on the server, or as "
    "one of the agent's secrets)"
)
# Characters of a page's text handed back (Letta's default limit for a tool's return).
TEXT_LIMIT = 50_000
_USER_AGENT = "Mozilla/5.0 (compatible; kelpie-trio/1.0; +fetch_webpage)"
_CATEGORIES = frozenset({"company", "research paper", "news", "pdf", "github", "tweet",
                         "personal site", "linkedin profile", "financial report"})  # fmt: skip


@attrs.frozen
class WebSettings:
    """KELPIE_WEB_* settings (README, "Options"), and Exa's key as Letta reads it."""

    allow_private: bool = False  # fetch loopback, private and link-local addresses too
    timeout: float = 30.0  # seconds for a whole fetch: every redirect and the body
    max_bytes: int = 2_000_000  # of a page's body read; the rest is not downloaded
    max_redirects: int = 5
    exa_api_key: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebSettings:
        values: dict[str, Any] = {}
        flag = env.get("KELPIE_WEB_ALLOW_PRIVATE", "").strip().lower()
        if flag:
            if flag not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(f"KELPIE_WEB_ALLOW_PRIVATE={flag!r} is not a yes or no")
            values["allow_private"] = flag in ("1", "true", "yes", "on")
        for name, field, kind in (("KELPIE_WEB_TIMEOUT", "timeout", float),
                                  ("KELPIE_WEB_MAX_BYTES", "max_bytes", int),
                                  ("KELPIE_WEB_MAX_REDIRECTS", "max_redirects", int)):  # fmt: skip
            if env.get(name):
                try:
                    values[field] = kind(env[name])
                except ValueError:
                    raise ValueError(f"{name}={env[name]!r} is not a number") from None
                if values[field] < 0 or (field != "max_redirects" and values[field] == 0):
                    raise ValueError(f"{name}={env[name]!r} must be positive")
        if env.get("EXA_API_KEY"):
            values["exa_api_key"] = env["EXA_API_KEY"]
        return cls(**values)


class WebError(Exception):
    """A fetch or search that did not work; its text is what the model is told."""


@attrs.frozen
class Page:
    """One HTTP response, as far as it was read (no redirect followed)."""

    url: str
    status: int
    content_type: str = ""
    location: str | None = None
    body: bytes = b""
    cut: bool = False  # the body went on past the byte limit


class Web(Protocol):
    """The network, as the web tools need it."""

    async def get(self, url: str, *, max_bytes: int, allow_private: bool) -> Page:
        """One GET, redirects not followed, the body read up to `max_bytes`; an address
        that is not public is refused (WebError) unless `allow_private`."""
        ...

    async def post_json(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, bytes]: ...

    async def html_text(self, html: str, url: str) -> str:
        """The readable text of an HTML page."""
        ...


# -- decisions (no I/O) --------------------------------------------------------------


def url_refusal(url: str) -> str | None:
    """Why `url` cannot be fetched at all, or None: http(s) with a host only."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a port that is not a number
        httpx.URL(url)  # and as the client will read it (hosts, IDNA, characters)
    except (httpx.InvalidURL, ValueError) as error:  # IDNA's errors are ValueErrors too
        return f"not a valid URL: {url!r} ({error})"
    if parts.scheme.lower() not in ("http", "https"):
        return (
            f"cannot fetch {url!r}: only http and https URLs can be fetched"
            f" (not {parts.scheme or 'a relative URL'!s})"
        )
    if not parts.hostname:
        return f"not a valid URL: {url!r} has no host"
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_public(address: str) -> bool:
    """Whether `address` is on the public internet: not loopback, private, link-local,
    unspecified (0.0.0.0, ::), shared (100.64/10), reserved or multicast."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address dressed as IPv6 reaches the IPv4 host: judge that one.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            return is_public(str(embedded))
        if ip.teredo is not None:
            return is_public(str(ip.teredo[1]))
        if ip in _NAT64:  # a NAT64 gateway forwards it to the IPv4 address in its tail
            return is_public(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    return ip.is_global and not ip.is_multicast


def address_refusal(host: str, addresses: list[str], allow_private: bool) -> str | None:
    """Why `host` may not be connected to at these resolved addresses, or None. Every
    address must be public, not only the first: a name may mix them on purpose."""
    if not addresses:
        return f"cannot resolve {host!r}"
    if allow_private:
        return None
    for address in addresses:
        if not is_public(address):
            return (
                f"refused to fetch from {host!r}: it resolves to {address}, an address that "
                "is not public (loopback, private, link-local or reserved); the server's "
                "operator can allow such addresses with KELPIE_WEB_ALLOW_PRIVATE=1"
            )
    return None


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip("\"' ")
    return "utf-8"


def _is_html(content_type: str, body: bytes) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        return True
    return not kind and body.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))


def _is_text(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind.startswith("text/") or kind in (
        "application/json", "application/xml", "application/javascript", "application/ld+json",
    ) or kind.endswith(("+json", "+xml"))  # fmt: skip


def decoded(page: Page) -> str:
    try:
        return page.body.decode(_charset(page.content_type), errors="replace")
    except LookupError:  # a charset Python does not know
        return page.body.decode("utf-8", errors="replace")


def page_result(page: Page, text: str) -> str:
    """The tool's text for a page: its text, cut at TEXT_LIMIT, with a note of any cut."""
    notes = []
    if page.cut:
        notes.append(f"[the page is longer: only its first {len(page.body)} bytes were read]")
    if len(text) > TEXT_LIMIT:
        notes.append(f"[{len(text) - TEXT_LIMIT} more characters not shown]")
        text = text[:TEXT_LIMIT]
    return "\n\n".join([text, *notes]) if notes else text


def exa_request(args: Mapping[str, Any]) -> dict[str, Any]:
    """Exa's /search body for web_search's arguments (the same choices as Letta's: auto
    search, 1 to 100 results, highlights and a summary aimed at the query, the full text
    only when asked). Raises ValueError on an argument of the wrong kind."""
    query = args.get("query")
    if not isinstance(query, str):
        raise ValueError("query must be a string")
    num = args.get("num_results", 10)
    if num is None:
        num = 10
    if isinstance(num, bool) or not isinstance(num, int):
        raise ValueError("num_results must be an integer")
    category = args.get("category")
    if category is not None and category not in _CATEGORIES:
        raise ValueError(f"category must be one of {', '.join(sorted(_CATEGORIES))}")
    body: dict[str, Any] = {
        "query": query,
        "numResults": min(max(num, 1), 100),
        "type": "auto",
        "contents": {
            "text": bool(args.get("include_text", False)),
            "highlights": {"numSentences": 2, "highlightsPerUrl": 3, "query": query},
            "summary": {"query": f"Summarize the key information about: {query}"},
        },
    }
    for name, key in (("category", "category"), ("include_domains", "includeDomains"),
                      ("exclude_domains", "excludeDomains"),
                      ("start_published_date", "startPublishedDate"),
                      ("end_published_date", "endPublishedDate"),
                      ("user_location", "userLocation")):  # fmt: skip
        value = args.get(name)
        if value:
            if name.endswith("domains") and not (
                isinstance(value, list) and all(isinstance(d, str) for d in value)
            ):
                raise ValueError(f"{name} must be a list of strings")
            body[key] = value
    return body


def exa_result(query: str, answer: Mapping[str, Any], include_text: bool) -> str:
    """web_search's return: {"query", "results": [{title, url, published_date, author,
    and text, highlights, summary when there are some}]}, as Letta shapes it."""
    results = []
    for hit in answer.get("results") or []:
        if not isinstance(hit, Mapping):
            continue
        result = {
            "title": hit.get("title"),
            "url": hit.get("url"),
            "published_date": hit.get("publishedDate"),
            "author": hit.get("author"),
        }
        if include_text and hit.get("text"):
            result["text"] = hit["text"]
        for key in ("highlights", "summary"):
            if hit.get(key):
                result[key] = hit[key]
        results.append(result)
    return orjson.dumps({"query": query, "results": results}, option=orjson.OPT_INDENT_2).decode()


# -- the tools -----------------------------------------------------------------------


@attrs.define
class WebTools:
    """A node's web tools: one `Web` and the settings."""

    web: Web
    settings: WebSettings = attrs.Factory(WebSettings)

    async def run(
        self, name: str, args: Mapping[str, Any], secrets: Mapping[str, str]
    ) -> tuple[str, str]:
        """("success" | "error", text) of one call of a web tool."""
        if name == "fetch_webpage":
            url = args.get("url")
            if not isinstance(url, str):
                return "error", "url must be a string"
            return await self.fetch_webpage(url)
        return await self.web_search(args, secrets)

    async def fetch_webpage(self, url: str) -> tuple[str, str]:
        settings = self.settings
        with trio.move_on_after(settings.timeout):
            try:
                return "success", await self._fetch(url)
            except WebError as error:
                return "error", str(error)
        return "error", f"fetching {url} took longer than {settings.timeout:g} s: gave up"

    async def _fetch(self, url: str) -> str:
        settings = self.settings
        for _ in range(settings.max_redirects + 1):
            refusal = url_refusal(url)
            if refusal is not None:
                raise WebError(refusal)
            page = await self.web.get(
                url, max_bytes=settings.max_bytes, allow_private=settings.allow_private
            )
            if page.status in (301, 302, 303, 307, 308) and page.location:
                url = urljoin(url, page.location)  # checked again at the top
                continue
            if page.status >= 400:
                raise WebError(f"fetching {url} failed: HTTP {page.status}")
            if _is_html(page.content_type, page.body):
                try:
                    text = await self.web.html_text(decoded(page), url)
                except Exception as error:  # the converter's trouble is this call's, not the turn's
                    raise WebError(f"could not read the HTML of {url}: {_reason(error)}") from None
            elif _is_text(page.content_type) or not page.content_type:
                text = decoded(page)
            else:
                raise WebError(
                    f"{url} is not a text page (Content-Type: {page.content_type}): "
                    "fetch_webpage reads HTML and text only"
                )
            return page_result(page, text)
        raise WebError(f"fetching {url} failed: more than {settings.max_redirects} redirects")

    async def web_search(
        self, args: Mapping[str, Any], secrets: Mapping[str, str]
    ) -> tuple[str, str]:
        # The agent's own key first, then the server's, as Letta looks them up.
        key = secrets.get("EXA_API_KEY") or self.settings.exa_api_key
        if not key:
            return "error", NOT_CONFIGURED
        try:
            body = exa_request(args)
        except ValueError as error:
            return "error", str(error)
        query = body["query"]
        if not query.strip():
            return "error", "the query is empty: say what to search for"
        with trio.move_on_after(self.settings.timeout):
            try:
                status, raw = await self.web.post_json(EXA_SEARCH_URL, body, {"x-api-key": key})
            except WebError as error:
                return "error", f"web search failed: {error}"
            if status != 200:
                detail = raw[:300].decode("utf-8", errors="replace")
                return "error", f"web search failed: Exa answered HTTP {status}: {detail}"
            try:
                answer = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return "error", "web search failed: Exa's answer was not JSON"
            if not isinstance(answer, dict):
                return "error", "web search failed: Exa's answer was not a JSON object"
            return "success", exa_result(query, answer, body["contents"]["text"])
        return "error", f"web search took longer than {self.settings.timeout:g} s: gave up"


# -- the real network ----------------------------------------------------------------


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's trio backend, connecting only to addresses address_refusal allows."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = httpcore.TrioBackend()
        self._allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's interface
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise WebError(f"cannot resolve {host!r}: {error}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        refusal = address_refusal(host, addresses, self._allow_private)
        if refusal is not None:
            raise WebError(refusal)
        failure: Exception | None = None
        for address in addresses:  # the checked ones, not a second lookup
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        raise WebError(f"cannot connect to {host}:{port}: {failure}")

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise WebError("fetch_webpage connects to web servers only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _checked_transport(
    allow_private: bool,
) -> Any:
    def make(limits: httpx.Limits, verify: Any) -> httpx.AsyncBaseTransport:
        transport = httpx.AsyncHTTPTransport(limits=limits, verify=verify)
        # httpx 0.28 has no public way to give its transport a network backend; its
        # httpcore pool keeps the one it uses here (pinned versions: fail loudly if not).
        pool = transport._pool
        if not hasattr(pool, "_network_backend"):
            raise RuntimeError("httpx/httpcore changed: the web tools cannot check addresses")
        pool._network_backend = _CheckedBackend(allow_private)
        return transport

    return make


class HttpxWeb:
    """`Web` on the real network: pages through clients whose connections are checked,
    Exa through ordinary ones; both from the project's ClientPool."""

    def __init__(self, settings: WebSettings, *, verify: ssl.SSLContext | None = None) -> None:
        self._timeout = httpx.Timeout(settings.timeout)
        # The TLS context pages are checked with (tests give one trusting their own CA).
        self._verify = {} if verify is None else {"verify": verify}
        self._pages: dict[bool, ClientPool] = {}  # by allow_private
        self._api = ClientPool(timeout=self._timeout)

    def _page_pool(self, allow_private: bool) -> ClientPool:
        if allow_private not in self._pages:
            # trust_env off: through a proxy, the address checked would be the proxy's.
            self._pages[allow_private] = ClientPool(
                timeout=self._timeout,
                trust_env=False,
                make_transport=_checked_transport(allow_private),
                **self._verify,
            )
        return self._pages[allow_private]

    async def get(self, url: str, *, max_bytes: int, allow_private: bool) -> Page:
        headers = {
            "User-Agent": _USER_AGENT,
            "Accept-Encoding": "identity",  # the byte limit counts what is downloaded
            "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5",
        }
        with self._page_pool(allow_private).client() as client:
            try:
                async with client.stream("GET", url, headers=headers) as response:
                    body = bytearray()
                    cut = False
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            del body[max_bytes:]
                            cut = True
                            break
                    return Page(
                        url=url,
                        status=response.status_code,
                        content_type=response.headers.get("content-type", ""),
                        location=response.headers.get("location"),
                        body=bytes(body),
                        cut=cut,
                    )
            except httpx.TimeoutException:
                raise WebError(f"fetching {url} timed out") from None
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as error:
                raise WebError(f"fetching {url} failed: {_reason(error)}") from None

    async def post_json(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, bytes]:
        with self._api.client() as client:
            try:
                response = await client.post(
                    url, content=orjson.dumps(body),
                    headers={**headers, "Content-Type": "application/json"},
                )  # fmt: skip
            except httpx.HTTPError as error:
                raise WebError(_reason(error)) from None
            return response.status_code, response.content

    async def html_text(self, html: str, url: str) -> str:
        # Extraction is CPU work of tens of milliseconds on a large page: off the loop.
        return await trio.to_thread.run_sync(html_to_text, html, url)

    async def aclose(self) -> None:
        for pool in self._pages.values():
            await pool.aclose()
        await self._api.aclose()


def _reason(error: BaseException) -> str:
    """An httpx error's text, or that of what caused it (TLS errors come with none)."""
    while error is not None:
        if str(error):
            return str(error)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return "no reason given"


def html_to_text(html: str, url: str = "") -> str:
    """A page's main text (trafilatura: the article without menus, footers and scripts),
    or, where it finds no main part (a short page), all of the page's visible text."""
    import trafilatura  # heavy: loaded on the first page fetched

    text = trafilatura.extract(
        html, url=url or None, output_format="markdown", include_links=True,
        include_tables=True, favor_recall=True,
    )  # fmt: skip
    if not text:
        text = trafilatura.html2txt(html)
    return text or ""
