"""Deriving Letta's tool JSON schema from source, by reading it and never running it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from kelpie_trio.tools.schema import (
    MAX_SOURCE_CHARS,
    NO_DESCRIPTION,
    ToolSchemaResult,
    ToolSourceError,
    derive_tool_schema,
)


def derive(source: str, *, name: str | None = None) -> ToolSchemaResult:
    return derive_tool_schema(textwrap.dedent(source), name=name)


def properties(source: str, *, name: str | None = None) -> dict[str, object]:
    return derive(source, name=name).json_schema["parameters"]["properties"]


def required(source: str, *, name: str | None = None) -> list[str]:
    return derive(source, name=name).json_schema["parameters"]["required"]


ROLL_DICE = '''
def roll_dice(sides: int, times: int = 1) -> str:
    """Roll a die and report the results.

    Args:
        sides (int): How many faces the die has.
        times (int): How many rolls to make.

    Returns:
        str: The results.
    """
    import random
    return ", ".join(str(random.randint(1, sides)) for _ in range(times))
'''


def test_a_documented_function_gives_the_whole_openai_function_schema() -> None:
    result = derive(ROLL_DICE)
    assert result.name == "roll_dice"
    assert result.description == "Roll a die and report the results."
    assert result.source == textwrap.dedent(ROLL_DICE)
    assert result.json_schema == {
        "name": "roll_dice",
        "description": "Roll a die and report the results.",
        "parameters": {
            "type": "object",
            "properties": {
                "sides": {"type": "integer", "description": "How many faces the die has."},
                "times": {"type": "integer", "description": "How many rolls to make."},
            },
            "required": ["sides"],
        },
    }


def test_basic_annotations_map_to_json_types() -> None:
    props = properties(
        """
        def f(a: str, b: int, c: float, d: bool, e: dict, g: list) -> None:
            pass
        """
    )
    assert props == {
        "a": {"type": "string"},
        "b": {"type": "integer"},
        "c": {"type": "number"},
        "d": {"type": "boolean"},
        "e": {"type": "object"},
        "g": {"type": "array", "items": {"type": "string"}},
    }


def test_parameters_without_defaults_are_required_in_signature_order() -> None:
    assert required("def f(z: int, a: int, m: int = 0, *, k: str, o: str = '') -> None: ...") == [
        "z",
        "a",
        "k",
    ]


def test_properties_keep_signature_order() -> None:
    assert list(properties("def f(z: int, a: int, m: int) -> None: ...")) == ["z", "a", "m"]


@pytest.mark.parametrize(
    "annotation", ["Optional[int]", "int | None", "None | int", "Union[int, None]"]
)
def test_a_type_admitting_none_gives_the_inner_type_and_is_not_required(annotation: str) -> None:
    source = f"from typing import Optional, Union\ndef f(x: {annotation}, y: int) -> None: ..."
    assert properties(source)["x"] == {"type": "integer"}
    assert required(source) == ["y"]


def test_list_of_str_is_an_array_of_strings() -> None:
    assert properties("def f(tags: list[str]) -> None: ...")["tags"] == {
        "type": "array",
        "items": {"type": "string"},
    }


def test_typing_list_and_nested_lists_give_item_types() -> None:
    props = properties(
        """
        import typing
        from typing import List
        def f(a: List[int], b: typing.List[list[float]]) -> None: ...
        """
    )
    assert props["a"] == {"type": "array", "items": {"type": "integer"}}
    assert props["b"] == {
        "type": "array",
        "items": {"type": "array", "items": {"type": "number"}},
    }


def test_typed_dicts_are_plain_objects() -> None:
    props = properties("from typing import Dict\ndef f(a: dict[str, int], b: Dict) -> None: ...")
    assert props == {"a": {"type": "object"}, "b": {"type": "object"}}


def test_literal_strings_become_a_string_enum() -> None:
    source = "from typing import Literal\ndef f(unit: Literal['c', 'f']) -> None: ..."
    assert properties(source)["unit"] == {"type": "string", "enum": ["c", "f"]}


def test_literal_integers_become_an_integer_enum() -> None:
    source = "from typing import Literal\ndef f(n: Literal[1, 2, 3]) -> None: ..."
    assert properties(source)["n"] == {"type": "integer", "enum": [1, 2, 3]}


def test_string_annotations_are_read_like_written_ones() -> None:
    assert properties("def f(tags: 'list[str]') -> None: ...")["tags"] == {
        "type": "array",
        "items": {"type": "string"},
    }


def test_self_and_agent_state_are_not_parameters_of_the_schema() -> None:
    source = "def f(self, agent_state: 'AgentState', query: str) -> str: ..."
    assert list(properties(source)) == ["query"]
    assert required(source) == ["query"]


def test_star_args_and_kwargs_are_left_out() -> None:
    assert list(properties("def f(q: str, *args, **kwargs) -> None: ...")) == ["q"]


def test_request_heartbeat_is_not_added() -> None:
    assert "request_heartbeat" not in properties("def f(q: str) -> None: ...")


def test_args_accept_typed_and_untyped_entries() -> None:
    props = properties(
        '''
        def f(a: int, b: str) -> None:
            """Do it.

            Args:
                a (int): The first.
                b: The second.
            """
        '''
    )
    assert props["a"]["description"] == "The first."
    assert props["b"]["description"] == "The second."


def test_multi_line_arg_descriptions_are_joined_with_their_newlines() -> None:
    props = properties(
        '''
        def f(query: str, limit: int) -> None:
            """Search.

            Args:
                query (str): What to look for,
                    in plain words.
                limit (int):
                    At most this many results.
            """
        '''
    )
    assert props["query"]["description"] == "What to look for,\nin plain words."
    assert props["limit"]["description"] == "At most this many results."


def test_a_parameter_missing_from_args_has_no_description() -> None:
    props = properties(
        '''
        def f(a: int, b: int) -> None:
            """Do it.

            Args:
                a: The first.
            """
        '''
    )
    assert props["b"] == {"type": "integer"}


def test_other_sections_do_not_leak_into_arg_descriptions() -> None:
    props = properties(
        '''
        def f(a: int) -> None:
            """Do it.

            Args:
                a: The first.

            Returns:
                b: not a parameter.
            """
        '''
    )
    assert props["a"]["description"] == "The first."


def test_description_is_the_text_before_the_first_section() -> None:
    result = derive(
        '''
        def f(a: int) -> None:
            """Fetch the weather.

            Uses the cached forecast when it is fresh.

            Args:
                a: The first.
            """
        '''
    )
    assert result.description == "Fetch the weather.\n\nUses the cached forecast when it is fresh."
    assert result.json_schema["description"] == result.description


def test_a_function_without_docstring_gets_letta_placeholder_description() -> None:
    result = derive("def f(a: int) -> None: ...")
    assert result.description == NO_DESCRIPTION
    assert result.json_schema["description"] == NO_DESCRIPTION


def test_async_functions_are_tools_too() -> None:
    result = derive(
        '''
        async def fetch(url: str) -> str:
            """Fetch a page."""
        '''
    )
    assert result.name == "fetch"
    assert result.json_schema["parameters"]["required"] == ["url"]


TWO_TOOLS = """
def first(a: int) -> None: ...

