"""What every route shares: JSON in and out, ids, paging arguments, Letta's error bodies."""

from __future__ import annotations

import re
from typing import Any

import orjson
from quart import Response, current_app, request

from kelpie_trio.api.spec import ID_PREFIXES
from kelpie_trio.errors import Invalid
from kelpie_trio.models import convert
from kelpie_trio.service import MAX_PAGE, AgentService, Page

__all__ = [
    "ID_PREFIXES",
    "body",
    "bool_arg",
    "check_id",
    "cursor_arg",
    "int_arg",
    "is_id",
    "json_response",
    "optional_body",
    "page_args",
    "render",
    "service",
]

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


def _is_json(mimetype: str) -> bool:
    # No Content-Type is read as JSON (FastAPI, which Letta runs on, does the same).
    return mimetype in ("", "application/json") or mimetype.endswith("+json")


async def body() -> dict[str, Any]:
    """The request's JSON object: 422 when it is missing, not JSON, or not an object."""
    raw = await request.get_data()
    if not raw:
        raise Invalid.field(["body"], "Field required", "missing")
    return _object(raw)


async def optional_body() -> dict[str, Any] | None:
    """The request's JSON object, or None for a route whose body may be left out."""
    raw = await request.get_data()
    return _object(raw) if raw else None


def _object(raw: bytes) -> dict[str, Any]:
    if not _is_json(request.mimetype):
        raise Invalid.field(
            ["header", "Content-Type"],
            f"expected application/json, not {request.mimetype}",
            "model_attributes_type",
        )
    value = convert.parse_body(raw)
    if not isinstance(value, dict):
        raise Invalid.field(["body"], "Input should be a JSON object", "model_attributes_type")
    return value


def is_id(value: str, prefix: str) -> bool:
    return bool(_ID.match(value)) and value.startswith(prefix + "-")


def check_id(value: str, prefix: str, name: str, where: str = "path") -> str:
    """Letta answers 422 for an id that is not `<prefix>-<uuid>`, 404 for an unknown one.
    `where`: "path", or "query" for an id given as a filter."""
    if not is_id(value, prefix):
        raise Invalid.field([where, name], f"expected an id of the form {prefix}-<uuid4>")
    return value


_TRUE = ("true", "1", "yes", "on", "t", "y")
_FALSE = ("false", "0", "no", "off", "f", "n")


def bool_arg(name: str, default: bool) -> bool:
    """A boolean query parameter, spelled as FastAPI accepts one; anything else (an empty
    value too) is a 422."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise Invalid.field(["query", name], f"{name} must be true or false", "bool_parsing")


def int_arg(name: str, *, low: int, high: int | None = None) -> int | None:
    """An integer query parameter within bounds; None when it is not given."""
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise Invalid.field(["query", name], f"{name} must be an integer", "int_parsing") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise Invalid.field(["query", name], f"{name} must be {bound}")
    return value


def cursor_arg(name: str, prefix: str | None) -> str | None:
    """A paging cursor: the id of an item of the listed kind (`prefix`), or None."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if prefix is not None and not is_id(raw, prefix):
        raise Invalid.field(["query", name], f"expected an id of the form {prefix}-<uuid4>")
    return raw


def page_args(cursor: str | None, *, limit: int = 50, order: str = "asc") -> Page:
    """`after`, `before`, `limit`, `order`; `cursor` is the id prefix of what is listed (None
    where items are not ids, as tags are). A value of the wrong type is a 422."""
    given = request.args.get("order", order)
    if given not in ("asc", "desc"):
        raise Invalid.field(["query", "order"], "order must be 'asc' or 'desc'", "enum")
    return Page(
        after=cursor_arg("after", cursor),
        before=cursor_arg("before", cursor),
        limit=int_arg("limit", low=1, high=MAX_PAGE) or limit,
        order=given,  # type: ignore[arg-type]
    )
