"""Agent files, their folders and files: the reads of an export and the writes of an import.

A mixin of AgentFileCases (service/agentfile.py); models/agentfile_files.py holds the
shapes. What travels of a file is its parsed text (`content`); on import the text is
stored as the parsed text of a new file in `embedding`, queued for the node's file worker
(service/file_worker.py), which cuts it into chunks and writes them with their outbox
entries as for an upload: the import writes no chunk, so none is indexed twice. As
Letta's importer does:

- every source of the file becomes a new folder, never one already here: a name this
  server already has gets a suffix (`name_1a2b3c4d`), as Letta adds one;
- every file becomes a new file of its folder, named after the folder as here;
- each agent is attached to its folders (and those of the files it holds) and holds the
  files its `files_agents` names, each open or closed as the file says with the window
  it says (at most the agent's `max_files_open` open: the most recently used), in the
  import's transaction, which the worker's completion then leaves as it is.

A file the export carried without its text (past the export's budget), or with text over
what a file may hold here, is imported as a file in `error` saying why, held by no agent.
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.errors import Conflict, Invalid
from kelpie_trio.files.kinds import KINDS, kind_for, stored_kind
from kelpie_trio.files.lines import WindowError, split_lines, truncate_view, window
from kelpie_trio.llm.catalog import UnknownModel
from kelpie_trio.models import convert
from kelpie_trio.models.agentfile import AgentFileSchema, AgentSchema, ImportOptions, Loc
from kelpie_trio.models.agentfile_files import (
    CONTENT_BUDGET,
    NO_CONTENT,
    FileAgentSchema,
    FileSchema,
    SourceSchema,
    file_agent_entry,
    file_entry,
    source_entry,
)
from kelpie_trio.models.agentfile_history import parse_file_time
from kelpie_trio.models.agents import Agent
from kelpie_trio.models.folders import FileAgent, FileRecord, Folder
from kelpie_trio.models.passages import split_text
from kelpie_trio.service.agent_files import (
    FILE_TOOL_IDS,
    attached_folder_ids,
    holdings,
    limits_of,
)
from kelpie_trio.service.common import micros, read_record
from kelpie_trio.service.file_worker import MAX_TEXT_BYTES
from kelpie_trio.service.folders import (
    AGENT_FOLDERS,
    FILE_HOLDERS,
    FILE_NAMES,
    FOLDER_AGENTS,
    FOLDER_FILES,
    FOLDER_INDEX,
    FOLDER_NAMES,
    clean_name,
    read_file,
    write_file,
)
from kelpie_trio.service.limits import check_key_part
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import get_blob, set_blob

__all__ = ["AgentFileFolders", "ExportedFolders", "ImportedFolders"]


@attrs.define
class ExportedFolders:
    """The folders and files of an export's agents, each once: the file's `sources` and
    `files`, and per agent (by its id here) its `source_ids` and `files_agents`."""

    sources: list[SourceSchema] = attrs.Factory(list)
    files: list[FileSchema] = attrs.Factory(list)
    source_ids: dict[str, list[str]] = attrs.Factory(dict)
    files_agents: dict[str, list[FileAgentSchema]] = attrs.Factory(dict)


@attrs.define
class ImportedFolders:
    """What an import made of the file's sources and files, by their file-local ids."""

    folders: dict[str, Folder] = attrs.Factory(dict)
    files: dict[str, FileRecord] = attrs.Factory(dict)
    texts: dict[str, str] = attrs.Factory(dict)  # file-local id -> text, of files to process


def with_file_tools(entry: AgentSchema, tool_ids: list[str]) -> list[str]:
    """An agent with folders has the file tools, as attaching one gives them."""
    if not entry.source_ids and not entry.files_agents:
        return tool_ids
    return list(dict.fromkeys([*tool_ids, *FILE_TOOL_IDS]))


