"""Archival memory: passages, the insert request, and the plain rules over them.

Everything here is pure (no store, no trio): how long text is split into
passages, how a timestamp argument is read, and how a simple search ranks an
agent's passages. The service loads the passages and applies these rules, so
they are tested without a store; the real search index (BM25 and vectors) is
its own issue and will replace `rank`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from typing import Any, Literal

import attrs

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_TOP_K",
    "MAX_INSERT_CHARS",
    "CreateArchivalMemory",
    "Passage",
    "SearchQuery",
    "SearchResult",
    "default_archive_id",
    "parse_timestamp",
    "split_text",
]

# Letta embeds passages in chunks of `embedding_chunk_size` tokens (300 by
# default) and splits inserted text to fit; without a tokenizer we count about
# four characters to a token, the usual figure for English.
CHARS_PER_TOKEN = 4

# One insert is one transaction; this keeps it well inside FDB's 10 MB even
# for four-byte characters (the split passages and their records included).
MAX_INSERT_CHARS = 1_000_000

DEFAULT_TOP_K = 5  # Letta's RETRIEVAL_QUERY_DEFAULT_PAGE_SIZE


@attrs.define
class Passage:
    """A stored passage, in Letta's Passage shape plus the agent that owns it.

    `agent_id` is set for a passage of the agent's own archival memory and None
    for one of an archive (service/archives.py): its `owner` is then the archive,
    which names its key, its outbox stream and its search documents.
    """

    id: str
    agent_id: str | None
    text: str
    archive_id: str | None = None
    tags: list[str] = attrs.Factory(list)
    metadata: dict[str, Any] | None = attrs.Factory(dict)
    embedding: list[float] | None = None
    embedding_config: dict[str, Any] | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    # A chunk of a file in a folder (service/file_worker.py): the folder owns it.
    source_id: str | None = None
    file_id: str | None = None
    file_name: str | None = None

    @property
    def owner(self) -> str:
        """The agent, archive or folder holding the passage: `PASSAGES(owner, id)`."""
        return self.agent_id or self.archive_id or self.source_id or ""


@attrs.define
class CreateArchivalMemory:
    """POST /v1/agents/{id}/archival-memory: only `text` is required."""

    text: str
    tags: list[str] | None = None
    created_at: str | None = None


@attrs.frozen
class SearchQuery:
    """What GET .../archival-memory/search asks for; times are epoch seconds, inclusive."""

    query: str
    tags: tuple[str, ...] = ()
    tag_match_mode: Literal["any", "all"] = "any"
    top_k: int = DEFAULT_TOP_K
    start: float | None = None
    end: float | None = None


@attrs.frozen
class SearchResult:
    """A passage found by search, with its creation time in the agent's timezone (ISO 8601)."""

    passage: Passage
    timestamp: str


def default_archive_id(agent_id: str) -> str:
    """The id of an agent's own archive, the same every time it is asked for.

    Letta keeps an agent's passages in a default archive created on first
    insert; deriving its id from the agent's keeps it stable without a record
    (archives as resources of their own are another issue).
    """
    digest = hashlib.sha256(f"archive:{agent_id}".encode()).digest()
    return f"archive-{uuid.UUID(bytes=digest[:16], version=4)}"


def split_text(text: str, max_chars: int) -> list[str]:
    """`text` as passages of at most `max_chars` characters, in order.

    A text that fits is kept exactly as given. A longer one is cut at the last
    paragraph break, line break, sentence end or space in the second half of
    each window (so no piece is tiny), else at `max_chars`; whitespace at the
    cuts is dropped, nothing else. Letta's splitter overlaps its chunks; ours
    do not, so the pieces read back as the text.
    """
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > max_chars:
        cut = max_chars
        for separator in ("\n\n", "\n", ". ", "! ", "? ", " "):
            found = rest.rfind(separator, max_chars // 2, max_chars)
            if found != -1:
                cut = found + len(separator)
                break
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def parse_timestamp(value: str, *, end_of_day: bool = False) -> float:
    """An ISO 8601 date or date-time as epoch seconds; raises ValueError.

    A time without a zone is UTC (Letta's default for `created_at`). A bare
    date means its first moment, or its last when it closes a range, so
    `end_datetime=2025-01-31` includes the whole of the 31st.
    """
    text = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
        if end_of_day:
            day += dt.timedelta(days=1, microseconds=-1)
        return day.timestamp()
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
