"""A custom tool's JSON schema, derived from its Python source without running it.

A custom tool arrives as source text (`ToolCreate.source_code`). Letta derives the
tool's `json_schema` -- the OpenAI function schema `{name, description, parameters}`
-- from one function's signature and Google-style docstring. This module does the
same from the syntax tree alone: the source is parsed with `ast` and never executed
or imported, because it is untrusted and runs later in a sandbox, not in the server.

The rules:

- Which function: with `name`, the top-level `def` or `async def` of that name (the
  last one, if it is defined twice); without it, the last top-level function whose
  name does not start with "_". Letta takes the last function of the module; leaving
  out private ones lets a tool keep its helpers below it. Functions nested in
  classes, other functions or `if` blocks are never chosen.
- Description: the docstring text before its first section (Args:, Returns:,
  Raises:, Examples:, ...), stripped; "No description available" without one, as
  Letta says.
- Parameters, in signature order: every one needs a type annotation, as Letta
  requires. `self` and Letta's injected `agent_state` are skipped, and so are
  `*args` and `**kwargs`, which a model cannot pass by name. A parameter is
  required when it has no default and its type does not admit None.
- Types: str -> string, int -> integer, float -> number, bool -> boolean;
  list[X] / List[X] -> array of X (a bare list is an array of strings, as in
  Letta); dict / Dict[...] -> object; Optional[X], X | None, Union[X, None] -> X;
  Literal[...] -> an enum of its values, typed by them. String annotations
  ("list[str]") are read the same way. Other unions and names (Any, classes,
  pydantic models, which only running the code could resolve) are refused.
- Parameter descriptions come from the Args: (or Arguments:, Parameters:,
  Params:) section: `name (type): text` or `name: text`, with more-indented lines
  continuing the text. The type written there is ignored; the annotation rules.
  A parameter without a description gets none in the schema.

`request_heartbeat` is not added here: Letta adds it to every tool when it builds
an agent's tool list, not to the stored schema.
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Any

import attrs

__all__ = [
    "MAX_SOURCE_CHARS",
    "NO_DESCRIPTION",
    "ToolSchemaResult",
    "ToolSourceError",
    "derive_tool_schema",
]

MAX_SOURCE_CHARS = 100_000
NO_DESCRIPTION = "No description available"

_SKIPPED_PARAMS = frozenset({"self", "agent_state"})
_SCALARS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_LISTS = frozenset({"list", "List"})
_DICTS = frozenset({"dict", "Dict"})
# `typing.List[str]` reads as `List[str]`; any other dotted name is a user's type.
_TYPE_MODULES = frozenset({"typing", "typing_extensions", "builtins"})
# Deeper annotations than this are no tool anyone writes, and recursing further
# would let a crafted source exhaust the stack.
_MAX_TYPE_DEPTH = 16

_ARGS_TITLES = frozenset({"Args", "Arguments", "Parameters", "Params"})
_SECTION_TITLES = _ARGS_TITLES | {
    "Attributes",
    "Example",
    "Examples",
    "Except",
    "Exceptions",
    "Note",
    "Notes",
    "Raises",
    "References",
    "Return",
    "Returns",
    "See Also",
    "Todo",
    "Warning",
    "Warnings",
    "Yield",
    "Yields",
}
_SECTION_RE = re.compile(
    r"^\s*(" + "|".join(re.escape(t) for t in sorted(_SECTION_TITLES)) + r")\s*:\s*$"
)
_ARG_RE = re.compile(r"^\*{0,2}(?P<name>[^\W\d]\w*)(?:\s*\((?P<type>.*?)\))?\s*:(?P<text>.*)$")


class ToolSourceError(ValueError):
    """The source cannot be turned into a tool schema; the message says why.

    `lineno` is the line at fault (a syntax error, a parameter), when there is one.
    """

    def __init__(self, message: str, *, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


@attrs.frozen
class ToolSchemaResult:
    name: str  # the chosen function's name
    description: str
    json_schema: dict[str, Any]  # {"name", "description", "parameters"}
    source: str


def derive_tool_schema(source: str, *, name: str | None = None) -> ToolSchemaResult:
    """Letta's tool schema for one function of `source` (see the module docstring)."""
    if len(source) > MAX_SOURCE_CHARS:
        raise ToolSourceError(
            f"tool source is {len(source)} characters; the limit is {MAX_SOURCE_CHARS}"
        )
    function = _choose_function(_parse(source), name)
    summary, arg_docs = _parse_docstring(ast.get_docstring(function, clean=True))
    description = summary or NO_DESCRIPTION
    properties, required = _parameters(function, arg_docs)
    json_schema = {
        "name": function.name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required},
    }
    return ToolSchemaResult(function.name, description, json_schema, source)