class AgentFileFolders:
    # FolderAgentCases': the store, the clock, the catalog, the worker's settings.
    store: Any
    env: Any
    catalog: Any
    file_settings: Any
    _write_folder: Any

    # -- export ------------------------------------------------------------------------

    @staticmethod
    async def _export_folders(tr: Transaction, agents: list[Agent]) -> ExportedFolders:
        """The agents' folders and the files they hold, each file's text whole or not at
        all: a text that would take the texts' total past CONTENT_BUDGET travels without it
        (a later, smaller one may still fit)."""
        out = ExportedFolders()
        source_ids: dict[str, str] = {}  # folder id here -> file-local id
        file_ids: dict[str, str] = {}
        spent = 0

        async def source_of(folder_id: str) -> str | None:
            if folder_id not in source_ids:
                folder = await read_record(tr, keys.FOLDERS.pack((folder_id,)), Folder)
                if folder is None:
                    return None
                source_ids[folder_id] = f"source-{len(out.sources)}"
                out.sources.append(source_entry(folder, source_ids[folder_id]))
            return source_ids[folder_id]

        for i, agent in enumerate(agents):
            agent_file_id = f"agent-{i}"
            mine = [await source_of(f) for f in await attached_folder_ids(tr, agent.id)]
            out.source_ids[agent.id] = [s for s in mine if s is not None]
            held = out.files_agents[agent.id] = []
            for holding in await holdings(tr, agent.id):
                source = await source_of(holding.folder_id)
                record = await read_file(tr, holding.file_id)
                if source is None or record is None:
                    continue
                if record.id not in file_ids:
                    raw = await get_blob(tr, keys.FILE_TEXT.pack((record.id,)))
                    content = None
                    if raw is not None and spent + len(raw) <= CONTENT_BUDGET:
                        content, spent = raw.decode(), spent + len(raw)
                    file_ids[record.id] = f"file-{len(out.files)}"
                    out.files.append(file_entry(record, file_ids[record.id], source, content))
                file_agent_id = f"file_agent-{sum(len(h) for h in out.files_agents.values())}"
                held.append(file_agent_entry(holding, file_agent_id, agent_file_id,
                                             file_ids[record.id], source))  # fmt: skip
        return out

    # -- import ------------------------------------------------------------------------

    def _folder_embedding(
        self, file: AgentFileSchema, options: ImportOptions, at: Loc, options_at: str
    ) -> dict[str, Any] | None:
        """The embedding config the import's `embedding` option gives the folders (None:
        each keeps the file's); the folders' names checked first (a name is part of a key)."""
        for i, source in enumerate(file.sources):
            check_key_part([*at, "sources", i, "name"], source.name, "a folder's name")
        if not options.embedding:
            return None
        try:
            return self.catalog.embedding_config_for(options.embedding)
        except UnknownModel as error:
            raise Invalid.field([options_at, "embedding"], str(error)) from None

    async def _import_folders(
        self, tr: Transaction, file: AgentFileSchema, embedding: dict[str, Any] | None,
        now: float,
    ) -> ImportedFolders:  # fmt: skip
        """New folders and files for the file's sources and files (check_agent_file has
        checked their references); the files with text queued for the worker."""
        made = ImportedFolders()
        taken: set[str] = set()
        for entry in file.sources:
            folder_id = self.env.new_id("source")
            given = entry.name.strip().replace("/", "_")
            tail = folder_id.removeprefix("source-").replace("-", "")
            # As Letta does: a name already here gets a suffix (from the new id, not from a
            # random draw, so a simulated run stays a function of its seed).
            suffixes = [tail[n : n + 8] for n in range(len(tail) - 7)] + [tail]
            name = given
            while name in taken or await tr.get_prefix(FOLDER_NAMES.pack((name,)), limit=1):
                if not suffixes:
                    raise Conflict(f"a folder named {given!r} already exists")
                name = f"{given}_{suffixes.pop(0)}"
            taken.add(name)
            folder = Folder(
                id=folder_id,
                name=name,
                description=entry.description,
                instructions=entry.instructions,
                metadata=dict(entry.metadata or {}),
                embedding_config=embedding or entry.embedding_config,
                embedding_chunk_size=entry.embedding_chunk_size,
                created_at=now,
                updated_at=now,
            )
            self._write_folder(tr, folder)
            tr.set(FOLDER_INDEX.pack((micros(now), folder.id)), b"")
            tr.set(FOLDER_NAMES.pack((folder.name, folder.id)), b"")
            made.folders[entry.id] = folder
        names: dict[tuple[str, str], int] = {}  # (folder, original name) -> files so named
        chunk_chars = self.file_settings.chunk_chars
        for entry in file.files:
            folder = made.folders[entry.source_id]
            given = entry.original_file_name or (entry.file_name or "").rsplit("/", 1)[-1]
            original = clean_name(given) or "file.txt"
            kind = stored_kind(entry.file_type, original) or KINDS[".txt"]
            count = names.get((folder.id, original), 0)
            names[(folder.id, original)] = count + 1
            unique = f"{folder.name}/{original}"
            if count:
                dot = original.rfind(".")
                base, ext = (original[:dot], original[dot:]) if dot > 0 else (original, "")
                unique = f"{folder.name}/{base}_({count}){ext}"
            text = entry.content or ""
            encoded = text.encode()
            reason = None
            if not text:
                reason = NO_CONTENT
            elif len(encoded) > MAX_TEXT_BYTES:
                reason = (f"the file's text takes {len(encoded)} bytes; at most "
                          f"{MAX_TEXT_BYTES} are kept")  # fmt: skip
            record = FileRecord(
                id=self.env.new_id("file"),
                folder_id=folder.id,
                file_name=unique,
                original_file_name=original,
                file_type=kind.media_type,
                file_size=entry.file_size if entry.file_size is not None else len(encoded),
                # Parsed already: the worker goes on from the chunks, as after its parse.
                processing_status="error" if reason else "embedding",
                error_message=reason,
                total_chunks=None if reason else len(split_text(text, chunk_chars)),
                chunks_embedded=None if reason else 0,
                created_at=now,
                updated_at=now,
            )
            write_file(tr, record)
            tr.set(FOLDER_FILES.pack((folder.id, micros(now), record.id)), b"")
            tr.set(FILE_NAMES.pack((folder.id, original, record.id)), b"")
            if reason is None:
                set_blob(tr, keys.FILE_TEXT.pack((record.id,)), encoded)
                tr.set(keys.FILE_QUEUE.pack((record.id,)), b"")
                made.texts[entry.id] = text
            made.files[entry.id] = record
        return made

    def _attach_imported(
        self, tr: Transaction, agent: Agent, entry: AgentSchema, made: ImportedFolders,
        now: float,
    ) -> None:  # fmt: skip
        """A new agent of the file attached to its folders, holding its files as the file
        says (the agent record already has the file tools: with_file_tools)."""
        # Its `source_ids`, and the folders of the files it holds (here an agent holds files
        # only of folders attached to it).
        folder_ids = [made.folders[s].id for s in entry.source_ids or []]
        folder_ids += [made.files[h.file_id].folder_id for h in entry.files_agents]
        for k, folder_id in enumerate(dict.fromkeys(folder_ids)):
            # One microsecond apart: the agent's folders keep the file's order.
            tr.set(AGENT_FOLDERS.pack((agent.id, folder_id)), keys.pack((micros(now) + k,)))
            tr.set(FOLDER_AGENTS.pack((folder_id, agent.id)), b"")
        max_open, chars = limits_of(agent)
        held: dict[str, FileAgentSchema] = {}
        for holding in entry.files_agents:
            if made.files[holding.file_id].processing_status != "error":
                held.setdefault(holding.file_id, holding)  # a file held once
        # The most recently used stay open within the agent's limit, as opening more does.
        opened = sorted((h for h in held.values() if h.is_open),
                        key=lambda h: parse_file_time(h.last_accessed_at, now),
                        reverse=True)[:max_open]  # fmt: skip
        open_ids = {h.file_id for h in opened}
        for file_local_id, holding in held.items():
            record = made.files[file_local_id]
            is_open = file_local_id in open_ids
            view, start, end = None, None, None
            if is_open:
                view, start, end = _view(holding, record, made.texts[file_local_id])
                view = truncate_view(view, chars)
            record_held = FileAgent(
                id=self.env.new_id("file_agent"), agent_id=agent.id, file_id=record.id,
                folder_id=record.folder_id, file_name=record.file_name, is_open=is_open,
                view=view, start_line=start, end_line=end,
                last_accessed=parse_file_time(holding.last_accessed_at, now), created_at=now,
            )  # fmt: skip
            set_blob(tr, keys.FILE_AGENTS.pack((agent.id, record.id)),
                     convert.encode_record(record_held))  # fmt: skip
            tr.set(FILE_HOLDERS.pack((record.id, agent.id)), b"")


def _view(
    holding: FileAgentSchema, record: FileRecord, text: str
) -> tuple[str, int | None, int | None]:
    """What the agent sees of an open file, and the lines of it in view (1-based, end
    exclusive): the window the file names by its lines, else the view it carries (Letta's
    exports name no lines), else the whole file from the top."""
    kind = kind_for(record.file_type, record.original_file_name) or KINDS[".txt"]
    lines = split_lines(text, kind.strategy)
    start, end = holding.start_line, holding.end_line
    if start is not None and start >= 1:
        try:
            return window(lines, start - 1, end, name=record.file_name), start, end
        except WindowError:
            pass  # a window past this text: the whole view instead
    elif holding.visible_content:
        return holding.visible_content, None, None
    return window(lines, name=record.file_name), None, None
