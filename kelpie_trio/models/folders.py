"""Folders (Letta's sources) and their files: the stored records and the request shapes.

A folder is a named collection of files; a file's record holds what Letta's
FileMetadata shows (name, type, size, processing status, chunk counts). The file's bytes,
its parsed text and its chunks (passages of the folder) are stored apart
(service/folders.py). `FileAgent` is one file as one agent holds it (open or closed,
what it sees, when a tool last touched it).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = [
    "STATUSES",
    "CreateFolder",
    "FileAgent",
    "FileRecord",
    "Folder",
    "UpdateFolder",
    "is_folder_id",
]

Status = Literal["pending", "parsing", "embedding", "completed", "error"]
STATUSES: tuple[str, ...] = ("pending", "parsing", "embedding", "completed", "error")
DEFAULT_CHUNK_CHARS = 1_200  # Letta's default chunk is 300 tokens: about four characters each


def is_folder_id(owner: str) -> bool:
    """Whether a passage owner (an outbox stream, a search document's owner) is a folder."""
    return owner.startswith("source-")


@attrs.define(kw_only=True)
class Folder:
    id: str
    name: str
    description: str | None = None
    instructions: str | None = None
    metadata: dict[str, Any] | None = None
    embedding_config: dict[str, Any] | None = None
    embedding_chunk_size: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@attrs.define(kw_only=True)
class CreateFolder:
    """POST /v1/folders/ (Letta's SourceCreate)."""

    name: str
    description: str | None = None
    instructions: str | None = None
    metadata: dict[str, Any] | None = None
    embedding: str | None = None
    embedding_chunk_size: int | None = None
    embedding_config: dict[str, Any] | None = None


@attrs.define(kw_only=True)
class UpdateFolder:
    """PATCH /v1/folders/{folder_id} (Letta's SourceUpdate)."""

    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    metadata: dict[str, Any] | None = None
    embedding_config: dict[str, Any] | None = None


@attrs.define(kw_only=True)
class FileRecord:
    id: str
    folder_id: str
    file_name: str  # "<folder name>/<name>" (with a suffix when the name was taken)
    original_file_name: str
    file_type: str
    file_size: int
    processing_status: Status = "pending"
    error_message: str | None = None
    total_chunks: int | None = None
    chunks_embedded: int | None = None
    # The worker's claim while it processes the file: a claim past its time is a dead
    # worker's, and another takes the file over (service/file_worker.py).
    claimed_until: float | None = None
    attempts: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0


@attrs.define(kw_only=True)
class FileAgent:
    """One file of a folder attached to an agent, as that agent holds it."""

    id: str
    agent_id: str
    file_id: str
    folder_id: str
    file_name: str
    is_open: bool = False
    view: str | None = None  # the agent's view of it while open (cut to its char limit)
    start_line: int | None = None
    end_line: int | None = None
    last_accessed: float = 0.0
    created_at: float = 0.0
