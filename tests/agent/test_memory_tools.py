"""The memory tools as Letta 0.16.8 defines them, as plain functions over an agent's blocks."""

from __future__ import annotations

import pytest

from kelpie_trio.agent.memory import READ_ONLY, MemBlock, ToolError, edit

LIMIT = 1000


def blocks(**values: str) -> dict[str, MemBlock]:
    return {label: MemBlock(f"block-{label}", label, v, LIMIT) for label, v in values.items()}


def run(name: str, args: dict, memory: dict[str, MemBlock]) -> tuple[str, dict[str, MemBlock]]:
    return edit(name, args, memory, LIMIT)


def test_memory_replace_takes_the_new_parameter_names_and_the_old_ones() -> None:
    memory = blocks(human="Name: Ada")
    text, after = run("memory_replace", {"label": "human", "old_string": "Ada",
                                         "new_string": "Ada L."}, memory)  # fmt: skip
    assert after["human"].value == "Name: Ada L." and text == "Name: Ada L."
    _, older = run("memory_replace", {"label": "human", "old_str": "Ada", "new_str": "Bo"}, memory)
    assert older["human"].value == "Name: Bo"


def test_memory_replace_needs_exactly_one_occurrence() -> None:
    memory = blocks(human="a\nb a")
    with pytest.raises(
        ToolError, match=r"Multiple occurrences of old_string `a` in lines \[1, 2\]"
    ):
        run("memory_replace", {"label": "human", "old_string": "a", "new_string": "c"}, memory)
    with pytest.raises(ToolError, match="did not appear verbatim in memory block with label"):
        run("memory_replace", {"label": "human", "old_string": "z", "new_string": "c"}, memory)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("memory_replace", {"label": "human", "old_string": "1→ Ada", "new_string": "x"}),
        ("memory_replace", {"label": "human", "old_string": "Ada", "new_string": " 2→ Bo"}),
        ("memory_insert", {"label": "human", "new_string": "line\n3→ more"}),
        ("memory_rethink", {"label": "human", "new_memory": "1→ all new"}),
        ("memory_apply_patch", {"label": "human", "patch": " 1→ Name: Ada\n+Name: Bo"}),
    ],
)
def test_text_with_line_number_prefixes_is_refused(name: str, args: dict) -> None:
    memory = blocks(human="Name: Ada")
    with pytest.raises(ToolError, match="line number prefix, which is not allowed"):
        run(name, args, memory)


def test_memory_insert_takes_a_line_and_refuses_one_out_of_range() -> None:
    memory = blocks(human="one\ntwo")
    assert run("memory_insert", {"label": "human", "new_string": "zero", "insert_line": 0},
               memory)[1]["human"].value == "zero\none\ntwo"  # fmt: skip
    assert run("memory_insert", {"label": "human", "new_string": "1.5", "insert_line": 1},
               memory)[1]["human"].value == "one\n1.5\ntwo"  # fmt: skip
    assert run("memory_insert", {"label": "human", "new_str": "end"},
               memory)[1]["human"].value == "one\ntwo\nend"  # fmt: skip
    with pytest.raises(ToolError, match=r"Invalid `insert_line` parameter: 3.*\[0, 2\]"):
        run("memory_insert", {"label": "human", "new_string": "x", "insert_line": 3}, memory)
    with pytest.raises(ToolError, match="Invalid `insert_line` parameter: -2"):
        run("memory_insert", {"label": "human", "new_string": "x", "insert_line": -2}, memory)


def test_memory_rethink_creates_a_block_that_does_not_exist() -> None:
    text, after = run("memory_rethink", {"label": "plans", "new_memory": "Visit Lisbon."},
                      blocks(human="Ada"))  # fmt: skip
    assert text == "Visit Lisbon."
    assert after["plans"] == MemBlock(None, "plans", "Visit Lisbon.", LIMIT)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("core_memory_append", {"label": "persona", "content": "x"}),
        ("core_memory_replace", {"label": "persona", "old_content": "calm", "new_content": "x"}),
        ("memory_replace", {"label": "persona", "old_string": "calm", "new_string": "x"}),
        ("memory_insert", {"label": "persona", "new_string": "x"}),
        ("memory_rethink", {"label": "persona", "new_memory": "x"}),
        ("memory_apply_patch", {"label": "persona", "patch": "-I am calm.\n+I am loud."}),
        ("memory", {"command": "str_replace", "path": "/memories/persona", "old_string": "calm",
                    "new_string": "x"}),
        ("memory", {"command": "insert", "path": "/memories/persona", "insert_text": "x"}),
        ("memory", {"command": "delete", "path": "/memories/persona"}),
        ("memory", {"command": "rename", "old_path": "/memories/persona",
                    "new_path": "/memories/p"}),
        ("memory_apply_patch", {"label": "", "patch": "*** Delete Block: persona"}),
    ],
)  # fmt: skip
def test_no_tool_edits_a_read_only_block(name: str, args: dict) -> None:
    memory = {"persona": MemBlock("b1", "persona", "I am calm.", LIMIT, read_only=True)}
    with pytest.raises(ToolError) as refused:
        run(name, args, memory)
    assert str(refused.value) == READ_ONLY == "Error: This block is read-only and cannot be edited."


