"""An agent's folders and files: attach, detach, open, close, and the file tools.

Attaching a folder is its links both ways, the file tools (when the agent lacks them)
and one `FileAgent` record per processed file of the folder, the most recent of them
open up to the agent's `max_files_open` (files processed later are added by the worker,
service/file_worker.py). Detaching clears the folder's files from the agent, and the
file tools with the last folder, as Letta does. What to close and what window of a file
to show are decided by kelpie_trio/files/ (sans-IO); this module reads and writes.

An agent's folders and open files appear in its context after its memory blocks
(`directories_in`, read with the agent's view each step).
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.errors import Invalid, NotFound
from kelpie_trio.files import tools as file_tools
from kelpie_trio.files.kinds import KINDS, kind_for
from kelpie_trio.files.lines import WindowError, split_lines, truncate_view, window
from kelpie_trio.models import convert
from kelpie_trio.models.agents import Agent
from kelpie_trio.models.folders import FileAgent, FileRecord, Folder
from kelpie_trio.models.passages import Passage, SearchQuery
from kelpie_trio.search import archival_search
from kelpie_trio.service.common import MAX_PAGE, Page, micros, read_record
from kelpie_trio.service.folders import (
    AGENT_FOLDERS,
    FILE_HOLDERS,
    FOLDER_AGENTS,
    FOLDER_FILES,
    FolderCases,
    read_file,
    read_folder,
)
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import clear_blob, get_blob, set_blob
from kelpie_trio.tools.base import base_tool_id

__all__ = ["FolderAgentCases", "file_lines", "limits_of"]

FILE_TOOL_IDS = tuple(base_tool_id(name) for name in file_tools.FILE_TOOLS)


def limits_of(agent: Agent) -> tuple[int, int]:
    """(max files open, characters shown per file) for the agent: its own settings, else
    Letta's defaults for its model's context window."""
    max_open, chars = file_tools.file_defaults((agent.llm_config or {}).get("context_window"))
    return agent.max_files_open or max_open, agent.per_file_view_window_char_limit or chars


async def file_lines(tr: Transaction, record: FileRecord) -> list[str]:
    """The file's lines as an agent counts them ([] before it is parsed)."""
    raw = await get_blob(tr, keys.FILE_TEXT.pack((record.id,)))
    if raw is None:
        return []
    kind = kind_for(record.file_type, record.original_file_name) or KINDS[".txt"]
    return split_lines(raw.decode(), kind.strategy)


def _state(record: FileAgent) -> file_tools.FileState:
    return file_tools.FileState(
        file_id=record.file_id, file_name=record.file_name, folder_id=record.folder_id,
        is_open=record.is_open, view=record.view, start_line=record.start_line,
        end_line=record.end_line, last_accessed=record.last_accessed,
    )  # fmt: skip


def _write_holding(tr: Transaction, record: FileAgent) -> None:
    set_blob(tr, keys.FILE_AGENTS.pack((record.agent_id, record.file_id)),
             convert.encode_record(record))  # fmt: skip
    tr.set(FILE_HOLDERS.pack((record.file_id, record.agent_id)), b"")


def _closed(record: FileAgent) -> FileAgent:
    return attrs.evolve(record, is_open=False, view=None, start_line=None, end_line=None)


def prefetch_attached_folders(tr: Transaction, agent_id: str) -> None:
    tr.prefetch_prefix(AGENT_FOLDERS.pack((agent_id,)))


async def attached_folder_ids(tr: Transaction, agent_id: str) -> list[str]:
    rows = await tr.get_prefix(AGENT_FOLDERS.pack((agent_id,)))
    found = [(keys.unpack(v)[0], AGENT_FOLDERS.unpack(k)[1]) for k, v in rows]
    return [folder_id for _, folder_id in sorted(found)]


async def attached_folders(tr: Transaction, agent_id: str) -> list[Folder]:
    """The folders attached to the agent, in the order they were attached."""
    found = []
    for folder_id in await attached_folder_ids(tr, agent_id):
        folder = await read_record(tr, keys.FOLDERS.pack((folder_id,)), Folder)
        if folder is not None:
            found.append(folder)
    return found


