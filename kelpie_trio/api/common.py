"""What every route shares: JSON in and out, ids, paging arguments, Letta's error bodies."""

from __future__ import annotations

import re
from typing import Any

import orjson
from quart import Response, current_app, request

from kelpie_trio.errors import Invalid
from kelpie_trio.models import convert
from kelpie_trio.service import MAX_PAGE, AgentService, Page

__all__ = ["body", "check_id", "is_id", "json_response", "page_args", "render", "service"]

_ID = re.compile(r"^[a-z_]+-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Fields kept for the server's own use, never rendered.
_INTERNAL = ("created_at",)


def service() -> AgentService:
    return current_app.config["KELPIE_SERVICE"]


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, content_type="application/json")


def render(value: Any) -> Any:
    """A record as the API shows it."""
    data = convert.api.unstructure(value)
    for name in _INTERNAL:
        data.pop(name, None)
    return data


async def body() -> Any:
    return convert.parse_body(await request.get_data())


def is_id(value: str, prefix: str) -> bool:
    return bool(_ID.match(value)) and value.startswith(prefix + "-")


def check_id(value: str, prefix: str, name: str) -> str:
    """Letta answers 422 for an id that is not `<prefix>-<uuid>`, 404 for an unknown one."""
    if not is_id(value, prefix):
        raise Invalid.field(["path", name], f"expected an id of the form {prefix}-<uuid4>")
    return value


def page_args() -> Page:
    args = request.args
    limit: int | None = 50
    if "limit" in args:
        try:
            limit = int(args["limit"])
        except ValueError:
            raise Invalid.field(["query", "limit"], "limit must be an integer") from None
        if not 1 <= limit <= MAX_PAGE:
            raise Invalid.field(["query", "limit"], f"limit must be between 1 and {MAX_PAGE}")
    order = args.get("order", "asc")
    if order not in ("asc", "desc"):
        raise Invalid.field(["query", "order"], "order must be 'asc' or 'desc'")
    return Page(after=args.get("after"), before=args.get("before"), limit=limit, order=order)
