"""What the file tools decide, without I/O: open_files, grep_files, semantic_search_files,
and how an agent's folders and open files appear in its context.

Limits are Letta 0.16.8's: an agent has at most `max_files_open` files open, and each
open file shows at most `per_file_view_window_char_limit` characters; both default from
the model's context window. Opening one more file than the limit allows closes the
least recently used others (by the last time a tool touched them); grep shows 20
matches a page out of at most 1,000 collected; a semantic search returns at most 50
passages, each shown by its first 20 lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import attrs

from kelpie_trio.files.lines import numbered_lines

__all__ = [
    "DEFAULT_CHAR_LIMIT",
    "DEFAULT_MAX_FILES_OPEN",
    "FILE_TOOLS",
    "FileState",
    "FolderInfo",
    "OpenRequest",
    "ToolError",
    "check_limits",
    "file_defaults",
    "format_semantic",
    "grep",
    "open_requests",
    "plan_attach",
    "plan_open",
    "previous_range",
    "render_directories",
]

FILE_TOOLS = ("open_files", "grep_files", "semantic_search_files")
DEFAULT_MAX_FILES_OPEN = 5
DEFAULT_CHAR_LIMIT = 50_000
MAX_FILES_OPEN_LIMIT = 1_000  # Letta refuses more on an agent
# Letta bounds the per-file limit by int32 only; a file's text is at most 6 MB here, so a
# view of more characters than this could never be filled.
MAX_CHAR_LIMIT = 10_000_000
GREP_PAGE = 20
GREP_COLLECTED = 1_000
MAX_PATTERN = 1_000
SEMANTIC_MAX = 50
PASSAGE_LINES = 20


class ToolError(ValueError):
    """A file tool refused its arguments: told to the agent as the call's error."""


def check_limits(body: dict[str, Any]) -> None:
    """An agent's `max_files_open` and `per_file_view_window_char_limit`, where a create or
    an update gives them: whole numbers of at least 1, up to Letta's bounds (a 422 else)."""
    from kelpie_trio.errors import Invalid

    for name, high in (("max_files_open", MAX_FILES_OPEN_LIMIT),
                       ("per_file_view_window_char_limit", MAX_CHAR_LIMIT)):  # fmt: skip
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise Invalid.field(["body", name], f"{name} must be a whole number from 1 to {high}")


def file_defaults(context_window: int | None) -> tuple[int, int]:
    """(max_files_open, per-file character limit) for a model's context window, as Letta
    sizes them: small windows get fewer, shorter open files."""
    if not context_window:
        return DEFAULT_MAX_FILES_OPEN, DEFAULT_CHAR_LIMIT
    if context_window <= 8_000:
        return 3, 5_000
    if context_window <= 32_000:
        return 5, 15_000
    if context_window <= 128_000:
        return 10, 25_000
    if context_window <= 200_000:
        return 10, 40_000
    return 15, 40_000


@attrs.frozen
class FileState:
    """One file of a folder attached to an agent, as the agent holds it."""

    file_id: str
    file_name: str  # "<folder name>/<file name>", what the agent calls it
    folder_id: str
    is_open: bool = False
    view: str | None = None  # what the agent sees of it while open
    start_line: int | None = None  # 1-based, of the range opened (None: the whole file)
    end_line: int | None = None
    last_accessed: float = 0.0


@attrs.frozen
class FolderInfo:
    id: str
    name: str
    description: str | None = None
    instructions: str | None = None


@attrs.frozen
class OpenRequest:
    file_name: str
    offset: int | None = None  # 0-based first line
    length: int | None = None

    @property
    def start(self) -> int | None:
        return self.offset if self.offset is not None or self.length is not None else None

    @property
    def end(self) -> int | None:
        if self.length is None:
            return None
        return (self.offset or 0) + self.length

    def describe(self) -> str:
        if self.offset is not None and self.length is not None:
            return f"{self.file_name} (lines {self.offset + 1}-{self.offset + self.length})"
        if self.offset is not None:
            return f"{self.file_name} (lines {self.offset + 1}-end)"
        return self.file_name


