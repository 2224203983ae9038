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
from kelpie_trio.agent.runs import FINAL_STATUS
from kelpie_trio.service import MAX_PAGE

# The id kind of each parameter of that name (`<prefix>-<uuid4>`), path or query.
ID_PREFIXES = {
    "agent_id": "agent",
    "block_id": "block",
    "tool_id": "tool",
    "run_id": "run",
    "session_id": "run",
    "memory_id": "passage",
    "mcp_server_id": "mcp_server",
    "identity_id": "identity",
    "message_id": "message",
    "step_id": "step",
    "archive_id": "archive",
    "passage_id": "passage",
    "scheduled_message_id": "scheduled_message",
    "group_id": "group",
    "folder_id": "source",
    "file_id": "file",
}
RUN_STATUSES = ("created", "running", *dict.fromkeys(FINAL_STATUS.values()))
# Letta's MessageType: what `include_return_message_types` may name.
MESSAGE_TYPES = ("system_message", "user_message", "assistant_message", "reasoning_message",
                 "hidden_reasoning_message", "tool_call_message", "tool_return_message",
                 "approval_request_message", "approval_response_message", "summary_message",
                 "event_message")  # fmt: skip

__all__ = [
    "ID_PREFIXES",
    "MESSAGE_TYPES",
    "RUN_STATUSES",
    "Health",
    "build_openapi",
    "documented",
    "id_schema",
    "schema_of",
]

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
    # How this host runs custom tools ({"tool_sandbox": {...}}), on a node that runs agents.
    details: dict[str, Any] | None = None


@attrs.frozen
class RouteDoc:
    summary: str
    request: type | None = None
    response: type | None = None
    response_is_list: bool = False
    query: tuple[str, ...] = ()
    cursor: str | None = None
    body_optional: bool = False
    media_type: str = "application/json"
    partial: bool = False
    fields: frozenset[str] | None = None
    upload: bool = False  # a multipart body with one `file` (a folder's upload)


def documented(
    summary: str,
    *,
    request: type | None = None,
    response: type | None = None,
    many: bool = False,
    query: tuple[str, ...] = (),
    cursor: str | None = None,
    body_optional: bool = False,
    media_type: str = "application/json",
    partial: bool = False,
    fields: frozenset[str] | None = None,
    upload: bool = False,
) -> Callable[[F], F]:
    """Attach what a route takes and returns, for /openapi.json. `cursor` is the id kind
    that its `after`/`before` take; `body_optional` for a body that may be left out;
    `partial` for a PATCH whose body gives only the fields that change, `fields` when it
    takes only some of the model's fields; `upload` for a multipart body with a `file`."""

    def mark(fn: F) -> F:
        fn.__kelpie_doc__ = RouteDoc(  # type: ignore[attr-defined]
            summary,
            request,
            response,
            many,
            query,
            cursor,
            body_optional,
            media_type,
            partial,
            fields,
            upload,
        )
        return fn

    return mark


_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def id_schema(prefix: str) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{prefix}-{_UUID}$"}


_BOOLEAN = {"type": "boolean"}
# Letta's StopReasonType, which the agent filters take.
STOP_REASONS = ("end_turn", "error", "llm_api_error", "invalid_llm_response", "invalid_tool_call",
                "max_steps", "max_tokens_exceeded", "no_tool_call", "tool_rule", "cancelled",
                "insufficient_credits", "requires_approval",
                "context_window_overflow_in_system_prompt")  # fmt: skip
_DATE_OR_TIME = {"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}]}
_BOOLEAN_QUERY = ("match_all_tags", "use_assistant_message", "include_err", "active", "ascending",
                  "return_only_letta_tools", "use_legacy_format", "scrub_messages",
                  "override_existing_tools", "append_copy_suffix", "strip_messages",
                  "requires_approval", "has_feedback", "update_timestamp",
                  "dry_run", "include_content", "is_open",
                  "include_detailed_per_source_metadata", "show_hidden_agents")  # fmt: skip

# Query parameters by name: what the routes check (api/common.py and the routes).
_QUERY: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
    "top_k": {"type": "integer", "minimum": 1},
    "max_steps": {"type": "integer", "minimum": 0},
    "order": {"type": "string", "enum": ["asc", "desc"]},
    "order_by": {
        "type": "string",
        "enum": ["created_at", "last_run_completion", "last_message_at"],
    },
    "tag_match_mode": {"type": "string", "enum": ["any", "all"]},
    "statuses": {"type": "array", "items": {"type": "string", "enum": list(RUN_STATUSES)}},
    "tags": {"type": "array", "items": {"type": "string"}},
    "agent_id": id_schema("agent"),
    "identity_id": id_schema("identity"),
    "identifier_keys": {"type": "array", "items": {"type": "string"}},
    "include_return_message_types": {
        "type": "array",
        "items": {"type": "string", "enum": list(MESSAGE_TYPES)},
    },
    "identity_type": {"type": "string", "enum": ["org", "user", "other"]},
    "duplicate_handling": {"type": "string", "enum": ["skip", "error", "suffix", "replace"]},
    "cursor": id_schema("file_agent"),
    "last_stop_reason": {"type": "string", "enum": list(STOP_REASONS)},
    "feedback": {"type": "string", "enum": ["positive", "negative"]},
    "start_datetime": _DATE_OR_TIME,
    "end_datetime": _DATE_OR_TIME,
    # Only the v2 agent file is exported: `true` is refused.
    "use_legacy_format": {"type": "boolean", "enum": [False]},
    **{name: _BOOLEAN for name in _BOOLEAN_QUERY if name != "use_legacy_format"},
}
_REQUIRED_QUERY = frozenset({"query"})  # the archival search's words


