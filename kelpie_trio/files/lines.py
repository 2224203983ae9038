"""A file's text as the numbered lines an agent reads, and the windows it opens on them.

Letta shows an open file as numbered lines (`12: text`) under a header saying which
part is in view; Markdown is cut into sentences, code keeps its indentation, and blank
lines are dropped. `open_files(offset, length)` takes a 0-based offset and a length in
those lines; the header and the agent's view say 1-based line numbers.
"""

from __future__ import annotations

import re

from kelpie_trio.files.kinds import Strategy

__all__ = [
    "TRUNCATED_NOTE",
    "WindowError",
    "numbered_lines",
    "split_lines",
    "truncate_view",
    "window",
]

# What the end of a view cut at the agent's per-file limit says (Letta's wording of it is
# its own; the agent only needs to know to open a narrower window).
TRUNCATED_NOTE = (
    "...[TRUNCATED]\n# NOTE: This file's view is cut here; open a narrower range of lines "
    "to read the rest."
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


class WindowError(ValueError):
    """An open_files range that does not fit the file (told to the agent as a tool error)."""


def split_lines(text: str, strategy: Strategy) -> list[str]:
    """The file's lines as an agent counts them, blank ones left out."""
    if not text:
        return []
    if strategy == "sentences":
        out = (re.sub(r"\s+", " ", s.strip()) for s in _SENTENCE_END.split(text.strip()))
        return [s for s in out if s]
    if strategy == "code":
        return [line.rstrip() for line in text.splitlines() if line.strip()]
    return [line.strip() for line in text.splitlines() if line.strip()]


def numbered_lines(lines: list[str], first: int = 0) -> list[str]:
    return [f"{first + i + 1}: {line}" for i, line in enumerate(lines)]


def window(
    lines: list[str], start: int | None = None, end: int | None = None, *, name: str = "file"
) -> str:
    """The view of lines [start, end) (0-based, end exclusive; None: from the top, to the
    bottom), numbered, under a header saying what part of the file it is."""
    unit = "lines"
    total = len(lines)
    if start is not None and end is not None and start >= end:
        raise WindowError(f"Invalid range: start ({start}) must be less than end ({end})")
    if start is not None and start >= total:
        raise WindowError(
            f"File {name} has only {total} {unit}, but requested offset {start + 1} is out of range"
        )
    begin = max(0, start or 0)
    stop = total if end is None else min(end, total)
    body = numbered_lines(lines[begin:stop], begin)
    if start is None and end is None:
        header = f"[Viewing file start (out of {total} {unit})]"
    elif end is None:
        header = f"[Viewing {unit} {begin + 1} to end (out of {total} {unit})]"
    else:
        header = f"[Viewing {unit} {begin + 1} to {end} (out of {total} {unit})]"
    return "\n".join([header, *body])


def truncate_view(view: str, limit: int) -> str:
    """A view cut to the agent's per-file character limit, saying so at the cut."""
    if len(view) <= limit:
        return view
    return view[: max(0, limit - len(TRUNCATED_NOTE))] + TRUNCATED_NOTE
