"""Tool sync, sans-IO: a listing against the stored tools -> add, update, remove, skip."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from kelpie_trio.mcp.sync import InvalidSchema, plan, tool_schema
from kelpie_trio.models.mcp import McpTool

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


@attrs.define
class Stored:
    name: str
    description: str | None
    json_schema: dict[str, Any]


def test_the_declared_schema_is_kept_with_letta_s_defaults_filled_in() -> None:
    schema = tool_schema(McpTool("find", "Find.", SCHEMA))
    assert schema == {"name": "find", "description": "Find.", "parameters": SCHEMA}
    bare = tool_schema(McpTool("ping", None, {}))
    assert bare["parameters"] == {"type": "object", "properties": {}, "required": []}


@pytest.mark.parametrize(
    ("name", "declared", "why"),
    [
        ("bad name!", SCHEMA, "not a valid function name"),
        ("t", ["not", "an", "object"], "not a JSON object"),
        ("t", {"type": "array"}, "type 'array'"),
        ("t", {"properties": {"q": "text"}}, "properties are not a JSON object of schemas"),
        ("t", {"properties": {}, "required": ["q"]}, "requires undeclared properties"),
        ("t", {"properties": {}, "required": "q"}, "required is not a list"),
    ],
)
def test_a_schema_that_is_not_a_tool_s_is_refused_saying_why(
    name: str, declared: Any, why: str
) -> None:
    with pytest.raises(InvalidSchema, match=why):
        tool_schema(McpTool(name, "", declared))


def test_a_listing_adds_updates_removes_and_skips() -> None:
    stored = [
        Stored("same", "Same.", tool_schema(McpTool("same", "Same.", SCHEMA))),
        Stored("changed", "Old.", tool_schema(McpTool("changed", "Old.", SCHEMA))),
        Stored("gone", "Gone.", tool_schema(McpTool("gone", "Gone.", SCHEMA))),
    ]
    listed = [
        McpTool("same", "Same.", SCHEMA),
        McpTool("changed", "New.", {**SCHEMA, "required": []}),
        McpTool("new", "New.", SCHEMA),
        McpTool("broken", "", {"type": "string"}),
        McpTool("twice", "", SCHEMA),
        McpTool("twice", "", SCHEMA),
    ]
    result = plan(listed, stored)
    assert [t.name for t in result.add] == ["new"]
    assert [(old.name, new.description) for old, new in result.update] == [("changed", "New.")]
    assert [t.name for t in result.remove] == ["gone"]
    assert set(result.skipped) == {"broken", "twice"}


def test_a_call_s_content_is_joined_and_bounded() -> None:
    from types import SimpleNamespace

    from kelpie_trio.mcp.client import content_text

    pieces = [SimpleNamespace(type="text", text="a"), SimpleNamespace(type="image", text=None)]
    assert content_text(pieces) == "a [image]"
    assert content_text([]) == "Empty response from tool"
    long = [SimpleNamespace(type="text", text="x" * 12)]
    assert content_text(long, limit=10) == "xxxxxxxxxx[2 more characters not kept]"
