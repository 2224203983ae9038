"""The core memory tools, as plain functions over a block's value.

Each takes the current value (and the block's limit) and returns the new value,
or raises ToolError with a message the model can act on; the actor applies the
result inside the step's transaction. Semantics follow Letta's tools of the
same names.
"""

from __future__ import annotations

__all__ = ["ToolError", "append", "insert", "replace", "replace_once", "rethink"]


class ToolError(Exception):
    """The tool call cannot be done as asked; the message goes back to the model."""


def _fit(value: str, limit: int) -> str:
    if len(value) > limit:
        raise ToolError(
            f"the edit would make the block {len(value)} characters long, over its limit of "
            f"{limit}; shorten it first (memory_rethink replaces the whole block)"
        )
    return value


def append(value: str, content: str, limit: int) -> str:
    """core_memory_append: the content on a new line at the end."""
    return _fit(f"{value}\n{content}" if value else content, limit)


def replace(value: str, old: str, new: str, limit: int) -> str:
    """core_memory_replace: every occurrence of `old` becomes `new`."""
    if not old:
        raise ToolError("old_content must not be empty")
    if old not in value:
        raise ToolError(f"old_content {old!r} is not in the block")
    return _fit(value.replace(old, new), limit)


def replace_once(value: str, old: str, new: str, limit: int) -> str:
    """memory_replace: `old` must occur exactly once, so the edit is unambiguous."""
    count = value.count(old) if old else 0
    if count == 0:
        raise ToolError(f"old_str {old!r} is not in the block")
    if count > 1:
        raise ToolError(f"old_str {old!r} occurs {count} times; include more context")
    return _fit(value.replace(old, new, 1), limit)


def insert(value: str, text: str, line: int, limit: int) -> str:
    """memory_insert: `text` before line `line` (0-based); -1 appends at the end."""
    lines = value.split("\n") if value else []
    if line == -1 or line >= len(lines):
        lines.append(text)
    elif line < -1:
        raise ToolError(f"insert_line {line} is not a line number (use -1 for the end)")
    else:
        lines.insert(line, text)
    return _fit("\n".join(lines), limit)


def rethink(new_memory: str, limit: int) -> str:
    """memory_rethink: the whole block rewritten."""
    return _fit(new_memory, limit)