def _int_or_none(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolError(f"{what} must be an integer")
    return value


def open_requests(args: dict[str, Any], max_open: int) -> tuple[list[OpenRequest], bool]:
    """open_files' arguments read and checked: the requests and `close_all_others`."""
    raw = args.get("file_requests")
    if not isinstance(raw, list) or not raw:
        raise ToolError("No file requests provided")
    if len(raw) > max_open:
        raise ToolError(
            f"Cannot open {len(raw)} files: exceeds configured maximum limit of {max_open} files"
        )
    requests = []
    for item in raw:
        if isinstance(item, str):
            item = {"file_name": item}
        if not isinstance(item, dict) or not isinstance(item.get("file_name"), str):
            raise ToolError("each file request needs a file_name")
        name = item["file_name"]
        offset = _int_or_none(item.get("offset"), "offset")
        length = _int_or_none(item.get("length"), "length")
        if offset is not None and offset < 0:
            raise ToolError(f"Offset for file {name} must be >= 0 (0-indexed), got {offset}")
        if length is not None and length < 1:
            raise ToolError(f"Length for file {name} must be >= 1, got {length}")
        requests.append(OpenRequest(name, offset, length))
    return requests, bool(args.get("close_all_others", False))


def previous_range(state: FileState, start_line: int | None, end_line: int | None) -> str:
    """What open_files says of a file that was already open on another range (1-based
    lines, as the agent saw them): " (previously lines 3-9)", or "" when nothing changed."""
    if not state.is_open or (state.start_line, state.end_line) == (start_line, end_line):
        return ""
    if state.start_line is not None and state.end_line is not None:
        return f" (previously lines {state.start_line}-{state.end_line})"
    if state.start_line is not None:
        return f" (previously lines {state.start_line}-end)"
    return " (previously full file)"


def plan_open(states: Sequence[FileState], name: str, max_open: int) -> list[str]:
    """The names to close so that `name` can be open within `max_open`: the least
    recently used of the others (ties: by name, so every node decides alike)."""
    others = sorted(
        (s for s in states if s.is_open and s.file_name != name),
        key=lambda s: (s.last_accessed, s.file_name),
    )
    excess = len(others) - (max_open - 1)
    return [s.file_name for s in others[: max(0, excess)]]


def plan_attach(
    states: Sequence[FileState], new_names: Sequence[str], max_open: int
) -> tuple[set[str], list[str]]:
    """Files arriving at once (a folder attached, a file processed): which are open after,
    and which open ones close. The arrivals come first; the most recently used of the
    files already open keep what room is left."""
    arriving = list(dict.fromkeys(new_names))
    arriving_set = set(arriving)
    still = [
        s.file_name
        for s in sorted(states, key=lambda s: (s.last_accessed, s.file_name))
        if s.is_open and s.file_name not in arriving_set
    ]
    if len(arriving) >= max_open:
        final = arriving[:max_open]
    else:
        room = max_open - len(arriving)
        final = arriving + (still[-room:] if room else [])
    final_set = set(final)
    closed = [n for n in still if n not in final_set]
    return final_set, closed


def _glob_or_regex(include: str) -> re.Pattern[str]:
    if "*" in include and not any(c in include for c in "^$()[]{}\\+"):
        include = include.replace(".", r"\.").replace("*", ".*").replace("?", ".")
        if not include.endswith("$"):
            include += "$"
    return _compile(include)


def _compile(pattern: str) -> re.Pattern[str]:
    if len(pattern) > MAX_PATTERN:
        raise ToolError(f"Pattern too complex: {len(pattern)} chars > {MAX_PATTERN} limit")
    try:
        return re.compile(pattern, re.IGNORECASE | re.MULTILINE)
    except re.error as error:
        raise ToolError(f"Invalid regex pattern: {error}") from None


def grep(
    files: Sequence[tuple[str, list[str]]],
    pattern: str,
    include: str | None = None,
    context_lines: int | None = 1,
    offset: int | None = None,
) -> tuple[str, list[str]]:
    """grep_files over (file name, lines) pairs: the tool's text, and the names of the
    files that matched (their last use is refreshed)."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ToolError("Empty search pattern provided")
    pattern = pattern.strip()
    regex = _compile(pattern)
    if not files:
        return "No files are currently attached to search", []
    if include and include.strip():
        include = include.strip()
        wanted = _glob_or_regex(include)
        before = len(files)
        files = [f for f in files if wanted.search(f[0])]
        if not files:
            return f"No files match the filename pattern '{include}' (filtered {before} files)", []
    around = max(0, context_lines if isinstance(context_lines, int) else 1)
    matches: list[tuple[str, int, list[str]]] = []
    for name, lines in files:
        shown = numbered_lines(lines)
        for i, line in enumerate(lines):
            if len(matches) >= GREP_COLLECTED:
                break
            if regex.search(line.strip()):
                lo, hi = max(0, i - around), min(len(lines), i + around + 1)
                context = [f"{'>' if j == i else ' '} {shown[j]}" for j in range(lo, hi)]
                matches.append((name, i + 1, context))
    if not matches:
        text = f"No matches found for pattern: '{pattern}'"
        return text + (f" in files matching '{include}'" if include else ""), []
    counts: dict[str, int] = {}
    for name, _, _ in matches:
        counts[name] = counts.get(name, 0) + 1
    start = max(0, offset) if isinstance(offset, int) else 0
    stop = start + GREP_PAGE
    capped = len(matches) >= GREP_COLLECTED
    total = f"{GREP_COLLECTED}+" if capped else str(len(matches))
    out = [
        f"Found {total} total matches across {len(counts)} files "
        f"(showing matches {start + 1}-{min(stop, len(matches))} of {total})",
        "=" * 80,
        "\nFiles with matches:",
    ]
    for name, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"  - {name}: {count} matches")
    out.append("")
    for name, line_number, context in matches[start:stop]:
        out.append(f"\n=== {name}:{line_number} ===\n" + "\n".join(context))
    out.append("")
    if stop < len(matches):
        out.append(f'To see more matches, call: grep_files(pattern="{pattern}", offset={stop})')
    else:
        out.append("No more matches to show.")
    return "\n".join(out), list(counts)


def format_semantic(query: str, hits: Sequence[tuple[str, str, float]]) -> str:
    """semantic_search_files' text from (file name, passage text, score), best first."""
    if not hits:
        return f"No semantic matches found for query: '{query}'"
    by_file: dict[str, list[tuple[str, float]]] = {}
    for name, text, score in hits:
        by_file.setdefault(name, []).append((text, score))
    parts = []
    number = 0
    for name, found in by_file.items():
        for text, score in found:
            number += 1
            lines = text.strip().splitlines()
            body = [f"  {line}" for line in lines[:PASSAGE_LINES]]
            if len(lines) > PASSAGE_LINES:
                body.append(f"  ... [truncated {len(lines) - PASSAGE_LINES} more lines]")
            parts.append(
                f"\n=== {name} (passage #{number}) (score: {score:.3f}) ===\n" + "\n".join(body)
            )
    files = len(by_file)
    plural = "s" if files != 1 else ""
    summary = f"Found {number} semantic matches in {files} file{plural} for query: '{query}'"
    return "\n".join([summary, "=" * len(summary), *parts])


def render_directories(
    folders: Sequence[FolderInfo],
    files: Sequence[FileState],
    max_files_open: int,
    char_limit: int,
) -> str:
    """The agent's folders and files as its context shows them (after its memory
    blocks): each folder with its description and instructions, each file open (with
    its view) or closed, and how many files are open of how many may be."""
    open_now = sum(1 for f in files if f.is_open and f.view)
    out = [
        "<directories>",
        "<file_limits>",
        f"- current_files_open={open_now}",
        f"- max_files_open={max_files_open}",
        "</file_limits>",
    ]
    for folder in folders:
        out.append(f'<directory name="{folder.name}">')
        if folder.description:
            out.append(f"<description>{folder.description}</description>")
        if folder.instructions:
            out.append(f"<instructions>{folder.instructions}</instructions>")
        for f in files:
            if f.folder_id != folder.id:
                continue
            view = f.view if f.is_open and f.view else ""
            out.append(f'<file status="{"open" if view else "closed"}" name="{f.file_name}">')
            out.append("<metadata>")
            out.append("- read_only=true")
            out.append(f"- chars_current={len(view)}")
            out.append(f"- chars_limit={char_limit}")
            out.append("</metadata>")
            if view:
                out += ["<value>", view, "</value>"]
            out.append("</file>")
        out.append("</directory>")
    out.append("</directories>")
    return "\n".join(out)