def _query_schema(name: str, cursor: str | None) -> dict[str, Any]:
    if name in ("after", "before"):
        return id_schema(cursor) if cursor else {"type": "string"}
    return dict(_QUERY.get(name, {"type": "string"}))


def _path_schema(name: str) -> dict[str, Any]:
    if name == "conversation_id":  # a conversation, or an agent's default one
        return {"type": "string", "pattern": f"^(default|conv-{_UUID}|agent-{_UUID})$"}
    prefix = ID_PREFIXES.get(name)
    # Anything else (a label, a tool name) is one non-empty path segment.
    return id_schema(prefix) if prefix else {"type": "string", "pattern": "^[^/]+$"}


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
        # A field may say more than its type can (a format, the one value taken).
        prop = field.metadata.get("schema") or schema_of(hints[field.name], components)
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
        if rule.endpoint == "static" or rule.rule.startswith("/internal/"):
            continue  # the node-to-node route is no part of the public API
        path = _CONVERTER_ARG.sub(r"{\1}", rule.rule)
        view = app.view_functions[rule.endpoint]
        if getattr(view, "__kelpie_undocumented__", False):
            continue  # not the API (the web console's files)
        doc: RouteDoc | None = getattr(view, "__kelpie_doc__", None)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if (rule.endpoint, method) in seen:
                continue
            seen.add((rule.endpoint, method))
            operation: dict[str, Any] = {
                "operationId": f"{rule.endpoint.replace('.', '_')}_{method.lower()}",
                "summary": doc.summary if doc else (view.__doc__ or rule.endpoint).strip(),
                "parameters": [
                    {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
                    for name in _CONVERTER_ARG.findall(rule.rule)
                ]
                + [
                    {
                        "name": name.rstrip("!"),
                        "in": "query",
                        # `name!`: this route needs it (`agent_id` to create a conversation)
                        "required": name in _REQUIRED_QUERY or name.endswith("!"),
                        "schema": _query_schema(name.rstrip("!"), doc.cursor),
                    }
                    for name in (doc.query if doc else ())
                ],
                "responses": {
                    "200": _response(doc, components),
                    "4XX": {
                        "description": "A client error (a 405 names the methods in `Allow`)",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                },
            }
            if doc and doc.upload:
                file_part = {"file": {"type": "string", "format": "binary"}}
                operation["requestBody"] = {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": {
                        "type": "object", "properties": file_part, "required": ["file"],
                    }}},
                }  # fmt: skip
            if doc and doc.request is not None:
                schema = schema_of(doc.request, components)
                if doc.partial:
                    schema = _partial(schema, components, doc.fields)
                operation["requestBody"] = {
                    "required": not doc.body_optional,
                    "content": {"application/json": {"schema": schema}},
                }
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "kelpie-trio", "version": __version__},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": components},
    }


_SERVER_SET = frozenset({"id", "created_by_id", "last_updated_by_id", "created_at", "updated_at"})


def _partial(
    ref: dict[str, Any], components: dict[str, Any], fields: frozenset[str] | None
) -> dict[str, Any]:
    """The schema of a PATCH body: the model's fields it takes, none of them required."""
    name = ref["$ref"].rsplit("/", 1)[1]
    patch = {k: v for k, v in components[name].items() if k != "required"}
    # What the server sets itself, or does not change, is not taken from a PATCH.
    patch["properties"] = {
        k: v
        for k, v in patch["properties"].items()
        if k not in _SERVER_SET and (fields is None or k in fields)
    }
    patch["title"] = f"{name}Patch"
    components[f"{name}Patch"] = patch
    return {"$ref": f"#/components/schemas/{name}Patch"}


def _response(doc: RouteDoc | None, components: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    if doc and doc.response is not None:
        schema = schema_of(doc.response, components)
        if doc.response_is_list:
            schema = {"type": "array", "items": schema}
    media_type = doc.media_type if doc else "application/json"
    if media_type != "application/json":
        schema = {"type": "string"}
    return {"description": "Successful response", "content": {media_type: {"schema": schema}}}
