"""/openapi.json, generated from the routes and the attrs models, never written by hand.

A route says what it takes and returns with `@documented(...)`; the schemas
come from the attrs classes themselves (field types, defaults, which fields
are required), so the document cannot drift from the code. Routes without
the decorator are still listed, with a generic JSON body.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar, Union, get_args, get_origin

import attrs
from quart_trio import QuartTrio

from kelpie_trio import __version__

__all__ = ["Health", "build_openapi", "documented", "schema_of"]

F = TypeVar("F", bound=Callable[..., Any])

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    Any: {},
    dict: {"type": "object"},
    list: {"type": "array"},
}


@attrs.frozen
class Health:
    """The health route's answer: `version` is the Letta API version served."""

    status: str
    version: str
    kelpie_trio_version: str


@attrs.frozen
class RouteDoc:
    summary: str
    request: type | None = None
    response: type | None = None
    response_is_list: bool = False
    query: tuple[str, ...] = ()


def documented(
    summary: str,
    *,
    request: type | None = None,
    response: type | None = None,
    many: bool = False,
    query: tuple[str, ...] = (),
) -> Callable[[F], F]:
    """Attach what a route takes and returns, for /openapi.json."""

    def mark(fn: F) -> F:
        fn.__kelpie_doc__ = RouteDoc(summary, request, response, many, query)  # type: ignore[attr-defined]
        return fn

    return mark


def schema_of(tp: Any, components: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a type annotation; attrs classes go to `components` by name."""
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    if tp is type(None):
        return {"type": "null"}
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [schema_of(a, components) for a in get_args(tp)]
        return {"anyOf": options}
    if origin in (list, tuple, set, frozenset):
        args = get_args(tp)
        return {"type": "array", "items": schema_of(args[0], components) if args else {}}
    if origin is dict:
        args = get_args(tp)
        return {
            "type": "object",
            "additionalProperties": schema_of(args[1], components) if args else {},
        }
    if origin is typing.Literal:
        return {"enum": list(get_args(tp))}
    if attrs.has(tp):
        name = tp.__name__.lstrip("_")
        if name not in components:
            components[name] = {}  # placeholder: recursive references terminate
            components[name] = _object_schema(tp, components)
        return {"$ref": f"#/components/schemas/{name}"}
    return {}


def _object_schema(cls: type, components: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        if field.name == "created_at" and hints[field.name] is float:
            continue  # internal ordering field, never rendered
        prop = schema_of(hints[field.name], components)
        if field.default is attrs.NOTHING:
            required.append(field.name)
        elif not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            prop["default"] = field.default
        properties[field.name] = prop
    schema: dict[str, Any] = {"type": "object", "title": cls.__name__, "properties": properties}
    if cls.__doc__:
        schema["description"] = " ".join(cls.__doc__.split())
    if required:
        schema["required"] = required
    return schema


_CONVERTER_ARG = re.compile(r"<(?:[a-z]+:)?([A-Za-z_][A-Za-z0-9_]*)>")

_ERROR = {
    "type": "object",
    "properties": {"detail": {}},
    "required": ["detail"],
    "description": "Letta's error body; for 422 a list of {loc, msg, type}.",
}


def build_openapi(app: QuartTrio) -> dict[str, Any]:
    components: dict[str, Any] = {"Error": _ERROR}
    paths: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str]] = set()
    # A route served with and without the trailing slash is one operation: the
    # slash form (the SDK's) is documented.
    rules = sorted(app.url_map.iter_rules(), key=lambda r: (not r.rule.endswith("/"), r.rule))
    for rule in rules:
        if rule.endpoint == "static":
            continue
        path = _CONVERTER_ARG.sub(r"{\1}", rule.rule)
        view = app.view_functions[rule.endpoint]
        doc: RouteDoc | None = getattr(view, "__kelpie_doc__", None)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if (rule.endpoint, method) in seen:
                continue
            seen.add((rule.endpoint, method))
            operation: dict[str, Any] = {
                "operationId": f"{rule.endpoint.replace('.', '_')}_{method.lower()}",
                "summary": doc.summary if doc else (view.__doc__ or rule.endpoint).strip(),
                "parameters": [
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                    for name in _CONVERTER_ARG.findall(rule.rule)
                ]
                + [
                    {"name": name, "in": "query", "required": False, "schema": {}}
                    for name in (doc.query if doc else ())
                ],
                "responses": {
                    "200": _response(doc, components),
                    "4XX": {
                        "description": "A client error",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                },
            }
            if doc and doc.request is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": schema_of(doc.request, components)}},
                }
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "kelpie-trio", "version": __version__},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": components},
    }


def _response(doc: RouteDoc | None, components: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    if doc and doc.response is not None:
        schema = schema_of(doc.response, components)
        if doc.response_is_list:
            schema = {"type": "array", "items": schema}
    return {
        "description": "Successful response",
        "content": {"application/json": {"schema": schema}},
    }
