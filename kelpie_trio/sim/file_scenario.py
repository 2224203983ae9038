"""The `files` scenario: uploaded files processed under storage faults and worker crashes
(run by `kelpie-trio sim --scenario files` and tests/dst/test_dst_files.py).

Two folders, files uploaded through the real service (text files of many lines, cut
into many chunks written a few per transaction, and a corrupt PDF), some deleted while
they are processed. Two worker nodes run the file worker and crash at random moments,
each restarted as a new incarnation; an indexer node runs the background search indexer
and crashes too. Storage faults (failed reads and writes, conflicts, unknown commit
results, latency) hit everyone, nodes start with skewed clocks, and a parse now and then
outlasts its claim's lease (another worker takes the file over meanwhile).

At the end, with faults off and one worker and the indexer left to run past the claims'
lease:

- no file is left `pending`, `parsing` or `embedding` (no file stuck for ever): each
  acknowledged upload is `completed`, or `error` with a reason (the corrupt PDF), or gone
  (deleted);
- a completed file has exactly `total_chunks` chunks in the store, chunk i being the i-th
  piece of its text (none lost, none twice), and `chunks_embedded == total_chunks`;
- the index's documents of each folder are exactly the store's passages of the folder:
  no chunk indexed twice, none of a deleted file;
- an agent attached to both folders (max_files_open 2) that opens files (open_files and
  the API), greps and closes them all while files arrive never has more than 2 open, each
  with its view, and ends holding exactly the folders' processed files.
"""

from __future__ import annotations

import functools
from collections import Counter

import trio

from kelpie_trio.errors import NotFound
from kelpie_trio.files.kinds import FileKind
from kelpie_trio.files.tools import ToolError
from kelpie_trio.models.passages import Passage, split_text
from kelpie_trio.search import MemoryIndex, SearchLayer
from kelpie_trio.search.store_reads import read_agent_documents
from kelpie_trio.service import AgentService, Page
from kelpie_trio.service.agent_files import holdings
from kelpie_trio.service.common import read_record
from kelpie_trio.service.file_worker import FileSettings, inline_parser
from kelpie_trio.service.folders import FOLDER_FILES, read_file
from kelpie_trio.sim.faults import STORAGE_FAULTS, FaultConfig, FaultType
from kelpie_trio.sim.search_scenario import crashing_indexer
from kelpie_trio.sim.world import SimNode, SimWorld
from kelpie_trio.storage import StoreError, keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import get_blob

__all__ = ["FILE_FAULTS", "SETTINGS", "FileStats", "files_processed"]

# Skewed clocks too: a worker whose clock runs ahead takes a claim over early, and the
# claim's epoch must keep the two workers from both writing.
FILE_FAULTS = FaultConfig({**dict.fromkeys(STORAGE_FAULTS, 0.06), FaultType.CLOCK_SKEW: 0.3})
# Small chunks in small batches: a file takes many transactions, so crashes land between.
SETTINGS = FileSettings(lease=8.0, batch=3, poll=1.0, max_attempts=1000, chunk_chars=80)
WORDS = ["kelp", "tide", "otter", "buoy", "net", "anchor", "harbor", "float", "winch"]


class FileStats(Counter):
    """What ran, by kind (uploads, deletes, worker crashes, ...)."""

    def summary(self) -> str:
        return "files: " + ", ".join(f"{k} {v}" for k, v in sorted(self.items()))


def _worker_service(node: SimNode) -> AgentService:
    service = AgentService(node.store, node.env)
    service.file_settings = SETTINGS
    rng = node.world.rng(f"parse:{node.id}")

    async def slow_at_times(data: bytes, kind: FileKind) -> str:
        # A parse that now and then takes longer than the claim's lease: another worker
        # takes the file over while this one is still at it.
        if rng.random() < 0.2:
            await trio.sleep(rng.uniform(0.0, SETTINGS.lease * 1.5))
        return await inline_parser(data, kind)

    service.file_parser = slow_at_times  # type: ignore[assignment]
    return service