async def holdings(tr: Transaction, agent_id: str) -> list[FileAgent]:
    rows = await tr.get_prefix(keys.FILE_AGENTS.pack((agent_id,)))
    parts: dict[str, list[bytes]] = {}
    for key, value in rows:
        parts.setdefault(keys.FILE_AGENTS.unpack(key)[1], []).append(value)
    found = [convert.decode_record(b"".join(v), FileAgent) for v in parts.values()]
    return sorted(found, key=lambda r: (micros(r.created_at), r.id))


async def insert_files(
    tr: Transaction, agent: Agent, records: list[FileRecord], now: float, new_id: Any
) -> list[str]:
    """Processed files arriving in the agent's context at once (a folder attached, a file
    done): each held, the arrivals open first within the limit. The names closed."""
    if not records:
        return []
    max_open, chars = limits_of(agent)
    held = {r.file_id: r for r in await holdings(tr, agent.id)}
    states = [_state(r) for r in held.values()]
    opened, closed = file_tools.plan_attach(states, [r.file_name for r in records], max_open)
    for record in records:
        is_open = record.file_name in opened
        view = None
        if is_open:
            lines = await file_lines(tr, record)
            view = truncate_view(window(lines, name=record.file_name), chars)
        old = held.get(record.id)
        _write_holding(tr, FileAgent(
            id=old.id if old else new_id("file_agent"), agent_id=agent.id, file_id=record.id,
            folder_id=record.folder_id, file_name=record.file_name, is_open=is_open, view=view,
            last_accessed=now, created_at=old.created_at if old else now,
        ))  # fmt: skip
    for other in held.values():
        if other.file_name in closed:
            _write_holding(tr, _closed(other))
    return closed


async def directories_in(tr: Transaction, agent: Agent) -> str | None:
    """The agent's folders and files as its context shows them; None without folders."""
    folder_ids = await attached_folder_ids(tr, agent.id)
    if not folder_ids:
        return None
    folders = []
    for folder_id in folder_ids:
        folder = await read_record(tr, keys.FOLDERS.pack((folder_id,)), Folder)
        if folder is not None:
            folders.append(file_tools.FolderInfo(folder.id, folder.name, folder.description,
                                                 folder.instructions))  # fmt: skip
    max_open, chars = limits_of(agent)
    states = [_state(r) for r in await holdings(tr, agent.id)]
    return file_tools.render_directories(folders, states, max_open, chars)


