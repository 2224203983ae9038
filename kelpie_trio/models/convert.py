"""The converters: attrs values to JSON for the API and to bytes for the store.

Both are the same cattrs configuration with two differences: API input
ignores fields it does not know (Letta does, and the SDK sends many), stored
records refuse them (a record we cannot read fully is a bug, not a guess).
Scalars are strict: a number where a string belongs is a 422, not a silent
`str(3)` (cattrs' default would convert).
"""

from __future__ import annotations

import datetime as dt
import re
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import cattrs
import orjson
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.preconf.orjson import make_converter

from kelpie_trio.errors import Invalid, InvalidField

__all__ = [
    "api",
    "decode_record",
    "encode_record",
    "iso",
    "json_depth",
    "parse_body",
    "store",
    "structure_api",
]

T = TypeVar("T")


def _strict(converter: cattrs.Converter) -> cattrs.Converter:
    def string(value: Any, _: type) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return value

    def integer(value: Any, _: type) -> int:
        # 443.0 is an integer in JSON (and to Letta's pydantic models); 443.5 is not.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {type(value).__name__}")
        return value

    def number(value: Any, _: type) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        return float(value)

    def boolean(value: Any, _: type) -> bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected a boolean, got {type(value).__name__}")
        return value

    converter.register_structure_hook(str, string)
    converter.register_structure_hook(int, integer)
    converter.register_structure_hook(float, number)
    converter.register_structure_hook(bool, boolean)

    # A sequence must be a JSON array: cattrs would take "abc" as ["a", "b", "c"].
    plain = converter.copy()

    def is_sequence(tp: Any) -> bool:
        return typing.get_origin(tp) in (list, tuple, set, frozenset) or tp in (list, tuple)

    def sequence(tp: Any) -> Callable[[Any, Any], Any]:
        origin = typing.get_origin(tp) or tp
        args = typing.get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            base = plain.get_structure_hook(tp)  # a fixed-shape tuple: no models inside

            def fixed(value: Any, _: Any) -> Any:
                if not isinstance(value, list | tuple):
                    raise TypeError(f"expected a list, got {type(value).__name__}")
                return base(value, tp)

            return fixed
        item_type = args[0] if args else Any

        # The items go through this converter, so a model inside a list is as strict as one
        # outside (the copy's own list hook would structure them leniently).
        def structure(value: Any, _: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise TypeError(f"expected a list, got {type(value).__name__}")
            items, errors = [], []
            for index, item in enumerate(value):
                try:
                    items.append(converter.structure(item, item_type))
                except Exception as error:
                    note = IterableValidationNote(
                        f"Structuring {tp!r} @ index {index}", index, item_type
                    )
                    error.__notes__ = [*getattr(error, "__notes__", []), note]
                    errors.append(error)
            if errors:
                raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
            return items if origin is list else origin(items)

        return structure

    converter.register_structure_hook_factory(is_sequence, sequence)
    return converter


api = _strict(make_converter())
store = _strict(make_converter(forbid_extra_keys=True))

_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[['\"]?([^\]'\"]+)['\"]?\]")


def _loc(path: str) -> list[str | int]:
    head, _, rest = path.partition(".")
    loc: list[str | int] = [head]
    for name, index in _PATH_PART.findall("." + rest if rest else ""):
        loc.append(name or (int(index) if index.isdigit() else index))
    return loc


def structure_api(data: Any, cls: type[T], *, where: str = "body") -> T:
    """`data` (parsed JSON) as `cls`, or Invalid listing every bad field as Letta does."""
    if not isinstance(data, dict):
        raise Invalid([InvalidField([where], "expected a JSON object", "model_type")])
    try:
        return api.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as error:
        fields = []
        for line in cattrs.transform_error(error, path=where):
            message, _, path = line.rpartition(" @ ")
            kind = "missing" if "required field missing" in message else "value_error"
            fields.append(InvalidField(_loc(path), message, kind))
        raise Invalid(fields) from None


# Deeper JSON is refused before anything recurses into it (cattrs, the search indexer, the
# renderers): a few hundred levels would exhaust Python's stack. No Letta object nests this deep.
MAX_JSON_DEPTH = 64


def parse_body(raw: bytes) -> Any:
    """Parsed JSON, or Invalid naming the body (never a 500 for a client's typo)."""
    try:
        value = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as error:
        raise Invalid([InvalidField(["body"], f"invalid JSON: {error}", "json_invalid")]) from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise Invalid.field(
            ["body"], f"JSON nested deeper than {MAX_JSON_DEPTH} levels", "json_invalid"
        )
    return value


def json_depth(value: Any) -> int:
    """How deep arrays and objects nest in a parsed JSON value (a scalar is 0); iterative, so
    it cannot itself run out of stack."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def encode_record(value: Any) -> bytes:
    return orjson.dumps(store.unstructure(value))


def decode_record(raw: bytes, cls: type[T]) -> T:
    return store.structure(orjson.loads(raw), cls)


def iso(seconds: float) -> str:
    """Epoch seconds as the ISO 8601 UTC time the API shows."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()
