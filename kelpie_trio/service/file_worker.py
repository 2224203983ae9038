"""The file worker: parses, chunks and indexes uploaded files, one supervised task per node.

A file goes `pending` -> `parsing` -> `embedding` -> `completed`, or `error` with the
reason. Work is found in `FILE_QUEUE` (written with the upload) and *claimed* in a
transaction: the file's record gets `claimed_until` (now + the lease) and its
`attempts` count goes up by one. That count is the claim's epoch: every later
transaction of the worker checks it is still the record's, so a worker that stalled
past its lease (or a node that died and came back) cannot write over the one that
took the file over. A claim past its time is a dead worker's: the next scan takes the
file over from where its record says it was (`parsing`: parse again; `embedding`: go on
from `chunks_embedded`). A file that used up `max_attempts` claims is marked `error`.

Chunks are passages of the folder with ids derived from (file, chunk number), written
in batches, each batch with the file's progress and the folder's outbox entries in
one transaction: a batch lands whole or not at all, and one written again (it cannot
be, but ids make it harmless) replaces itself: no chunk is ever indexed twice.
Vectors are the search layer's business: its indexer embeds the passages it indexes
when an embedding model is on, as for any passage (`embedding` here is the writing of
the chunks the index embeds).

Parsing is CPU work on untrusted bytes: the node runs it in a worker thread under a
time limit (`threaded_parser`); the simulator passes a parser that runs inline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from kelpie_trio.errors import ServiceError
from kelpie_trio.files.kinds import KINDS, FileKind, kind_for
from kelpie_trio.files.parse import ParseError, parse
from kelpie_trio.models.agents import Agent
from kelpie_trio.models.folders import DEFAULT_CHUNK_CHARS, FileRecord, Folder
from kelpie_trio.models.passages import Passage, split_text
from kelpie_trio.search import outbox
from kelpie_trio.service.common import read_record
from kelpie_trio.service.folders import (
    FILE_HOLDERS,
    FOLDER_AGENTS,
    chunk_passage_id,
    read_file,
    write_file,
)
from kelpie_trio.service.passages import write_passage
from kelpie_trio.storage import StoreError, keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import clear_blob, get_blob, set_blob

__all__ = ["FileSettings", "FileWorkerCases", "Parser", "inline_parser", "threaded_parser"]

log = logging.getLogger("kelpie_trio.files")

Parser = Callable[[bytes, FileKind], Awaitable[str]]

# A transaction holds at most 10 MB (FDB's limit, kept by every backend): an upload is one
# transaction, and so is the parsed text, so both stay well under it.
MAX_UPLOAD_CEILING = 8 * 1024 * 1024
MAX_TEXT_BYTES = 6 * 1024 * 1024


@attrs.frozen
class FileSettings:
    max_upload_bytes: int = 5 * 1024 * 1024  # KELPIE_MAX_UPLOAD_BYTES
    lease: float = 120.0  # a claim's life; every transaction of the worker renews it
    parse_timeout: float = 60.0  # KELPIE_PARSE_TIMEOUT: past it a file is an error
    batch: int = 32  # chunks written per transaction
    # Seconds between scans when idle. An upload here wakes the worker at once, so the poll
    # only finds other nodes' uploads and claims a crashed node left (which wait out
    # their 120 s lease anyway): an idle node looks twice a minute.
    poll: float = 30.0
    backoff: float = 1.0  # after a store error
    max_attempts: int = 5
    concurrency: int = 2  # files processed at once by one node
    chunk_chars: int = DEFAULT_CHUNK_CHARS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FileSettings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        raw = environ.get("KELPIE_MAX_UPLOAD_BYTES")
        if raw:
            try:
                size = int(raw)
            except ValueError:
                raise ValueError(f"KELPIE_MAX_UPLOAD_BYTES={raw!r} is not an integer") from None
            if not 1 <= size <= MAX_UPLOAD_CEILING:
                raise ValueError(
                    f"KELPIE_MAX_UPLOAD_BYTES must be between 1 and {MAX_UPLOAD_CEILING} (an "
                    "upload is stored in one transaction, which holds at most 10 MB)"
                )
            values["max_upload_bytes"] = size
        raw = environ.get("KELPIE_PARSE_TIMEOUT")
        if raw:
            try:
                values["parse_timeout"] = float(raw)
            except ValueError:
                raise ValueError(f"KELPIE_PARSE_TIMEOUT={raw!r} is not a number") from None
        return cls(**values)


async def inline_parser(data: bytes, kind: FileKind) -> str:
    """Parse on the calling task: for the simulator (no threads there)."""
    return parse(data, kind)


def threaded_parser(timeout: float) -> Parser:
    """Parse in a worker thread, abandoned (and the file an error) past `timeout`: a
    parser stuck on a hostile file never holds the worker up."""

    async def run(data: bytes, kind: FileKind) -> str:
        with trio.move_on_after(timeout):
            return await trio.to_thread.run_sync(parse, data, kind, abandon_on_cancel=True)
        raise ParseError(f"parsing took longer than {timeout:g} s: the file is refused")

    return run


class _Lost(Exception):
    """The claim is no longer ours (taken over, or the file deleted): stop quietly."""


class FileWorkerCases:
    store: Any
    env: Any
    file_settings: FileSettings = FileSettings()
    file_parser: Parser = staticmethod(inline_parser)  # type: ignore[assignment]

    async def process_files(
        self, settings: FileSettings | None = None, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Process queued files for ever: a round, then sleep `settings.poll` (on the
        injected clock) or until an upload on this node wakes it. A store that fails is
        tried again after `backoff`."""
        settings = settings or self.file_settings
        task_status.started()
        while True:
            self._file_wake = trio.Event()
            try:
                busy = await self.process_some_files(settings)
                delay = 0.0 if busy else settings.poll
            except (StoreError, ServiceError) as error:
                log.warning("file processing failed (tried again): %r", error)
                delay = settings.backoff
            except Exception:
                # A bug must not take the node down with it: the files in hand keep their
                # claims until the lease runs out, and `max_attempts` ends a file that
                # fails every time.
                log.exception("file processing failed unexpectedly (tried again)")
                delay = settings.backoff
            if delay > 0:
                # A poll ends on the node's next tick (env.Ticks); a backoff exactly.
                wake = (self.env.poll_time(delay) if delay == settings.poll
                        else trio.current_time() + delay)  # fmt: skip
                with trio.move_on_at(wake):
                    await self._file_wake.wait()

    async def process_some_files(self, settings: FileSettings) -> bool:
        """Claim up to `concurrency` files and process them; whether any was claimed."""
        claimed = await self.store.transact(self._claim_files(settings))
        if not claimed:
            return False
        async with trio.open_nursery() as nursery:
            for record in claimed:
                nursery.start_soon(self._process_file, record, settings)
        return True

    def _claim_files(self, settings: FileSettings) -> Callable[[Transaction], Awaitable[list]]:
        now = self.env.now()

        async def claim(tr: Transaction) -> list[FileRecord]:
            begin, end = keys.FILE_QUEUE.range().start, keys.FILE_QUEUE.range().stop
            rows = await tr.get_range(begin, end, limit=100)
            claimed: list[FileRecord] = []
            for key, _ in rows:
                (file_id,) = keys.FILE_QUEUE.unpack(key)
                record = await read_file(tr, file_id)
                if record is None or record.processing_status in ("completed", "error"):
                    tr.clear(key)
                    continue
                if record.claimed_until is not None and record.claimed_until > now:
                    continue  # another worker is on it
                if record.attempts >= settings.max_attempts:
                    self._fail_file(tr, record, f"processing was interrupted {record.attempts} "
                                           "times; giving up", now)  # fmt: skip
                    continue
                status = "parsing" if record.processing_status == "pending" else None
                taken = attrs.evolve(
                    record, processing_status=status or record.processing_status,
                    claimed_until=now + settings.lease, attempts=record.attempts + 1,
                    updated_at=now,
                )  # fmt: skip
                write_file(tr, taken)
                claimed.append(taken)
                if len(claimed) >= settings.concurrency:
                    break
            return claimed

        return claim

    @staticmethod
    def _fail_file(tr: Transaction, record: FileRecord, reason: str, now: float) -> None:
        write_file(tr, attrs.evolve(record, processing_status="error", error_message=reason,
                                    claimed_until=None, updated_at=now))  # fmt: skip
        tr.clear(keys.FILE_QUEUE.pack((record.id,)))
        clear_blob(tr, keys.FILE_BYTES.pack((record.id,)))

    async def _file_still_mine(self, tr: Transaction, claimed: FileRecord) -> FileRecord:
        record = await read_file(tr, claimed.id)
        if record is None or record.attempts != claimed.attempts:
            raise _Lost
        return record

    async def _process_file(self, claimed: FileRecord, settings: FileSettings) -> None:
        try:
            record = claimed
            if record.processing_status == "parsing":
                record = await self._parse_file(record, settings)
                if record is None:
                    return
            await self._chunk_file(record, settings)
        except _Lost:
            log.info("file %s: taken over or deleted while processing", claimed.id)
        except (StoreError, ServiceError) as error:
            # The claim runs out and the file is taken over from where it was.
            log.warning("file %s: processing stopped (resumed later): %r", claimed.id, error)

    async def _parse_file(self, claimed: FileRecord, settings: FileSettings) -> Any:
        raw = await self.store.transact(
            lambda tr: get_blob(tr, keys.FILE_BYTES.pack((claimed.id,)))
        )
        kind = kind_for(claimed.file_type, claimed.original_file_name) or KINDS[".txt"]
        reason = None
        try:
            if raw is None:
                raise ParseError("the upload's bytes are missing")
            try:
                text = await self.file_parser(raw, kind)
            except ParseError:
                raise
            except Exception as error:  # a library failing on a hostile file
                raise ParseError(f"the file could not be read ({type(error).__name__}: "
                                 f"{error})") from None  # fmt: skip
            encoded = text.encode()
            if len(encoded) > MAX_TEXT_BYTES:
                raise ParseError(f"the file's text takes {len(encoded)} bytes; at most "
                                 f"{MAX_TEXT_BYTES} are kept")  # fmt: skip
        except ParseError as error:
            reason = str(error)
        now = self.env.now()

        async def record_text(tr: Transaction) -> FileRecord | None:
            record = await self._file_still_mine(tr, claimed)
            if reason is not None:
                self._fail_file(tr, record, reason, now)
                return None
            chunks = split_text(text, settings.chunk_chars)
            set_blob(tr, keys.FILE_TEXT.pack((record.id,)), encoded)
            clear_blob(tr, keys.FILE_BYTES.pack((record.id,)))
            parsed = attrs.evolve(
                record, processing_status="embedding", total_chunks=len(chunks),
                chunks_embedded=0, claimed_until=now + settings.lease, updated_at=now,
            )  # fmt: skip
            write_file(tr, parsed)
            return parsed

        return await self.store.transact(record_text)

    async def _chunk_file(self, claimed: FileRecord, settings: FileSettings) -> None:
        raw = await self.store.transact(lambda tr: get_blob(tr, keys.FILE_TEXT.pack((claimed.id,))))
        chunks = split_text((raw or b"").decode(), settings.chunk_chars)
        done = claimed.chunks_embedded or 0
        while done < len(chunks):
            stop = min(len(chunks), done + settings.batch)
            await self.store.transact(
                self._write_chunk_batch(claimed, chunks, done, stop, settings)
            )
            done = stop
        await self.store.transact(self._complete_file(claimed))

    def _write_chunk_batch(
        self, claimed: FileRecord, chunks: list[str], start: int, stop: int,
        settings: FileSettings,
    ) -> Callable[[Transaction], Awaitable[None]]:  # fmt: skip
        now = self.env.now()

        async def write(tr: Transaction) -> None:
            record = await self._file_still_mine(tr, claimed)
            if (record.chunks_embedded or 0) != start:
                raise _Lost  # progress moved under us: only the claim's owner moves it
            folder = await read_record(tr, keys.FOLDERS.pack((record.folder_id,)), Folder)
            if folder is None:
                raise _Lost
            ids = []
            for index in range(start, stop):
                passage = Passage(
                    id=chunk_passage_id(record.id, index), agent_id=None, text=chunks[index],
                    source_id=record.folder_id, file_id=record.id, file_name=record.file_name,
                    embedding_config=folder.embedding_config, metadata={},
                    created_at=now, updated_at=now,
                )  # fmt: skip
                write_passage(tr, passage)
                ids.append(passage.id)
            await outbox.record(tr, record.folder_id, passages=ids)
            # The count is the cutting worker's (an agent file's import counted the chunks of
            # the text it brought by its own node's settings).
            write_file(tr, attrs.evolve(record, chunks_embedded=stop, total_chunks=len(chunks),
                                        updated_at=now,
                                        claimed_until=now + settings.lease))  # fmt: skip

        return write

    def _complete_file(self, claimed: FileRecord) -> Callable[[Transaction], Awaitable[None]]:
        from kelpie_trio.service.agent_files import insert_files

        now = self.env.now()

        async def complete(tr: Transaction) -> None:
            record = await self._file_still_mine(tr, claimed)
            done = attrs.evolve(record, processing_status="completed", claimed_until=None,
                                updated_at=now)  # fmt: skip
            write_file(tr, done)
            tr.clear(keys.FILE_QUEUE.pack((record.id,)))
            # As Letta: a processed file opens in the context of every agent of its folder,
            # but one that holds it already (an agent file's import gave it the file, open
            # or closed as the file said) keeps it as it is.
            for key, _ in await tr.get_prefix(FOLDER_AGENTS.pack((record.folder_id,))):
                agent_id = FOLDER_AGENTS.unpack(key)[1]
                if await tr.get(FILE_HOLDERS.pack((record.id, agent_id))) is not None:
                    continue
                agent = await read_record(tr, keys.AGENTS.pack((agent_id,)), Agent)
                if agent is not None:
                    await insert_files(tr, agent, [done], now, self.env.new_id)

        return complete