def second(b: str) -> None: ...

def _helper(c) -> None: ...
"""


def test_without_a_name_the_last_public_top_level_function_is_chosen() -> None:
    assert derive(TWO_TOOLS).name == "second"


def test_a_name_chooses_that_function() -> None:
    result = derive(TWO_TOOLS, name="first")
    assert result.name == "first"
    assert list(result.json_schema["parameters"]["properties"]) == ["a"]


def test_methods_and_nested_functions_are_never_chosen() -> None:
    source = """
    def tool(a: int) -> None:
        def inner(b: int) -> None: ...

    class Helper:
        def method(self, c: int) -> None: ...
    """
    assert derive(source).name == "tool"
    with pytest.raises(ToolSourceError, match="no top-level function named 'method'"):
        derive(source, name="method")


def test_a_redefined_function_uses_its_last_definition() -> None:
    source = "def f(a: int) -> None: ...\ndef f(b: str) -> None: ..."
    assert list(properties(source, name="f")) == ["b"]


def test_output_is_deterministic_and_json_serialisable() -> None:
    first = json.dumps(derive(ROLL_DICE).json_schema)
    assert first == json.dumps(derive(ROLL_DICE).json_schema)


def test_a_syntax_error_is_refused_with_its_line_number() -> None:
    with pytest.raises(ToolSourceError, match="syntax error at line 3") as caught:
        derive_tool_schema("import os\n\ndef f(a: int:\n    pass\n")
    assert caught.value.lineno == 3


def test_source_without_a_function_is_refused() -> None:
    with pytest.raises(ToolSourceError, match="no top-level function"):
        derive_tool_schema("x = 1\n")


def test_source_with_only_private_functions_is_refused_unless_named() -> None:
    with pytest.raises(ToolSourceError, match="only private"):
        derive_tool_schema("def _f(a: int) -> None: ...\n")
    assert derive_tool_schema("def _f(a: int) -> None: ...\n", name="_f").name == "_f"


def test_a_parameter_without_annotation_is_refused_by_name() -> None:
    with pytest.raises(ToolSourceError, match="parameter 'b' of function 'f' has no type") as e:
        derive_tool_schema("import os\ndef f(a: int, b) -> None: ...\n")
    assert e.value.lineno == 2


def test_an_unknown_name_is_refused_listing_the_functions() -> None:
    with pytest.raises(ToolSourceError, match=r"no top-level function named 'g' \(functions: f\)"):
        derive_tool_schema("def f(a: int) -> None: ...\n", name="g")


def test_source_over_the_limit_is_refused_before_parsing() -> None:
    source = "def f(a: int) -> None: ...\n" + "#" * MAX_SOURCE_CHARS
    with pytest.raises(ToolSourceError, match="limit"):
        derive_tool_schema(source)


def test_source_nested_too_deeply_to_parse_is_refused() -> None:
    with pytest.raises(ToolSourceError):
        derive_tool_schema("x = " + "-" * 50_000 + "1\n")


@pytest.mark.parametrize("annotation", ["Any", "MyModel", "Union[int, str]", "int | str"])
def test_unsupported_annotations_are_refused_naming_them(annotation: str) -> None:
    source = f"from typing import Any, Union\ndef f(a: {annotation}) -> None: ...\n"
    with pytest.raises(ToolSourceError, match=r"parameter 'a' of function 'f'.*unsupported") as e:
        derive_tool_schema(source)
    assert repr(annotation) in str(e.value)
    assert e.value.lineno == 2


def test_a_deeply_nested_annotation_is_refused() -> None:
    annotation = "list[" * 40 + "int" + "]" * 40
    with pytest.raises(ToolSourceError, match="nested too deeply"):
        derive_tool_schema(f"def f(a: {annotation}) -> None: ...\n")


def test_a_literal_of_mixed_types_is_refused() -> None:
    source = "from typing import Literal\ndef f(a: Literal['x', 1]) -> None: ...\n"
    with pytest.raises(ToolSourceError, match="mixes value types"):
        derive_tool_schema(source)


def test_tool_source_error_is_a_value_error() -> None:
    assert issubclass(ToolSourceError, ValueError)


@pytest.mark.parametrize(
    "prelude",
    [
        "raise SystemExit(3)",
        "import os; os._exit(1)",
        "while True: pass",
    ],
)
def test_the_source_is_never_executed(prelude: str) -> None:
    source = f"{prelude}\n\ndef tool(a: int) -> int:\n    raise SystemExit(4)\n"
    assert derive_tool_schema(source).name == "tool"


def test_the_source_leaves_no_side_effects(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').write('ran')\n\ndef tool(a: int) -> None: ...\n"
    derive_tool_schema(source)
    assert not marker.exists()
