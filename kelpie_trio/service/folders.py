"""Folders and their files: create, read, list, edit, delete; upload; which agents hold them.

A folder is a record at `FOLDERS(folder_id)` with a creation-order index and a name
index (names are unique, as Letta's are). An upload is one transaction: the file's
record (status `pending`), its bytes (chunked under `FILE_BYTES`, so every value stays
under the store's 100 kB) and an entry in `FILE_QUEUE`; the request returns at once and
a supervised worker of the node parses, chunks and indexes the file
(service/file_worker.py). A refused upload (too large, of a kind not served, an unknown
folder) writes nothing.

Deleting a file or a folder clears everything it left: the record, bytes, text, queue
entry, its chunks (passages of the folder, with an outbox entry so the index forgets
them) and its place in the agents that held it.
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.errors import Conflict, Invalid, NotFound, TooLarge
from kelpie_trio.files.kinds import kind_for, stored_kind, supported
from kelpie_trio.llm.catalog import UnknownModel
from kelpie_trio.models import convert
from kelpie_trio.models.folders import (
    CreateFolder,
    FileAgent,
    FileRecord,
    Folder,
    UpdateFolder,
)
from kelpie_trio.models.passages import Passage
from kelpie_trio.search import outbox
from kelpie_trio.service.common import Page, ServiceBase, micros, page_ids, read_record
from kelpie_trio.service.limits import check_record
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import clear_blob, set_blob

__all__ = [
    "AGENT_FOLDERS",
    "FILE_HOLDERS",
    "FOLDER_AGENTS",
    "FOLDER_FILES",
    "FOLDER_INDEX",
    "FolderCases",
    "UnsupportedType",
    "clean_name",
    "clear_file",
    "read_file",
    "read_folder",
]

FOLDER_INDEX = keys.ROOT["index"]["folders"]  # (created_us, folder_id) -> b""
FOLDER_NAMES = keys.ROOT["index"]["folder_names"]  # (name, folder_id) -> b""
FOLDER_FILES = keys.ROOT["index"]["folder_files"]  # (folder_id, created_us, file_id) -> b""
FILE_NAMES = keys.ROOT["index"]["file_names"]  # (folder_id, original name, file_id) -> b""
AGENT_FOLDERS = keys.ROOT["index"]["agent_folders"]  # (agent_id, folder_id) -> (attached_us,)
FOLDER_AGENTS = keys.ROOT["index"]["folder_agents"]  # (folder_id, agent_id) -> b""
FILE_HOLDERS = keys.ROOT["index"]["file_agents"]  # (file_id, agent_id) -> b""

MAX_FILENAME = 255
DUPLICATE_HANDLING = ("skip", "error", "suffix", "replace")


class UnsupportedType(TooLarge):
    """An upload of a kind no parser here reads (Letta answers 415)."""

    status = 415


async def read_folder(tr: Transaction, folder_id: str) -> Folder:
    folder = await read_record(tr, keys.FOLDERS.pack((folder_id,)), Folder)
    if folder is None:
        raise NotFound("Folder", folder_id)
    return folder


async def read_file(tr: Transaction, file_id: str) -> FileRecord | None:
    return await read_record(tr, keys.FILES.pack((file_id,)), FileRecord)


def write_file(tr: Transaction, record: FileRecord) -> None:
    set_blob(tr, keys.FILES.pack((record.id,)), convert.encode_record(record))


def chunk_passage_id(file_id: str, index: int) -> str:
    """The id of a file's chunk `index`: the same whoever writes it, however often, so a
    chunk written again after a crash replaces itself and is indexed once."""
    import uuid

    name = f"{file_id}/{index}"
    raw = uuid.uuid5(uuid.NAMESPACE_URL, name).bytes
    return f"passage-{uuid.UUID(bytes=raw, version=4)}"


async def clear_chunks(tr: Transaction, record: FileRecord) -> list[str]:
    """Clear the chunks the file has written (their ids follow from its id); the ids."""
    from kelpie_trio.service.passages import clear_passage

    ids = []
    for index in range(record.chunks_embedded or 0):
        passage_id = chunk_passage_id(record.id, index)
        passage = await read_record(tr, keys.PASSAGES.pack((record.folder_id, passage_id)),
                                    Passage)  # fmt: skip
        if passage is not None:
            clear_passage(tr, passage)
            ids.append(passage_id)
    return ids


async def clear_file(tr: Transaction, record: FileRecord) -> None:
    """Everything of one file: record, bytes, text, queue entry, chunks, name and place in
    its folder, and the agents' hold of it."""
    clear_blob(tr, keys.FILES.pack((record.id,)))
    clear_blob(tr, keys.FILE_BYTES.pack((record.id,)))
    clear_blob(tr, keys.FILE_TEXT.pack((record.id,)))
    tr.clear(keys.FILE_QUEUE.pack((record.id,)))
    tr.clear(FOLDER_FILES.pack((record.folder_id, micros(record.created_at), record.id)))
    tr.clear(FILE_NAMES.pack((record.folder_id, record.original_file_name, record.id)))
    gone = await clear_chunks(tr, record)
    if gone:
        await outbox.record(tr, record.folder_id, passages=gone)
    for key, _ in await tr.get_prefix(FILE_HOLDERS.pack((record.id,))):
        agent_id = FILE_HOLDERS.unpack(key)[1]
        clear_blob(tr, keys.FILE_AGENTS.pack((agent_id, record.id)))
    tr.clear_range(*keys.prefix_range(FILE_HOLDERS.pack((record.id,))))


