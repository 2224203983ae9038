"""The core memory tools, as plain functions over an agent's blocks.

`edit` takes a memory tool's name and arguments and the agent's blocks (by label) and
returns the tool's result text and the blocks as they should be after it, or raises
ToolError with the message the model gets. The actor compares before and after and
writes the difference (changed values, new blocks, detached ones) inside the step's
transaction. Semantics and parameter names follow Letta 0.16.8's tools of the same names
(with the older `old_str`/`new_str` still accepted); the texts are ours, except those the
model is known to match on (the read-only refusal, the line-number refusals).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = ["MEMORY_TOOLS", "MemBlock", "ToolError", "edit"]

READ_ONLY = "Error: This block is read-only and cannot be edited."
# What Letta shows beside line-numbered memory; a model that copies it back is refused.
LINE_NUMBER_WARNING = (
    "# NOTE: Line numbers shown below (with arrows like '1→') are to help during editing. "
    "Do NOT include line number prefixes in your memory edit tool calls."
)
_LINE_NUMBER = re.compile(r"^[ \t]*\d+→[ \t]*", re.MULTILINE)


class ToolError(Exception):
    """The tool call cannot be done as asked; the message goes back to the model."""


@attrs.frozen
class MemBlock:
    """A block as the memory tools see it; `id` None for one a tool creates."""

    id: str | None
    label: str
    value: str
    limit: int
    read_only: bool = False
    description: str | None = None


Blocks = dict[str, MemBlock]


def _fit(block: MemBlock, value: str) -> MemBlock:
    if len(value) > block.limit:
        raise ToolError(
            f"the edit would make the block {block.label!r} {len(value)} characters long, over "
            f"its limit of {block.limit}; shorten it first (memory_rethink replaces the whole "
            "block)"
        )
    return attrs.evolve(block, value=value)


def _get(blocks: Blocks, label: Any) -> MemBlock:
    if not isinstance(label, str) or not label:
        raise ToolError("a block label is required")
    if label not in blocks:
        raise ToolError(
            f"Block field {label} does not exist (available sections = {', '.join(blocks)})"
        )
    return blocks[label]


def _writable(blocks: Blocks, label: Any) -> MemBlock:
    block = _get(blocks, label)
    if block.read_only:
        raise ToolError(READ_ONLY)
    return block


def _text(args: Mapping[str, Any], *names: str, default: str | None = None) -> str:
    """The first of `names` given (a newer parameter name, then the older ones)."""
    for name in names:
        if args.get(name) is not None:
            value = args[name]
            if not isinstance(value, str):
                raise ToolError(f"{name} must be a string")
            return value
    if default is not None:
        return default
    raise ToolError(f"{names[0]} is required")


def _no_line_numbers(text: str, what: str) -> None:
    if _LINE_NUMBER.search(text):
        raise ToolError(
            f"{what} contains a line number prefix, which is not allowed. Do not include line "
            "numbers when calling memory tools (line numbers are for display purposes only)."
        )
    if LINE_NUMBER_WARNING in text:
        raise ToolError(
            f"{what} contains a line number warning, which is not allowed. Do not include line "
            "number information when calling memory tools (line numbers are for display "
            "purposes only)."
        )


def _replace_once(block: MemBlock, old: str, new: str) -> MemBlock:
    _no_line_numbers(old, "old_string")
    _no_line_numbers(new, "new_string")
    old, new = old.expandtabs(), new.expandtabs()
    value = block.value.expandtabs()
    count = value.count(old) if old else 0
    if count == 0:
        raise ToolError(
            f"No replacement was performed, old_string `{old}` did not appear verbatim in "
            f"memory block with label `{block.label}`."
        )
    if count > 1:
        lines = [i + 1 for i, line in enumerate(value.split("\n")) if old in line]
        raise ToolError(
            f"No replacement was performed. Multiple occurrences of old_string `{old}` in "
            f"lines {lines}. Please ensure it is unique."
        )
    return _fit(block, value.replace(old, new))


def _insert(block: MemBlock, text: str, line: Any, what: str = "new_string") -> MemBlock:
    _no_line_numbers(text, what)
    if line is None:
        line = -1
    if isinstance(line, bool) or not isinstance(line, int):
        raise ToolError("insert_line must be an integer")
    value = block.value.expandtabs()
    lines = value.split("\n")
    if line == -1:
        line = len(lines)
    elif not 0 <= line <= len(lines):
        raise ToolError(
            f"Invalid `insert_line` parameter: {line}. It should be within the range of lines "
            f"of the memory block: {[0, len(lines)]}, or -1 to append to the end of the memory "
            "block."
        )
    new_lines = text.expandtabs().split("\n")
    if value == "":  # an empty block has one empty line; the text replaces it
        return _fit(block, "\n".join(new_lines))
    return _fit(block, "\n".join(lines[:line] + new_lines + lines[line:]))


def _new(blocks: Blocks, label: str, value: str, description: str | None, limit: int) -> Blocks:
    if label in blocks:
        raise ToolError(f"Error: Memory block '{label}' already exists")
    if len(value) > limit:
        raise ToolError(f"the new block would be {len(value)} characters, over {limit}")
    return {**blocks, label: MemBlock(None, label, value, limit, description=description)}


def _label_of(path: Any) -> str:
    """A `memory` tool path (`/memories/<label>`) as a block label."""
    if not isinstance(path, str) or not path.strip():
        raise ToolError("Error: path is required")
    return path.strip().removeprefix("/memories/").removeprefix("/").replace("/", "_")


# -- the tools -------------------------------------------------------------------------

Result = tuple[str, Blocks]


def _core_memory_append(args: Mapping[str, Any], blocks: Blocks, limit: int) -> Result:
    block = _writable(blocks, args.get("label"))
    content = _text(args, "content")
    new = _fit(block, f"{block.value}\n{content}")
    return new.value, {**blocks, block.label: new}


def _core_memory_replace(args: Mapping[str, Any], blocks: Blocks, limit: int) -> Result:
    block = _writable(blocks, args.get("label"))
    old, rep = _text(args, "old_content"), _text(args, "new_content")
    if not old or old not in block.value:
        raise ToolError(f"Old content '{old}' not found in memory block '{block.label}'")
    new = _fit(block, block.value.replace(old, rep))
    return new.value, {**blocks, block.label: new}


def _memory_replace(args: Mapping[str, Any], blocks: Blocks, limit: int) -> Result:
    block = _writable(blocks, args.get("label"))
    old = _text(args, "old_string", "old_str")
    new = _replace_once(block, old, _text(args, "new_string", "new_str"))
    return new.value, {**blocks, block.label: new}


def _memory_insert(args: Mapping[str, Any], blocks: Blocks, limit: int) -> Result:
    block = _writable(blocks, args.get("label"))
    text = _text(args, "new_string", "new_str")
    new = _insert(block, text, args.get("insert_line", -1))
    return new.value, {**blocks, block.label: new}


def _memory_rethink(args: Mapping[str, Any], blocks: Blocks, limit: int) -> Result:
    label = args.get("label")
    text = _text(args, "new_memory")
    _no_line_numbers(text, "new_memory")
    if isinstance(label, str) and label and label not in blocks:  # it is created
        return text, _new(blocks, label, text, None, limit)
    block = _writable(blocks, label)
    return text, {**blocks, block.label: _fit(block, text)}


def _memory_finish_edits(args: Mapping[str, Any], blocks: Blocks, limit: int) -> Result:
    return "None", blocks


def _recompiled(what: str) -> str:
    return f"{what} Your system prompt now shows the change."


def _memory(args: Mapping[str, Any], blocks: Blocks, limit: int) -> Result:
    command = args.get("command")
    if command == "create":
        label = _label_of(args.get("path"))
        if args.get("description") is None:
            raise ToolError("Error: description is required for create command")
        value = _text(args, "file_text", default="")
        made = _new(blocks, label, value, _text(args, "description"), limit)
        return _recompiled(f"Successfully created memory block '{label}'."), made
    if command == "str_replace":
        block = _writable(blocks, _label_of(args.get("path")))
        for needed in ("old_string", "new_string"):
            if args.get(needed) is None:
                raise ToolError(f"Error: {needed} is required for str_replace command")
        new = _replace_once(block, _text(args, "old_string"), _text(args, "new_string"))
        return new.value, {**blocks, block.label: new}
    if command == "insert":
        block = _writable(blocks, _label_of(args.get("path")))
        if args.get("insert_text") is None:
            raise ToolError("Error: insert_text is required for insert command")
        new = _insert(block, _text(args, "insert_text"), args.get("insert_line"), "insert_text")
        return new.value, {**blocks, block.label: new}
    if command == "delete":
        block = _writable(blocks, _label_of(args.get("path")))
        rest = {k: v for k, v in blocks.items() if k != block.label}
        return _recompiled(f"Successfully deleted memory block '{block.label}'."), rest
    if command == "rename":
        if args.get("path") and args.get("description"):
            block = _writable(blocks, _label_of(args.get("path")))
            described = attrs.evolve(block, description=_text(args, "description"))
            text = f"Successfully updated description of memory block '{block.label}'."
            return _recompiled(text), {**blocks, block.label: described}
        if args.get("old_path") and args.get("new_path"):
            return _rename(blocks, _label_of(args["old_path"]), _label_of(args["new_path"]))
        raise ToolError(
            "Error: rename needs path and description (to describe a block), or old_path and "
            "new_path (to rename one)"
        )
    raise ToolError(
        f"Error: Unknown command '{command}'. Supported commands: create, str_replace, insert, "
        "delete, rename"
    )


def _rename(blocks: Blocks, old: str, new: str) -> Result:
    block = _writable(blocks, old)
    if new in blocks and new != old:
        raise ToolError(f"Error: Memory block '{new}' already exists")
    rest = {k: v for k, v in blocks.items() if k != old}
    rest[new] = attrs.evolve(block, label=new)
    return _recompiled(f"Successfully renamed memory block '{old}' to '{new}'."), rest


def _memory_apply_patch(args: Mapping[str, Any], blocks: Blocks, limit: int) -> Result:
    patch = _text(args, "patch")
    if _LINE_NUMBER.search(patch):
        raise ToolError(
            "Patch contains a line number prefix, which is not allowed. Do not include line "
            "numbers (they are for display only)."
        )
    if LINE_NUMBER_WARNING in patch:
        raise ToolError("Patch contains the line number warning banner, which is not allowed.")
    patch = patch.expandtabs()
    headers = ("*** Add Block:", "*** Delete Block:", "*** Update Block:", "*** Move to:")
    if not any(line.startswith(headers) for line in patch.splitlines()):
        block = _writable(blocks, args.get("label"))
        new = _fit(block, _apply_hunks(block.value, patch))
        return new.value, {**blocks, block.label: new}
    done: list[str] = []
    for kind, label, body in _patch_actions(patch):
        if kind == "add":
            description, lines = body
            blocks = _new(blocks, label, "\n".join(lines).rstrip("\n"), description, limit)
            done.append(f"Created memory block '{label}'")
        elif kind == "delete":
            block = _writable(blocks, label)
            blocks = {k: v for k, v in blocks.items() if k != label}
            done.append(f"Deleted memory block '{label}'")
        elif kind == "rename":
            _, blocks = _rename(blocks, label, body)
            done.append(f"Renamed memory block '{label}' to '{body}'")
        else:
            block = _writable(blocks, label)
            blocks = {**blocks, label: _fit(block, _apply_hunks(block.value, "\n".join(body)))}
            done.append(f"Updated memory block '{label}'")
    summary = "\n- ".join(done)
    return _recompiled("Successfully applied memory patch operations.") + (
        f"\n\nOperations completed:\n- {summary}"
    ), blocks


_HEADERS = (
    ("*** Add Block:", "add"),
    ("*** Delete Block:", "delete"),
    ("*** Update Block:", "update"),
    ("*** Move to:", "rename"),
)


def _patch_actions(patch: str) -> list[tuple[str, str, Any]]:
    """The operations of a multi-block patch, in order: (kind, label, body)."""
    actions: list[tuple[str, str, Any]] = []
    current: list[Any] | None = None  # [kind, label, body] being collected
    last_label: str | None = None
    lines = patch.splitlines()
    i = 0

    def flush() -> None:
        nonlocal current
        if current is not None:
            actions.append((current[0], current[1], current[2]))
            current = None

    while i < len(lines):
        line = lines[i]
        for header, kind in _HEADERS:
            if line.startswith(header):
                label = line.split(":", 1)[1].strip()
                if not label:
                    raise ToolError(f"{header} must name a block")
                flush()
                if kind == "rename":
                    if last_label is None:
                        raise ToolError("*** Move to: must follow an Add/Update/Delete header")
                    actions.append(("rename", last_label, label))
                elif kind == "delete":
                    actions.append(("delete", label, None))
                elif kind == "add":
                    description = None
                    if i + 1 < len(lines) and lines[i + 1].startswith("Description:"):
                        description = lines[i + 1].split(":", 1)[1].strip()
                        i += 1
                    current = ["add", label, (description, [])]
                else:
                    current = ["update", label, []]
                last_label = label
                break
        else:
            if current is not None and current[0] == "add":
                if line.startswith("+"):
                    current[2][1].append(line[1:])
                elif not line.strip():
                    current[2][1].append("")
            elif current is not None:
                current[2].append(line)
        i += 1
    flush()
    if not actions:
        raise ToolError("No operations found in the patch.")
    return actions


def _apply_hunks(value: str, patch: str) -> str:
    """A simplified unified diff applied to a block's text: each hunk's context and removed
    lines must occur exactly once; they become its context and added lines."""
    current = value.expandtabs().split("\n")
    hunks: list[list[str]] = []
    hunk: list[str] = []
    for line in patch.splitlines():
        if line.startswith(("*** ", "---", "+++")):
            continue
        if line.startswith("@@"):
            if hunk:
                hunks.append(hunk)
            hunk = []
        elif line.startswith((" ", "-", "+")):
            hunk.append(line)
        elif not line.strip():
            hunk.append(" ")
    if hunk:
        hunks.append(hunk)
    if not hunks:
        raise ToolError(
            "No applicable hunks found in patch. Ensure lines start with ' ', '-', or '+'."
        )
    for hunk in hunks:
        expected = [h[1:] for h in hunk if h[0] in " -"]
        replacement = [h[1:] for h in hunk if h[0] in " +"]
        if not expected:
            current += replacement
            continue
        n = len(expected)
        found = [i for i in range(len(current) - n + 1) if current[i : i + n] == expected]
        if not found:
            sample = "\n".join(expected[:4])
            raise ToolError(
                "Failed to apply patch: expected hunk context not found in the memory block. "
                f"Verify the target lines exist and try providing more context. Expected "
                f"start:\n{sample}"
            )
        if len(found) > 1:
            raise ToolError(
                "Failed to apply patch: hunk context matched multiple places in the memory "
                "block. Please add more unique surrounding context to disambiguate."
            )
        at = found[0]
        current = current[:at] + replacement + current[at + n :]
    return "\n".join(current)


MEMORY_TOOLS: dict[str, Callable[[Mapping[str, Any], Blocks, int], Result]] = {
    "core_memory_append": _core_memory_append,
    "core_memory_replace": _core_memory_replace,
    "memory_replace": _memory_replace,
    "memory_insert": _memory_insert,
    "memory_rethink": _memory_rethink,
    "memory_finish_edits": _memory_finish_edits,
    "memory_apply_patch": _memory_apply_patch,
    "memory": _memory,
}


def edit(name: str, args: Mapping[str, Any], blocks: Blocks, new_limit: int) -> Result:
    """Run memory tool `name`: its result text and the blocks after it. `new_limit` is the
    character limit of a block the tool creates."""
    return MEMORY_TOOLS[name](args, blocks, new_limit)