class FolderAgentCases(FolderCases):
    async def _agent_for_files(self, tr: Transaction, agent_id: str) -> Agent:
        agent = await read_record(tr, keys.AGENTS.pack((agent_id,)), Agent)
        if agent is None:
            raise NotFound("Agent", agent_id)
        return agent

    def _set_file_tools(self, tr: Transaction, agent: Agent, wanted: bool) -> Agent:
        if wanted:
            ids = list(dict.fromkeys([*agent.tool_ids, *FILE_TOOL_IDS]))
        else:
            ids = [t for t in agent.tool_ids if t not in FILE_TOOL_IDS]
        if ids == agent.tool_ids:
            return agent
        changed = attrs.evolve(agent, tool_ids=ids, updated_at=self.env.now())
        self._write_agent(tr, changed)  # type: ignore[attr-defined]
        self._link(tr, changed, agent)  # type: ignore[attr-defined]
        return changed

    async def attach_folder(self, agent_id: str, folder_id: str, attach: bool) -> None:
        """Attach (or detach) a folder; doing it twice is the same as once."""

        async def change(tr: Transaction) -> None:
            agent = await self._agent_for_files(tr, agent_id)
            if attach:
                await self.attach_folder_in(tr, agent, folder_id)
            else:
                await read_folder(tr, folder_id)
                await self._detach_folder_in(tr, agent, folder_id)

        await self.store.transact(change)

    async def attach_folder_in(self, tr: Transaction, agent: Agent, folder_id: str) -> Agent:
        """Within a caller's transaction: the links both ways, the file tools, the folder's
        processed files (the newest open). The agent as it is now."""
        await read_folder(tr, folder_id)
        now = self.env.now()
        link = AGENT_FOLDERS.pack((agent.id, folder_id))
        if await tr.get(link) is not None:
            return agent
        tr.set(link, keys.pack((micros(now),)))
        tr.set(FOLDER_AGENTS.pack((folder_id, agent.id)), b"")
        agent = self._set_file_tools(tr, agent, True)
        done = []
        for key, _ in await tr.get_prefix(FOLDER_FILES.pack((folder_id,))):
            record = await read_file(tr, FOLDER_FILES.unpack(key)[2])
            if record is not None and record.processing_status == "completed":
                done.append(record)
        done.reverse()  # the newest first: they are the ones left open
        await insert_files(tr, agent, done, now, self.env.new_id)
        return agent

    async def _detach_folder_in(self, tr: Transaction, agent: Agent, folder_id: str) -> Agent:
        tr.clear(AGENT_FOLDERS.pack((agent.id, folder_id)))
        tr.clear(FOLDER_AGENTS.pack((folder_id, agent.id)))
        for record in await holdings(tr, agent.id):
            if record.folder_id == folder_id:
                clear_blob(tr, keys.FILE_AGENTS.pack((agent.id, record.file_id)))
                tr.clear(FILE_HOLDERS.pack((record.file_id, agent.id)))
        if not await attached_folder_ids(tr, agent.id):
            return self._set_file_tools(tr, agent, False)
        return agent

    async def set_agent_folders(
        self, tr: Transaction, agent: Agent, folder_ids: list[str]
    ) -> Agent:
        """Within a caller's transaction: the agent's folders become exactly `folder_ids`
        (Letta's `folder_ids` on an agent update); those it keeps stay as they are (their
        files' open state too). The agent as it is now; an unknown folder is a 404."""
        wanted = list(dict.fromkeys(folder_ids))
        for folder_id in wanted:
            await read_folder(tr, folder_id)
        for folder_id in await attached_folder_ids(tr, agent.id):
            if folder_id not in wanted:
                agent = await self._detach_folder_in(tr, agent, folder_id)
        for folder_id in wanted:
            agent = await self.attach_folder_in(tr, agent, folder_id)
        return agent

    async def detach_folder_everywhere(self, tr: Transaction, folder_id: str) -> None:
        for key, _ in await tr.get_prefix(FOLDER_AGENTS.pack((folder_id,))):
            agent = await read_record(tr, keys.AGENTS.pack((FOLDER_AGENTS.unpack(key)[1],)),
                                      Agent)  # fmt: skip
            if agent is not None:
                await self._detach_folder_in(tr, agent, folder_id)
        tr.clear_range(*keys.prefix_range(FOLDER_AGENTS.pack((folder_id,))))

    async def forget_agent_folders(self, tr: Transaction, agent_id: str) -> None:
        """An agent deleted: its links to folders and its hold of their files."""
        for folder_id in await attached_folder_ids(tr, agent_id):
            tr.clear(FOLDER_AGENTS.pack((folder_id, agent_id)))
        tr.clear_range(*keys.prefix_range(AGENT_FOLDERS.pack((agent_id,))))
        for record in await holdings(tr, agent_id):
            tr.clear(FILE_HOLDERS.pack((record.file_id, agent_id)))
        tr.clear_range(*keys.prefix_range(keys.FILE_AGENTS.pack((agent_id,))))

    async def folders_of_agent(self, agent_id: str, page: Page) -> list[Folder]:
        from kelpie_trio.service.common import window as page_window

        async def listing(tr: Transaction) -> dict[str, Folder]:
            await self._agent_for_files(tr, agent_id)
            found = {}
            for folder_id in await attached_folder_ids(tr, agent_id):
                folder = await read_record(tr, keys.FOLDERS.pack((folder_id,)), Folder)
                if folder is not None:
                    found[folder_id] = folder
            return found

        found = await self.store.transact(listing)
        return [found[i] for i in page_window(list(found), page)]

    async def agent_files(
        self, agent_id: str, page: Page, is_open: bool | None = None
    ) -> tuple[list[tuple[FileAgent, str]], bool]:
        """The agent's files (each with its folder's name), a page of them, and whether
        more follow."""

        async def listing(tr: Transaction) -> tuple[list[tuple[FileAgent, str]], bool]:
            await self._agent_for_files(tr, agent_id)
            records = [r for r in await holdings(tr, agent_id)
                       if is_open is None or r.is_open == is_open]  # fmt: skip
            if page.order == "desc":
                records.reverse()
            ids = [r.id for r in records]
            if page.after is not None:
                records = records[ids.index(page.after) + 1 :] if page.after in ids else []
            if page.before is not None:
                cut = [r.id for r in records]
                records = records[: cut.index(page.before)] if page.before in cut else []
            limit = min(page.limit or MAX_PAGE, MAX_PAGE)
            names: dict[str, str] = {}
            out = []
            for record in records[:limit]:
                if record.folder_id not in names:
                    folder = await read_record(tr, keys.FOLDERS.pack((record.folder_id,)), Folder)
                    names[record.folder_id] = folder.name if folder else ""
                out.append((record, names[record.folder_id]))
            return out, len(records) > limit

        return await self.store.transact(listing)

    async def _held_file(self, tr: Transaction, agent_id: str, file_id: str) -> FileAgent:
        raw = await get_blob(tr, keys.FILE_AGENTS.pack((agent_id, file_id)))
        if raw is None:
            raise NotFound("File", file_id)
        return convert.decode_record(raw, FileAgent)

    async def open_file(self, agent_id: str, file_id: str) -> list[str]:
        """Open a whole file for the agent (PATCH .../files/{id}/open); the names closed to
        make room."""
        now = self.env.now()

        async def change(tr: Transaction) -> list[str]:
            agent = await self._agent_for_files(tr, agent_id)
            held = await self._held_file(tr, agent_id, file_id)
            record = await read_file(tr, file_id)
            if record is None:
                raise NotFound("File", file_id)
            return await self._open_file_in(tr, agent, held, record, None, None, now)

        return await self.store.transact(change)

    async def _open_file_in(
        self, tr: Transaction, agent: Agent, held: FileAgent, record: FileRecord,
        start: int | None, end: int | None, now: float,
    ) -> list[str]:  # fmt: skip
        max_open, chars = limits_of(agent)
        lines = await file_lines(tr, record)
        view = truncate_view(window(lines, start, end, name=held.file_name), chars)
        states = [_state(r) for r in await holdings(tr, agent.id)]
        closing = file_tools.plan_open(states, held.file_name, max_open)
        for state in states:
            if state.file_name in closing:
                _write_holding(tr, _closed(await self._held_file(tr, agent.id, state.file_id)))
        _write_holding(tr, attrs.evolve(
            held, is_open=True, view=view, last_accessed=now,
            start_line=None if start is None else start + 1, end_line=end,
        ))  # fmt: skip
        return closing

    async def close_file(self, agent_id: str, file_id: str) -> None:
        async def change(tr: Transaction) -> None:
            await self._agent_for_files(tr, agent_id)
            _write_holding(tr, _closed(await self._held_file(tr, agent_id, file_id)))

        await self.store.transact(change)

    async def close_all_files(self, agent_id: str, keep: tuple[str, ...] = ()) -> list[str]:
        async def change(tr: Transaction) -> list[str]:
            await self._agent_for_files(tr, agent_id)
            closed = []
            for record in await holdings(tr, agent_id):
                if record.is_open and record.file_name not in keep:
                    _write_holding(tr, _closed(record))
                    closed.append(record.file_name)
            return closed

        return await self.store.transact(change)

    # -- the file tools, as an agent's turn runs them ---------------------------------

    async def run_file_tool(self, agent_id: str, name: str, args: dict[str, Any]) -> str:
        """open_files, grep_files or semantic_search_files for the agent: the tool's text;
        file_tools.ToolError when the call is refused (a tool error for the model)."""
        if name == "open_files":
            return await self._open_files_tool(agent_id, args)
        if name == "grep_files":
            return await self._grep_tool(agent_id, args)
        if name == "semantic_search_files":
            return await self._semantic_tool(agent_id, args)
        raise file_tools.ToolError(f"no file tool named {name!r}")

    async def _open_files_tool(self, agent_id: str, args: dict[str, Any]) -> str:
        now = self.env.now()

        async def change(tr: Transaction) -> str:
            agent = await self._agent_for_files(tr, agent_id)
            max_open, _ = limits_of(agent)
            requests, close_others = file_tools.open_requests(args, max_open)
            by_name = {r.file_name: r for r in await holdings(tr, agent_id)}
            for request in requests:
                if request.file_name not in by_name:
                    raise file_tools.ToolError(
                        f"{request.file_name} not attached - did you get the filename correct? "
                        f"Currently you have the following files attached: {sorted(by_name)}"
                    )
            closed_first: list[str] = []
            if close_others:
                keep = {r.file_name for r in requests}
                for held in by_name.values():
                    if held.is_open and held.file_name not in keep:
                        _write_holding(tr, _closed(held))
                        closed_first.append(held.file_name)
            evicted: list[str] = []
            described = []
            for request in requests:
                held = await self._held_file(tr, agent_id, by_name[request.file_name].file_id)
                start_line = None if request.start is None else request.start + 1
                before = file_tools.previous_range(_state(held), start_line, request.end)
                described.append(request.describe() + before)
                record = await read_file(tr, held.file_id)
                if record is None:
                    raise file_tools.ToolError(f"{request.file_name} no longer exists")
                try:
                    evicted += await self._open_file_in(tr, agent, held, record, request.start,
                                                   request.end, now)  # fmt: skip
                except WindowError as error:
                    raise file_tools.ToolError(str(error)) from None
            text = (f"* Opened {described[0]}" if len(described) == 1 else
                    f"* Opened {len(described)} files: {', '.join(described)}")  # fmt: skip
            if closed_first:
                text += (f"\nNote: Closed {len(closed_first)} file(s) due to "
                         f"close_all_others=True: {', '.join(closed_first)}")  # fmt: skip
            if evicted:
                text += (f"\nNote: Closed {len(evicted)} least recently used file(s) due to "
                         f"open file limit: {', '.join(evicted)}")  # fmt: skip
            return text

        return await self.store.transact(change)

    async def _touch_files(self, agent_id: str, names: list[str]) -> None:
        """Refresh the last use of the files a tool found something in (their LRU place)."""
        if not names:
            return
        now = self.env.now()

        async def touch(tr: Transaction) -> None:
            for record in await holdings(tr, agent_id):
                if record.file_name in names:
                    _write_holding(tr, attrs.evolve(record, last_accessed=now))

        await self.store.transact(touch)

    async def _grep_tool(self, agent_id: str, args: dict[str, Any]) -> str:
        pattern = args.get("pattern")
        if not isinstance(pattern, str):
            raise file_tools.ToolError("pattern must be a string")

        async def read(tr: Transaction) -> list[tuple[str, list[str]]]:
            await self._agent_for_files(tr, agent_id)
            files = []
            for held in await holdings(tr, agent_id):
                record = await read_file(tr, held.file_id)
                if record is not None:
                    files.append((held.file_name, await file_lines(tr, record)))
            return files

        files = await self.store.transact(read)
        include = args.get("include")
        text, matched = file_tools.grep(
            files, pattern, include if isinstance(include, str) else None,
            args.get("context_lines", 1), args.get("offset"),
        )  # fmt: skip
        await self._touch_files(agent_id, matched)
        return text

    async def _semantic_tool(self, agent_id: str, args: dict[str, Any]) -> str:
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            raise file_tools.ToolError("Empty search query provided")
        limit = args.get("limit", 5)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise file_tools.ToolError("limit must be a positive integer")
        limit = min(limit, file_tools.SEMANTIC_MAX)
        owners = await self.store.transact(lambda tr: attached_folder_ids(tr, agent_id))
        if not owners:
            return "No files are currently attached to search"
        hits = await archival_search(self, owners, SearchQuery(query=query.strip(), top_k=limit))

        async def load(tr: Transaction) -> list[tuple[str, str, float]]:
            found = []
            for owner, passage_id, score in hits:
                passage = await read_record(tr, keys.PASSAGES.pack((owner, passage_id)), Passage)
                if passage is not None:
                    found.append((passage.file_name or "Unknown File", passage.text, score))
            return found

        found = await self.store.transact(load)
        await self._touch_files(agent_id, [name for name, _, _ in found])
        return file_tools.format_semantic(query.strip(), found)


def check_is_open(raw: str | None) -> bool | None:
    if raw is None:
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise Invalid.field(["query", "is_open"], "is_open must be true or false", "bool_parsing")