def clean_name(name: str) -> str:
    """The upload's name without any path (a name is metadata, never a path here)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip().replace("\x00", "")
    return name[:MAX_FILENAME]


class FolderCases(ServiceBase):
    # -- folders -----------------------------------------------------------------------

    def _write_folder(self, tr: Transaction, folder: Folder) -> None:
        set_blob(tr, keys.FOLDERS.pack((folder.id,)), check_record(folder, "folder"))

    async def _name_free(self, tr: Transaction, name: str, folder_id: str | None) -> None:
        for key, _ in await tr.get_prefix(FOLDER_NAMES.pack((name,))):
            if FOLDER_NAMES.unpack(key)[1] != folder_id:
                raise Conflict(f"a folder named {name!r} already exists")

    def _embedding(self, create: CreateFolder) -> dict[str, Any] | None:
        if create.embedding is not None:
            try:
                return self.catalog.embedding_config_for(create.embedding)
            except UnknownModel as error:
                raise Invalid.field(["body", "embedding"], str(error)) from None
        return create.embedding_config

    async def create_folder(self, body: Any) -> Folder:
        create = convert.structure_api(body, CreateFolder)
        if not create.name.strip():
            raise Invalid.field(["body", "name"], "name must not be empty")
        if "/" in create.name:
            raise Invalid.field(["body", "name"], "a folder's name cannot contain '/'")
        config = self._embedding(create)
        now = self.env.now()
        folder = Folder(
            id=self.env.new_id("source"),
            name=create.name,
            description=create.description,
            instructions=create.instructions,
            metadata=create.metadata or {},
            embedding_config=config,
            embedding_chunk_size=create.embedding_chunk_size,
            created_at=now,
            updated_at=now,
        )

        async def write(tr: Transaction) -> Folder:
            await self._name_free(tr, folder.name, None)
            self._write_folder(tr, folder)
            tr.set(FOLDER_INDEX.pack((micros(now), folder.id)), b"")
            tr.set(FOLDER_NAMES.pack((folder.name, folder.id)), b"")
            return folder

        return await self.store.transact(write)

    async def get_folder(self, folder_id: str) -> Folder:
        return await self.store.transact(lambda tr: read_folder(tr, folder_id))

    async def update_folder(self, folder_id: str, body: Any) -> Folder:
        update = convert.structure_api(body, UpdateFolder)
        if update.name is not None and (not update.name.strip() or "/" in update.name):
            raise Invalid.field(["body", "name"], "a folder's name must be non-empty, no '/'")
        now = self.env.now()

        async def change(tr: Transaction) -> Folder:
            folder = await read_folder(tr, folder_id)
            changes = {k: v for k, v in attrs.asdict(update).items() if v is not None}
            if "name" in changes and changes["name"] != folder.name:
                await self._name_free(tr, changes["name"], folder_id)
                tr.clear(FOLDER_NAMES.pack((folder.name, folder_id)))
                tr.set(FOLDER_NAMES.pack((changes["name"], folder_id)), b"")
            changed = attrs.evolve(folder, **changes, updated_at=now)
            self._write_folder(tr, changed)
            return changed

        return await self.store.transact(change)

    async def list_folders(self, page: Page, *, name: str | None = None) -> list[Folder]:
        async def listing(tr: Transaction) -> list[Folder]:
            async def position(ident: str) -> tuple | None:
                folder = await read_record(tr, keys.FOLDERS.pack((ident,)), Folder)
                return None if folder is None else (micros(folder.created_at), folder.id)

            keep = None
            if name is not None:
                named = {FOLDER_NAMES.unpack(k)[1] for k, _ in
                         await tr.get_prefix(FOLDER_NAMES.pack((name,)))}  # fmt: skip

                async def keep(ident: str) -> bool:
                    return ident in named

            ids = await page_ids(tr, FOLDER_INDEX, page, position, keep)
            found = [await read_record(tr, keys.FOLDERS.pack((i,)), Folder) for i in ids]
            return [f for f in found if f is not None]

        return await self.store.transact(listing)

    async def count_folders(self) -> int:
        return await self.store.transact(lambda tr: _count(tr, FOLDER_INDEX))

    async def folder_id_by_name(self, name: str) -> str:
        async def find(tr: Transaction) -> str:
            rows = await tr.get_prefix(FOLDER_NAMES.pack((name,)), limit=1)
            if not rows:
                raise NotFound("Folder", name)
            return FOLDER_NAMES.unpack(rows[0][0])[1]

        return await self.store.transact(find)

    async def folders_metadata(self, detailed: bool) -> dict[str, Any]:
        """Letta's OrganizationSourcesStats: how many folders, files and bytes there are;
        per folder (and per file, when `detailed`) as well."""

        async def read(tr: Transaction) -> dict[str, Any]:
            sources = []
            total_files = total_size = 0
            index = await tr.get_range(FOLDER_INDEX.range().start, FOLDER_INDEX.range().stop)
            for key, _ in index:
                folder = await read_record(tr, keys.FOLDERS.pack((FOLDER_INDEX.unpack(key)[1],)),
                                           Folder)  # fmt: skip
                if folder is None:
                    continue
                files = []
                for row, _ in await tr.get_prefix(FOLDER_FILES.pack((folder.id,))):
                    record = await read_file(tr, FOLDER_FILES.unpack(row)[2])
                    if record is not None:
                        files.append(record)
                size = sum(f.file_size for f in files)
                total_files += len(files)
                total_size += size
                stats: dict[str, Any] = {"source_id": folder.id, "source_name": folder.name,
                                         "file_count": len(files), "total_size": size}  # fmt: skip
                stats["files"] = [
                    {"file_id": f.id, "file_name": f.file_name, "file_size": f.file_size}
                    for f in files
                ] if detailed else []  # fmt: skip
                sources.append(stats)
            return {"total_sources": len(sources), "total_files": total_files,
                    "total_size": total_size, "sources": sources}  # fmt: skip

        return await self.store.transact(read)

    async def folder_passages(self, folder_id: str, page: Page) -> list[Passage]:
        """The chunks of a folder's files (GET /v1/folders/{id}/passages), by creation."""
        from kelpie_trio.service.passages import PASSAGE_INDEX

        async def listing(tr: Transaction) -> list[Passage]:
            await read_folder(tr, folder_id)
            index = PASSAGE_INDEX[folder_id]

            async def position(ident: str) -> tuple | None:
                passage = await read_record(tr, keys.PASSAGES.pack((folder_id, ident)), Passage)
                return None if passage is None else (micros(passage.created_at), passage.id)

            ids = await page_ids(tr, index, page, position)
            found = [await read_record(tr, keys.PASSAGES.pack((folder_id, i)), Passage)
                     for i in ids]  # fmt: skip
            return [p for p in found if p is not None]

        return await self.store.transact(listing)

    async def delete_folder(self, folder_id: str) -> None:
        """The folder, its files, their chunks and their place in agents, in one
        transaction."""

        async def delete(tr: Transaction) -> None:
            folder = await read_folder(tr, folder_id)
            await self.detach_folder_everywhere(tr, folder_id)  # type: ignore[attr-defined]
            for key, _ in await tr.get_prefix(FOLDER_FILES.pack((folder_id,))):
                record = await read_file(tr, FOLDER_FILES.unpack(key)[2])
                if record is not None:
                    await clear_file(tr, record)
            clear_blob(tr, keys.FOLDERS.pack((folder_id,)))
            tr.clear(FOLDER_INDEX.pack((micros(folder.created_at), folder_id)))
            tr.clear(FOLDER_NAMES.pack((folder.name, folder_id)))
            for subspace in (keys.PASSAGES, keys.ROOT["index"]["passages"]):
                where = subspace.range((folder_id,))
                tr.clear_range(where.start, where.stop)
            await outbox.record(tr, folder_id, resync=True)  # the index forgets it

        await self.store.transact(delete)

    async def agents_of_folder(self, folder_id: str, page: Page) -> list[str]:
        async def listing(tr: Transaction) -> list[str]:
            await read_folder(tr, folder_id)
            rows = await tr.get_prefix(FOLDER_AGENTS.pack((folder_id,)))
            return [FOLDER_AGENTS.unpack(k)[1] for k, _ in rows]

        from kelpie_trio.service.common import window

        return window(await self.store.transact(listing), page)

    # -- files -------------------------------------------------------------------------

    async def upload_file(
        self,
        folder_id: str,
        file_name: str | None,
        content_type: str | None,
        data: bytes,
        *,
        name: str | None = None,
        duplicate_handling: str = "suffix",
    ) -> tuple[FileRecord, bool]:
        """Store an upload for the worker; (its record, whether it was skipped as a
        duplicate). Everything is checked before anything is written."""
        if duplicate_handling not in DUPLICATE_HANDLING:
            raise Invalid.field(["query", "duplicate_handling"],
                                f"expected one of {', '.join(DUPLICATE_HANDLING)}")  # fmt: skip
        original = clean_name(name or file_name or "")
        if not original:
            raise Invalid.field(["body", "file"], "the upload has no file name")
        kind = stored_kind(content_type, original)
        if kind_for(content_type, original) is None or kind is None:
            raise UnsupportedType(
                f"Unsupported file type: {content_type or 'unknown'} (filename: {original}). "
                f"Supported types: {supported()}."
            )
        limit = self.file_settings.max_upload_bytes
        if len(data) > limit:
            raise TooLarge(f"the file is {len(data)} bytes; an upload may have at most {limit}")
        if not data:
            raise Invalid.field(["body", "file"], "the file is empty")
        now = self.env.now()

        async def store(tr: Transaction) -> tuple[FileRecord, bool]:
            folder = await read_folder(tr, folder_id)
            same = await tr.get_prefix(FILE_NAMES.pack((folder_id, original)))
            unique = f"{folder.name}/{original}"
            if same:
                existing = await read_file(tr, FILE_NAMES.unpack(same[0][0])[2])
                if duplicate_handling == "error":
                    raise Conflict(f"File '{original}' already exists in folder '{folder.name}'")
                if duplicate_handling == "skip" and existing is not None:
                    return existing, True
                if duplicate_handling == "replace":
                    for key, _ in same:
                        old = await read_file(tr, FILE_NAMES.unpack(key)[2])
                        if old is not None:
                            await clear_file(tr, old)
                else:
                    dot = original.rfind(".")
                    base, ext = (original[:dot], original[dot:]) if dot > 0 else (original, "")
                    unique = f"{folder.name}/{base}_({len(same)}){ext}"
            record = FileRecord(
                id=self.env.new_id("file"),
                folder_id=folder_id,
                file_name=unique,
                original_file_name=original,
                file_type=kind.media_type,
                file_size=len(data),
                created_at=now,
                updated_at=now,
            )
            write_file(tr, record)
            set_blob(tr, keys.FILE_BYTES.pack((record.id,)), data)
            tr.set(keys.FILE_QUEUE.pack((record.id,)), b"")
            tr.set(FOLDER_FILES.pack((folder_id, micros(now), record.id)), b"")
            tr.set(FILE_NAMES.pack((folder_id, original, record.id)), b"")
            return record, False

        made = await self.store.transact(store)
        self.wake_file_worker()
        return made

    def wake_file_worker(self) -> None:
        wake = getattr(self, "_file_wake", None)
        if wake is not None:
            wake.set()

    async def list_files(self, folder_id: str, page: Page) -> list[FileRecord]:
        async def listing(tr: Transaction) -> list[FileRecord]:
            await read_folder(tr, folder_id)
            index = FOLDER_FILES[folder_id]

            async def position(ident: str) -> tuple | None:
                record = await read_file(tr, ident)
                if record is None or record.folder_id != folder_id:
                    return None
                return (micros(record.created_at), record.id)

            ids = await page_ids(tr, index, page, position)
            found = [await read_file(tr, i) for i in ids]
            return [f for f in found if f is not None]

        return await self.store.transact(listing)

    async def get_file(self, folder_id: str, file_id: str, *, content: bool = False
                       ) -> tuple[FileRecord, str | None]:  # fmt: skip
        from kelpie_trio.storage.chunks import get_blob

        async def read(tr: Transaction) -> tuple[FileRecord, str | None]:
            await read_folder(tr, folder_id)
            record = await read_file(tr, file_id)
            if record is None or record.folder_id != folder_id:
                raise NotFound("File", file_id)
            text = None
            if content:
                raw = await get_blob(tr, keys.FILE_TEXT.pack((file_id,)))
                text = None if raw is None else raw.decode()
            return record, text

        return await self.store.transact(read)

    async def delete_file(self, folder_id: str, file_id: str) -> None:
        async def delete(tr: Transaction) -> None:
            await read_folder(tr, folder_id)
            record = await read_file(tr, file_id)
            if record is None or record.folder_id != folder_id:
                raise NotFound("File", file_id)
            await clear_file(tr, record)

        await self.store.transact(delete)

    async def file_agent_records(self, tr: Transaction, agent_id: str) -> list[FileAgent]:
        from kelpie_trio.storage.chunks import get_blob

        rows = await tr.get_prefix(keys.FILE_AGENTS.pack((agent_id,)))
        file_ids = list(dict.fromkeys(keys.FILE_AGENTS.unpack(k)[1] for k, _ in rows))
        found = []
        for file_id in file_ids:
            raw = await get_blob(tr, keys.FILE_AGENTS.pack((agent_id, file_id)))
            if raw is not None:
                found.append(convert.decode_record(raw, FileAgent))
        return found


async def _count(tr: Transaction, index: keys.Subspace) -> int:
    rows = await tr.get_range(index.range().start, index.range().stop)
    return len(rows)
