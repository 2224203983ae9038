"""The web console's files, and the one read-only route its runtime view needs.

The console is static HTML, CSS and JavaScript modules shipped in the package
(kelpie_trio/console/), served at `/` and `/console/`: no build step, no CDN, works offline.
Its files hold no data, so they are served without the password; everything the console
shows it reads through `/v1/...` with the token the user gives it.

`GET /v1/_kelpie/runtime` is kelpie-trio's own (the underscore keeps it clear of Letta's
routes): nodes, this node's actors with their leases and mailboxes, every lease in the
store, and the runtime counters of `/metrics`, as JSON (nursery/snapshot.py).
"""

from __future__ import annotations

from importlib import resources

from quart import Blueprint, Response, current_app, redirect

from kelpie_trio.api.common import json_response, service
from kelpie_trio.api.spec import documented
from kelpie_trio.models import convert
from kelpie_trio.nursery.snapshot import RuntimeSnapshot, read_snapshot

__all__ = ["CONSOLE_PATHS", "console", "is_console_path"]

console = Blueprint("console", __name__)

_PACKAGE = "kelpie_trio.console"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Only our own files, no inline script or style, no framing by another site: the page
# handles a bearer token, so nothing else may run in it.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a server upgrade shows its new console at once
}

CONSOLE_PATHS = ("/", "/console", "/console/")


def is_console_path(path: str) -> bool:
    """The console's own files: open without the password (they hold no data)."""
    return path in CONSOLE_PATHS or path.startswith("/console/")


def _asset(name: str) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    kind = _TYPES.get(suffix)
    # The console's directory is flat: any other name (a path, a dotfile, a .py) is unknown.
    if kind is None or "/" in name or "\\" in name or name.startswith("."):
        return json_response({"detail": "Not Found"}, 404)
    resource = resources.files(_PACKAGE).joinpath(name)
    if not resource.is_file():
        return json_response({"detail": "Not Found"}, 404)
    response = Response(resource.read_bytes(), content_type=kind)
    response.headers.update(_HEADERS)
    return response


@console.get("/")
@console.get("/console/")
async def console_page() -> Response:
    return _asset("index.html")


@console.get("/console")
async def console_redirect() -> Response:
    return redirect("/console/", 308)


@console.get("/console/<name>")
async def console_asset(name: str) -> Response:
    return _asset(name)


# The console's files are no part of the API: /openapi.json leaves them out.
for _view in (console_page, console_redirect, console_asset):
    _view.__kelpie_undocumented__ = True  # type: ignore[attr-defined]


@console.get("/v1/_kelpie/runtime")
@documented(
    "kelpie-trio's runtime: nodes, this node's actors (lease, mailbox), leases, counters",
    response=RuntimeSnapshot,
)
async def runtime() -> Response:
    svc = service()
    snapshot = await read_snapshot(
        svc.store,
        svc.dispatcher,
        current_app.config.get("KELPIE_METRICS"),
        now=svc.env.now(),
    )
    return json_response(convert.api.unstructure(snapshot))