async def files_processed(world: SimWorld) -> FileStats:
    stats = FileStats()
    rng = world.rng("test")
    api = world.new_node("api")
    api.store.max_attempts = 6  # give up sooner: failed writes, whose fate is unknown, happen
    service = _worker_service(api)
    service.search_layer = SearchLayer(api.store, api.env)
    world.faults.enabled = False
    folders = [(await service.create_folder({"name": f"f{i}"})).id for i in range(2)]
    reader = (await service.create_agent({"name": "reader", "max_files_open": 2})).agent.id
    for folder_id in folders:
        await service.attach_folder(reader, folder_id, True)
    world.faults.enabled = True

    uploaded: dict[str, str] = {}  # file id -> its text (acknowledged uploads)
    corrupt: set[str] = set()
    deleted: set[str] = set()  # acknowledged deletions
    durable = MemoryIndex("index-durable")
    final_layer: list[SearchLayer] = []
    indexer_up = trio.Event()
    uploads_done = trio.Event()

    def text() -> str:
        lines = (" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
                 for _ in range(rng.randint(3, 40)))  # fmt: skip
        return "\n".join(lines) + "\n"

    async def uploader(folder_id: str) -> None:
        for n in range(rng.randint(3, 6)):
            bad = rng.random() < 0.15
            name, kind = (f"scan{n}.pdf", "application/pdf") if bad else (f"n{n}.txt", None)
            body = b"%PDF-1.4 broken" if bad else text().encode()
            try:
                record, _ = await service.upload_file(folder_id, name, kind, body)
                uploaded[record.id] = body.decode()
                (corrupt.add(record.id) if bad else None)
                stats["uploads"] += 1
            except StoreError:
                stats["uploads failed"] += 1
            await trio.sleep(rng.uniform(0.0, 2.0))

    async def deleter() -> None:
        for _ in range(rng.randint(0, 3)):
            await trio.sleep(rng.uniform(0.5, 4.0))
            if not uploaded:
                continue
            file_id = rng.choice(sorted(uploaded))
            record = await _record(api, file_id)
            if record is None:
                continue
            try:
                await service.delete_file(record.folder_id, file_id)
                deleted.add(file_id)
                stats["deletes"] += 1
            except StoreError:
                stats["deletes failed"] += 1
            except NotFound:
                pass

    async def open_count() -> int:
        held = await api.store.transact(lambda tr: holdings(tr, reader))
        for record in held:
            assert not record.is_open or record.view, "an open file without its view"
        return sum(1 for r in held if r.is_open)

    async def reading() -> None:
        """The agent opens, greps and closes its files while they arrive."""
        while not uploads_done.is_set():
            await trio.sleep(rng.uniform(0.1, 1.0))
            try:
                found, _ = await service.agent_files(reader, Page(limit=100))
                names = [held.file_name for held, _ in found]
                ids = [held.file_id for held, _ in found]
                roll = rng.random()
                if names and roll < 0.45:
                    picks = rng.sample(names, min(len(names), rng.randint(1, 2)))
                    requests = [{"file_name": n, "offset": rng.choice([None, 0, 1])}
                                for n in picks]  # fmt: skip
                    await service.run_file_tool(reader, "open_files", {"file_requests": requests})
                    stats["files opened by the tool"] += 1
                elif ids and roll < 0.65:
                    await service.open_file(reader, rng.choice(ids))
                    stats["files opened by the API"] += 1
                elif roll < 0.8:
                    await service.run_file_tool(
                        reader, "grep_files", {"pattern": rng.choice(WORDS)}
                    )
                    stats["greps"] += 1
                else:
                    await service.close_all_files(reader)
                    stats["close alls"] += 1
            except (StoreError, ToolError, NotFound):
                stats["reads refused or failed"] += 1
                continue
            try:
                assert await open_count() <= 2, "more files open than max_files_open"
                stats["open limits checked"] += 1
            except StoreError:
                pass

    async def crashing_worker(name: str) -> None:
        while not uploads_done.is_set():
            node = world.new_node(name)
            worker = _worker_service(node)
            world.system_nursery.start_soon(world.run_node, node,
                                            lambda n, w=worker: w.process_files())  # fmt: skip
            await trio.sleep(rng.uniform(0.3, 4.0))
            node.crash("test")
            stats["worker crashes"] += 1

    indexer_node = functools.partial(
        crashing_indexer, world, rng, stats, durable,
        embedder=None, up=indexer_up, final_layer=final_layer,
    )  # fmt: skip

    async with trio.open_nursery() as nursery:
        nursery.start_soon(indexer_node)
        await indexer_up.wait()
        nursery.start_soon(crashing_worker, "worker-a")
        nursery.start_soon(crashing_worker, "worker-b")
        nursery.start_soon(reading)  # until the uploads are done
        async with trio.open_nursery() as writers:
            for folder_id in folders:
                writers.start_soon(uploader, folder_id)
            writers.start_soon(deleter)
        uploads_done.set()

    world.faults.enabled = False
    last = world.new_node("worker-last")
    world.system_nursery.start_soon(world.run_node, last,
                                    lambda n: _worker_service(last).process_files())  # fmt: skip
    # Past the lease of every claim a crashed worker left, and then some.
    await trio.sleep(SETTINGS.lease * 4 + 30)

    async def truth(tr: Transaction) -> dict[str, tuple]:
        found = {}
        for folder_id in folders:
            for key, _ in await tr.get_prefix(FOLDER_FILES.pack((folder_id,))):
                record = await read_file(tr, FOLDER_FILES.unpack(key)[2])
                if record is None:
                    continue
                raw = await get_blob(tr, keys.FILE_TEXT.pack((record.id,)))
                rows = await tr.get_prefix(keys.PASSAGES.pack((folder_id,)))
                ids = {keys.PASSAGES.unpack(k)[1] for k, _ in rows}
                mine = []
                for passage_id in sorted(ids):
                    passage = await read_record(tr, keys.PASSAGES.pack((folder_id, passage_id)),
                                                Passage)  # fmt: skip
                    if passage is not None and passage.file_id == record.id:
                        mine.append(passage)
                found[record.id] = (record, None if raw is None else raw.decode(), mine)
        return found

    files = await api.store.transact(truth)
    for file_id in deleted:
        assert file_id not in files, "a deleted file is still listed"
    for file_id, (record, stored_text, chunks) in files.items():
        assert record.processing_status in ("completed", "error"), (
            f"file {file_id} is stuck in {record.processing_status!r}"
        )
        if record.processing_status == "error":
            assert record.error_message, "an error without its reason"
            assert record.original_file_name.startswith("scan"), (
                f"a readable file ended in error: {record.error_message}"
            )
            assert chunks == [], "a failed file left chunks"
            stats["files failed"] += 1
            continue
        if file_id in uploaded:
            assert file_id not in corrupt, "a corrupt PDF was read"
            assert stored_text == uploaded[file_id]
        pieces = split_text(stored_text or "", SETTINGS.chunk_chars)
        assert record.total_chunks == len(pieces) == record.chunks_embedded
        assert len(chunks) == len(pieces), (
            f"file {file_id} has {len(chunks)} chunks stored for {len(pieces)} pieces"
        )
        assert Counter(c.text for c in chunks) == Counter(pieces), "chunks differ from the text"
        stats["files completed"] += 1
        stats["chunks checked"] += len(chunks)
    for file_id in corrupt:
        if file_id in files:
            assert files[file_id][0].processing_status == "error"

    # The agent holds every processed file of its folders, no other, at most 2 open.
    assert await open_count() <= 2, "more files open than max_files_open"
    held = {r.file_id for r in await api.store.transact(lambda tr: holdings(tr, reader))}
    completed = {f for f, (record, *_) in files.items() if record.processing_status == "completed"}
    assert held == completed, "the agent's files are not its folders' processed files"

    # The index: each folder's documents are the store's passages, once each.
    [background] = final_layer
    await trio.sleep(5)  # the background indexer catches up on its own

    async def stored_docs(tr: Transaction) -> dict[str, set]:
        return {f: {d.key for d in await read_agent_documents(tr, f) if d.kind == "passage"}
                for f in folders}  # fmt: skip

    stored = await api.store.transact(stored_docs)
    index = background.index
    assert isinstance(index, MemoryIndex)
    for folder_id in folders:
        docs = [d.key for d in index.documents(folder_id, "passage")]
        assert len(docs) == len(set(docs)), "a chunk is indexed twice"
        assert set(docs) == stored[folder_id], "the index's chunks differ from the store's"
        stats["documents checked"] += len(docs)
    total = sum(len(index.documents(f, "passage")) for f in folders)
    assert index._corpora["passage"].documents == total, "the index counts a chunk twice"
    return stats


async def _record(node: SimNode, file_id: str) -> object:
    try:
        return await node.store.transact(lambda tr: read_file(tr, file_id))
    except StoreError:
        return None
