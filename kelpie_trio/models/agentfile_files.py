"""An agent file's folders and files: stored records <-> Letta's file shapes (pure).

Letta 0.16.8 carries them as top-level `sources` (SourceSchema: a folder's name,
description, instructions, metadata, embedding config), `files` (FileSchema: which source
holds it, its names, type and size, and `content`, its parsed text), and per agent its
`source_ids` and `files_agents` (FileAgentSchema: a file as the agent holds it, open or
not, with the part of it in view). Ids are file-local (`source-0`, `file-0`,
`file_agent-0`).

What is exported of a file is its text, never its bytes or chunks: the importing server
cuts the text into chunks and indexes it again, as Letta's importer does. The texts of one
file together stay within `CONTENT_BUDGET` so that the file imports in one transaction and
one request; a file whose text would pass it travels without `content`, and imports as a
file in `error` saying so (`NO_CONTENT`).
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.errors import InvalidField
from kelpie_trio.models.convert import iso
from kelpie_trio.models.folders import CreateFolder, FileAgent, FileRecord, Folder

__all__ = [
    "CONTENT_BUDGET",
    "NO_CONTENT",
    "FileAgentSchema",
    "FileSchema",
    "SourceSchema",
    "file_agent_entry",
    "file_entry",
    "file_problems",
    "source_entry",
]

# The files' texts of one agent file, in UTF-8 bytes: an import is one transaction of at
# most 10 MB (FDB's limit, kept by every backend) and one request of at most 16 MB, which
# also carry the agents, their histories and passages.
CONTENT_BUDGET = 4 * 1024 * 1024
NO_CONTENT = (
    "the agent file carries no text for this file (an export leaves out the text of files "
    "past its 4 MB budget); upload the file again"
)


@attrs.define(kw_only=True)
class SourceSchema(CreateFolder):
    """A folder in an agent file (Letta's SourceSchema: a folder's create request, and the
    file's own id for it)."""

    id: str


@attrs.define(kw_only=True)
class FileSchema:
    """A file in an agent file (Letta's FileSchema): `content` is its parsed text."""

    id: str
    source_id: str
    file_name: str | None = None
    original_file_name: str | None = None
    file_path: str | None = None
    file_type: str | None = None
    file_size: int | None = None
    file_creation_date: str | None = None
    file_last_modified_date: str | None = None
    processing_status: str = "pending"
    error_message: str | None = None
    total_chunks: int | None = None
    chunks_embedded: int | None = None
    content: str | None = None


@attrs.define(kw_only=True)
class FileAgentSchema:
    """A file as an agent of the file holds it (Letta's FileAgentSchema). `start_line` and
    `end_line` (1-based, end exclusive) are in Letta's FileAgentBase, though its exporter
    leaves them out: here they say which window `visible_content` shows."""

    id: str
    agent_id: str | None = None
    file_id: str
    source_id: str
    file_name: str
    is_open: bool = True
    visible_content: str | None = None
    last_accessed_at: str | None = None
    start_line: int | None = None
    end_line: int | None = None


def source_entry(folder: Folder, file_id: str) -> SourceSchema:
    return SourceSchema(
        id=file_id,
        name=folder.name,
        description=folder.description,
        instructions=folder.instructions,
        metadata=folder.metadata,
        embedding_chunk_size=folder.embedding_chunk_size,
        embedding_config=folder.embedding_config,
    )


def file_entry(record: FileRecord, file_id: str, source_id: str, content: str | None) -> FileSchema:
    return FileSchema(
        id=file_id,
        source_id=source_id,
        file_name=record.file_name,
        original_file_name=record.original_file_name,
        file_type=record.file_type,
        file_size=record.file_size,
        file_creation_date=iso(record.created_at),
        file_last_modified_date=iso(record.updated_at),
        processing_status=record.processing_status,
        error_message=record.error_message,
        total_chunks=record.total_chunks,
        chunks_embedded=record.chunks_embedded,
        content=content,
    )


def file_agent_entry(
    held: FileAgent, file_agent_id: str, agent_id: str, file_id: str, source_id: str
) -> FileAgentSchema:
    return FileAgentSchema(
        id=file_agent_id,
        agent_id=agent_id,
        file_id=file_id,
        source_id=source_id,
        file_name=held.file_name,
        is_open=held.is_open,
        visible_content=held.view if held.is_open else None,
        last_accessed_at=iso(held.last_accessed),
        start_line=held.start_line,
        end_line=held.end_line,
    )


def file_problems(
    sources: list[SourceSchema],
    files: list[FileSchema],
    agents: list[Any],
    at: list[str | int],
) -> list[InvalidField]:
    """The dangling or duplicate references of the file's folders and files, as Letta's
    importer checks them: a file's source, an agent's `source_ids`, and each of its
    `files_agents` (its file, its source, its agent)."""
    problems: list[InvalidField] = []
    for kind, ids in (("sources", [s.id for s in sources]), ("files", [f.id for f in files])):
        seen: set[str] = set()
        for ident in ids:
            if ident in seen:
                problems.append(InvalidField([*at, kind], f"two {kind} have the id {ident!r}"))
            seen.add(ident)
    source_ids = {s.id for s in sources}
    file_ids = {f.id for f in files}
    for i, source in enumerate(sources):
        if not source.name.strip():
            problems.append(InvalidField([*at, "sources", i, "name"], "a folder needs a name"))
    for i, entry in enumerate(files):
        if entry.source_id not in source_ids:
            problems.append(
                InvalidField([*at, "files", i, "source_id"],
                             f"no source with the file-local id {entry.source_id!r} in the "
                             "file's sources")
            )  # fmt: skip
    for i, agent in enumerate(agents):
        here = [*at, "agents", i]
        for j, ref in enumerate(agent.source_ids or []):
            if ref not in source_ids:
                problems.append(
                    InvalidField([*here, "source_ids", j],
                                 f"no source with the file-local id {ref!r} in the file's sources")
                )  # fmt: skip
        for j, held in enumerate(agent.files_agents):
            there = [*here, "files_agents", j]
            if held.file_id not in file_ids:
                problems.append(
                    InvalidField([*there, "file_id"],
                                 f"no file with the file-local id {held.file_id!r} in the "
                                 "file's files")
                )  # fmt: skip
            if held.source_id not in source_ids:
                problems.append(
                    InvalidField([*there, "source_id"],
                                 f"no source with the file-local id {held.source_id!r} in the "
                                 "file's sources")
                )  # fmt: skip
            if held.agent_id is not None and held.agent_id != agent.id:
                problems.append(
                    InvalidField([*there, "agent_id"],
                                 f"{held.agent_id!r} is not the agent holding it ({agent.id!r})")
                )  # fmt: skip
    return problems