def test_the_memory_tool_creates_edits_renames_and_deletes_blocks() -> None:
    memory = blocks(human="Name: Ada")
    _, memory = run("memory", {"command": "create", "path": "/memories/prefs",
                               "description": "What the user likes.", "file_text": "tea"},
                    memory)  # fmt: skip
    assert memory["prefs"].value == "tea" and memory["prefs"].description == "What the user likes."
    _, memory = run("memory", {"command": "str_replace", "path": "/memories/prefs",
                               "old_string": "tea", "new_string": "green tea"}, memory)  # fmt: skip
    _, memory = run("memory", {"command": "insert", "path": "/memories/prefs", "insert_line": 0,
                               "insert_text": "Drinks:"}, memory)  # fmt: skip
    assert memory["prefs"].value == "Drinks:\ngreen tea"
    _, memory = run("memory", {"command": "rename", "old_path": "/memories/human",
                               "new_path": "/memories/user"}, memory)  # fmt: skip
    assert "human" not in memory and memory["user"] == MemBlock("block-human", "user",
                                                                "Name: Ada", LIMIT)  # fmt: skip
    _, memory = run("memory", {"command": "delete", "path": "/memories/prefs"}, memory)
    assert list(memory) == ["user"]
    with pytest.raises(ToolError, match="Unknown command 'view'"):
        run("memory", {"command": "view"}, memory)


def test_memory_apply_patch_edits_one_block_or_several() -> None:
    memory = blocks(human="Name: Ada\nLikes: tea\nCity: Paris")
    hunk = "@@\n Likes: tea\n-City: Paris\n+City: Lisbon"
    text, after = run("memory_apply_patch", {"label": "human", "patch": hunk}, memory)
    assert after["human"].value == "Name: Ada\nLikes: tea\nCity: Lisbon" == text
    patch = "\n".join([
        "*** Add Block: plans", "Description: Upcoming plans.", "+Visit Lisbon", "+Buy a bike",
        "*** Update Block: human", "-Likes: tea", "+Likes: coffee",
        "*** Delete Block: plans2",
    ])  # fmt: skip
    with pytest.raises(ToolError, match="does not exist"):  # plans2 is not there: nothing lands
        run("memory_apply_patch", {"label": "", "patch": patch}, memory)
    text, after = run("memory_apply_patch",
                      {"label": "", "patch": patch.rsplit("\n", 1)[0]}, memory)  # fmt: skip
    assert after["plans"].value == "Visit Lisbon\nBuy a bike"
    assert after["plans"].description == "Upcoming plans."
    assert after["human"].value == "Name: Ada\nLikes: coffee\nCity: Paris"
    assert "Created memory block 'plans'" in text and "Updated memory block 'human'" in text
    with pytest.raises(ToolError, match="expected hunk context not found"):
        run("memory_apply_patch", {"label": "human", "patch": "-Nope\n+x"}, memory)


def test_memory_finish_edits_changes_nothing() -> None:
    memory = blocks(human="Ada")
    assert run("memory_finish_edits", {}, memory) == ("None", memory)


def test_a_missing_block_is_named_with_the_ones_there_are() -> None:
    with pytest.raises(ToolError, match=r"Block field nope does not exist \(available sections = "
                                        r"human, persona\)"):  # fmt: skip
        run("memory_replace", {"label": "nope", "old_string": "a", "new_string": "b"},
            blocks(human="a", persona="b"))  # fmt: skip


def test_an_edit_over_the_block_limit_is_refused() -> None:
    memory = {"human": MemBlock("b", "human", "abc", 5)}
    with pytest.raises(ToolError, match="over its limit of 5"):
        run("core_memory_append", {"label": "human", "content": "defgh"}, memory)