_Function = ast.FunctionDef | ast.AsyncFunctionDef


def _parse(source: str) -> ast.Module:
    try:
        return ast.parse(source, filename="<tool source>")
    except SyntaxError as e:
        where = f" at line {e.lineno}" if e.lineno is not None else ""
        raise ToolSourceError(
            f"tool source has a syntax error{where}: {e.msg}", lineno=e.lineno
        ) from None
    except (MemoryError, RecursionError):
        # What CPython's parser raises when nesting overflows its stack.
        raise ToolSourceError("tool source is nested too deeply to parse") from None


def _choose_function(module: ast.Module, name: str | None) -> _Function:
    functions = [n for n in module.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if name is not None:
        named = [f for f in functions if f.name == name]
        if not named:
            found = ", ".join(sorted({f.name for f in functions})) or "none"
            raise ToolSourceError(
                f"tool source has no top-level function named '{name}' (functions: {found})"
            )
        return named[-1]
    public = [f for f in functions if not f.name.startswith("_")]
    if not public:
        if functions:
            raise ToolSourceError(
                "tool source defines only private top-level functions (names starting "
                "with '_'); name the one to use"
            )
        raise ToolSourceError("tool source defines no top-level function")
    return public[-1]


def _parameters(function: _Function, arg_docs: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    params = [(a, i >= first_default) for i, a in enumerate(positional)]
    params += [(a, d is not None) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]

    properties: dict[str, Any] = {}
    required: list[str] = []
    for arg, has_default in params:
        if arg.arg in _SKIPPED_PARAMS:
            continue
        where = f"parameter '{arg.arg}' of function '{function.name}'"
        if arg.annotation is None:
            raise ToolSourceError(
                f"{where} has no type annotation; tool parameters need type hints",
                lineno=arg.lineno,
            )
        try:
            schema, admits_none = _annotation_schema(arg.annotation, where, depth=0)
        except ToolSourceError as e:
            raise ToolSourceError(str(e), lineno=arg.lineno) from None
        if arg.arg in arg_docs:
            schema["description"] = arg_docs[arg.arg]
        properties[arg.arg] = schema
        if not has_default and not admits_none:
            required.append(arg.arg)
    return properties, required


def _annotation_schema(node: ast.expr, where: str, *, depth: int) -> tuple[dict[str, Any], bool]:
    """The JSON schema of a type annotation, and whether the type admits None."""
    if depth > _MAX_TYPE_DEPTH:
        raise ToolSourceError(f"{where}: type annotation is nested too deeply")
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            inner = ast.parse(node.value.strip(), mode="eval").body
        except (SyntaxError, MemoryError, RecursionError):
            raise ToolSourceError(
                f"{where}: string annotation {node.value[:80]!r} is not a type"
            ) from None
        return _annotation_schema(inner, where, depth=depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union_schema([node.left, node.right], node, where, depth=depth)

    base = _type_name(node)
    if base in _SCALARS:
        return {"type": _SCALARS[base]}, False
    if base in _LISTS:
        return {"type": "array", "items": {"type": "string"}}, False
    if base in _DICTS:
        return {"type": "object"}, False

    if isinstance(node, ast.Subscript):
        generic = _type_name(node.value)
        members = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if generic in _LISTS and len(members) == 1:
            items, _ = _annotation_schema(members[0], where, depth=depth + 1)
            return {"type": "array", "items": items}, False
        if generic in _DICTS:
            # Letta's schemas have no key/value typing for dicts; an object is all it says.
            return {"type": "object"}, False
        if generic == "Optional" and len(members) == 1:
            schema, _ = _annotation_schema(members[0], where, depth=depth + 1)
            return schema, True
        if generic == "Union":
            return _union_schema(members, node, where, depth=depth)
        if generic == "Literal":
            return _literal_schema(members, node, where), False

    raise ToolSourceError(
        f"{where}: unsupported type annotation {_show(node)} (supported: str, int, float, "
        "bool, list[...], dict, Optional[...], X | None, Literal[...])"
    )


def _union_schema(
    members: list[ast.expr], node: ast.expr, where: str, *, depth: int
) -> tuple[dict[str, Any], bool]:
    flat = [m for member in members for m in _union_members(member)]
    others = [m for m in flat if not _is_none(m)]
    if len(others) != 1:
        raise ToolSourceError(
            f"{where}: unsupported union {_show(node)}; only a single type or None is allowed"
        )
    schema, admits_none = _annotation_schema(others[0], where, depth=depth + 1)
    return schema, admits_none or len(others) < len(flat)


def _union_members(node: ast.expr) -> list[ast.expr]:
    # `a | b | c` nests as ((a | b) | c); iterate so a long chain cannot recurse deeply.
    members: list[ast.expr] = []
    pending = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, ast.BinOp) and isinstance(current.op, ast.BitOr):
            pending += [current.right, current.left]
        else:
            members.append(current)
    return members


def _literal_schema(members: list[ast.expr], node: ast.expr, where: str) -> dict[str, Any]:
    values = [m.value for m in members if isinstance(m, ast.Constant)]
    if len(values) != len(members) or not values:
        raise ToolSourceError(f"{where}: {_show(node)} must list constant values")
    if all(isinstance(v, str) for v in values):
        kind = "string"
    elif all(isinstance(v, bool) for v in values):
        kind = "boolean"
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        kind = "integer"
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        kind = "number"
    else:
        raise ToolSourceError(
            f"{where}: {_show(node)} mixes value types; its values must share one JSON type"
        )
    return {"type": kind, "enum": values}


def _type_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in _TYPE_MODULES
    ):
        return node.attr
    return None


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _show(node: ast.expr) -> str:
    try:
        text = ast.unparse(node)
    except RecursionError:
        return "(annotation)"
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The summary (text before the first section) and the Args: descriptions."""
    if not doc:
        return "", {}
    lines = doc.splitlines()
    first_section = next((i for i, line in enumerate(lines) if _SECTION_RE.match(line)), None)
    if first_section is None:
        return doc.strip(), {}
    summary = "\n".join(lines[:first_section]).strip()

    arg_docs: dict[str, str] = {}
    i = first_section
    while i < len(lines):
        header = _SECTION_RE.match(lines[i])
        if header is None:
            i += 1
            continue
        header_indent = _indent(lines[i])
        end = i + 1
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > header_indent):
            end += 1
        if header.group(1) in _ARGS_TITLES:
            for arg, text in _parse_args(lines[i + 1 : end]).items():
                arg_docs.setdefault(arg, text)
        i = end
    return summary, arg_docs


def _parse_args(body: list[str]) -> dict[str, str]:
    entries: list[tuple[str, str, list[str]]] = []
    current: list[str] | None = None  # continuation lines of the entry being read
    entry_indent: int | None = None
    for line in body:
        if not line.strip():
            if current is not None:
                current.append("")
            continue
        indent = _indent(line)
        if entry_indent is None:
            entry_indent = indent
        if indent <= entry_indent:
            match = _ARG_RE.match(line.strip())
            # A line at entry level that is not `name: text` belongs to no parameter.
            current = None
            if match is not None:
                current = []
                entries.append((match["name"], match["text"].strip(), current))
        elif current is not None:
            current.append(line)

    docs: dict[str, str] = {}
    for arg, first, rest in entries:
        text = (first + "\n" + textwrap.dedent("\n".join(rest))).strip()
        if text:
            docs.setdefault(arg, text)
    return docs


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
