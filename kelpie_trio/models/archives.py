"""Archives: collections of passages that agents share (Letta's client.archives).

An archive is a record of its own; its passages are stored like an agent's
(`PASSAGES(archive_id, passage_id)`), and agents see them once the archive is
attached. The request shapes mirror Letta's ArchiveCreateRequest,
ArchiveUpdateRequest, PassageCreateRequest, PassageBatchCreateRequest and
PassageSearchRequest; `insert_owner` is the rule deciding where an agent's
`archival_memory_insert` goes, pure so it is tested without a store.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = [
    "DEFAULT_ORGANIZATION_ID",
    "Archive",
    "CreateArchive",
    "CreateArchivePassage",
    "CreateArchivePassages",
    "PassageSearchRequest",
    "UpdateArchive",
    "insert_owner",
    "is_archive_id",
]

# Letta's single-tenant organization: its Archive schema requires an organization id.
DEFAULT_ORGANIZATION_ID = "org-00000000-0000-4000-8000-000000000000"

# One batch is one transaction: this keeps it well inside FDB's 10 MB (four-byte characters,
# the record's other fields and the index entries included).
MAX_BATCH_CHARS = 1_000_000
MAX_BATCH_PASSAGES = 1_000


def is_archive_id(owner: str) -> bool:
    """Whether a passage owner (an outbox stream, a search document's owner) is an archive."""
    return owner.startswith("archive-")


@attrs.define(kw_only=True)
class Archive:
    """A stored archive, in Letta's Archive shape."""

    id: str
    name: str
    description: str | None = None
    embedding_config: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    vector_db_provider: str = "native"
    created_at: float = 0.0
    updated_at: float = 0.0


@attrs.define(kw_only=True)
class CreateArchive:
    """POST /v1/archives/: `embedding` (a handle) wins over the deprecated `embedding_config`."""

    name: str
    description: str | None = None
    embedding: str | None = None
    embedding_config: dict[str, Any] | None = None


@attrs.define(kw_only=True)
class UpdateArchive:
    """PATCH /v1/archives/{archive_id}: only the name and description change."""

    name: str | None = None
    description: str | None = None


@attrs.define(kw_only=True)
class CreateArchivePassage:
    """POST /v1/archives/{archive_id}/passages: one passage, kept whole (Letta does not split)."""

    text: str
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    created_at: str | None = None


@attrs.define(kw_only=True)
class CreateArchivePassages:
    """POST /v1/archives/{archive_id}/passages/batch: several passages, all or none."""

    passages: list[CreateArchivePassage]


@attrs.define(kw_only=True)
class PassageSearchRequest:
    """POST /v1/passages/search: `agent_id` wins over `archive_id`; neither searches all."""

    query: str | None = None
    agent_id: str | None = None
    archive_id: str | None = None
    tags: list[str] | None = None
    tag_match_mode: Literal["any", "all"] = "any"
    limit: int = 50
    start_date: str | None = None
    end_date: str | None = None


def insert_owner(agent_id: str, has_own_passages: bool, attached: list[str]) -> str:
    """Where an agent's archival insert goes: the stream owner of the new passages.

    Letta 0.16.8 gives an agent at most one archive and inserts into it: the one
    attached, or else a default archive it creates for the agent. Here an agent's
    default archive is its own passages (owner: the agent), and it may also have
    several attached archives. So: once the agent has passages of its own, they
    stay the target; without any, the first archive attached (Letta's only one)
    is; with neither, the agent's own archive begins.
    """
    if has_own_passages or not attached:
        return agent_id
    return attached[0]
