"""Which methods really serve a path, when ids decide between routes.

Werkzeug matches `/v1/tools/search` to `GET /v1/tools/{tool_id}` (tool_id="search") as
readily as to `POST /v1/tools/search`. Here a route's *misfit* for a path is how many of
its id parameters got something that is not an id; the routes that fit best are the
ones that serve the path. So `GET /v1/tools/search` is a 405 (Allow: POST), while
`GET /v1/tools/0` still reaches its route and gets its 422 for the malformed id, and a
path that only a malformed id would match under another method
(`POST /v1/tools/not-a-route`) is a 404: no route serves it.
"""

from __future__ import annotations

from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map

from kelpie_trio.api.common import is_id
from kelpie_trio.api.spec import ID_PREFIXES

__all__ = ["best_methods", "misfit", "misfits"]

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def misfits(url_map: Map, path: str) -> dict[str, int]:
    """For each method a route serves `path` with: how many of its ids are malformed."""
    adapter = url_map.bind("localhost")
    found: dict[str, int] = {}
    for method in _METHODS:
        try:
            _, args = adapter.match(path, method=method)
        except HTTPException:
            continue
        found[method] = misfit(args)
    return found


def best_methods(fits: dict[str, int]) -> set[str]:
    """The methods whose routes fit the path best (with HEAD beside GET)."""
    if not fits:
        return set()
    best = min(fits.values())
    methods = {m for m, misfit in fits.items() if misfit == best}
    return methods | {"HEAD"} if "GET" in methods else methods


def misfit(args: dict[str, Any]) -> int:
    """How many of a route's id arguments are not ids of their kind."""
    return sum(
        1
        for name, value in args.items()
        if name in ID_PREFIXES and not is_id(str(value), ID_PREFIXES[name])
    )
