"""Folders through the service on the memory store, with the file worker run by hand: what
attaching, uploading, processing and deleting do to an agent's files and tools."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from kelpie_trio.env import RealEnv, SimEnv
from kelpie_trio.errors import Conflict, Invalid, NotFound
from kelpie_trio.files.tools import FILE_TOOLS
from kelpie_trio.service import AgentService, Page
from kelpie_trio.service.file_worker import FileSettings
from kelpie_trio.storage import MemoryStore, keys
from kelpie_trio.storage.base import Transaction

SETTINGS = FileSettings(chunk_chars=200)


@pytest.fixture
async def service(nursery: trio.Nursery) -> AsyncIterator[AgentService]:
    store = MemoryStore()
    await nursery.start(store.run)
    yield AgentService(store, RealEnv())


async def _upload(service: AgentService, folder_id: str, name: str, text: str, **kw: str) -> str:
    record, _ = await service.upload_file(folder_id, name, "text/plain", text.encode(), **kw)
    while await service.process_some_files(SETTINGS):
        pass
    return record.id


async def _tools(service: AgentService, agent_id: str) -> set[str]:
    return {t.name for t in (await service.get_agent(agent_id)).tools}


async def _open_names(service: AgentService, agent_id: str) -> list[str]:
    found, _ = await service.agent_files(agent_id, Page(limit=100), is_open=True)
    return sorted(held.file_name for held, _ in found)


async def test_a_file_processed_after_the_attach_opens_in_the_agent(service: AgentService) -> None:
    agent = (await service.create_agent({"name": "a"})).agent.id
    folder = (await service.create_folder({"name": "docs"})).id
    await service.attach_folder(agent, folder, True)
    assert set(FILE_TOOLS) <= await _tools(service, agent)
    assert await _open_names(service, agent) == []
    await _upload(service, folder, "a.txt", "alpha line\nbeta line\n")
    assert await _open_names(service, agent) == ["docs/a.txt"]
    view = await service.store.transact(lambda tr: service.view_in(tr, agent))
    assert '<file status="open" name="docs/a.txt">' in (view.directories or "")
    assert "1: alpha line" in (view.directories or "")
    overview = await service.context_overview(agent)
    assert overview["directories"] == view.directories
    assert overview["num_tokens_directories"] > 0


async def test_a_small_window_keeps_three_files_open_closing_the_least_recent(
    service: AgentService,
) -> None:
    agent = (await service.create_agent({"name": "a", "max_files_open": 3})).agent.id
    folder = (await service.create_folder({"name": "docs"})).id
    await service.attach_folder(agent, folder, True)
    for n in range(4):
        await _upload(service, folder, f"{n}.txt", f"file {n}\n")
    assert await _open_names(service, agent) == ["docs/1.txt", "docs/2.txt", "docs/3.txt"]
    text = await service.run_file_tool(agent, "open_files", {"file_requests": [
        {"file_name": "docs/0.txt"}]})  # fmt: skip
    assert "least recently used file(s) due to open file limit: docs/1.txt" in text
    assert await _open_names(service, agent) == ["docs/0.txt", "docs/2.txt", "docs/3.txt"]


async def test_duplicate_names_get_a_suffix_or_are_skipped_refused_or_replaced(
    service: AgentService,
) -> None:
    folder = (await service.create_folder({"name": "docs"})).id
    first = await _upload(service, folder, "a.txt", "one\n")
    second = await _upload(service, folder, "a.txt", "two\n")
    files = {f.id: f.file_name for f in await service.list_files(folder, Page(limit=10))}
    assert files == {first: "docs/a.txt", second: "docs/a_(1).txt"}
    skipped, was_skipped = await service.upload_file(
        folder, "a.txt", "text/plain", b"three", duplicate_handling="skip"
    )
    assert was_skipped and skipped.id in files
    with pytest.raises(Conflict, match="already exists"):
        await service.upload_file(folder, "a.txt", "text/plain", b"x", duplicate_handling="error")
    await _upload(service, folder, "a.txt", "four\n", duplicate_handling="replace")
    left = await service.list_files(folder, Page(limit=10))
    assert [f.file_name for f in left] == ["docs/a.txt"] and left[0].id not in files


async def test_deleting_a_folder_takes_its_files_chunks_and_tools_from_the_agent(
    service: AgentService,
) -> None:
    agent = (await service.create_agent({"name": "a"})).agent.id
    folder = (await service.create_folder({"name": "docs"})).id
    await _upload(service, folder, "a.txt", "x " * 500)
    await service.attach_folder(agent, folder, True)
    await service.delete_folder(folder)
    assert not set(FILE_TOOLS) & await _tools(service, agent)
    assert await _open_names(service, agent) == []

    async def left(tr: Transaction) -> int:
        rows = 0
        for space in (keys.PASSAGES, keys.FILES, keys.FILE_TEXT, keys.FILE_AGENTS):
            rows += len(await tr.get_range(space.range().start, space.range().stop))
        return rows

    assert await service.store.transact(left) == 0


async def test_deleting_an_agent_forgets_its_hold_of_the_folder(service: AgentService) -> None:
    agent = (await service.create_agent({"name": "a"})).agent.id
    folder = (await service.create_folder({"name": "docs"})).id
    await _upload(service, folder, "a.txt", "hello\n")
    await service.attach_folder(agent, folder, True)
    await service.delete_agent(agent)
    assert await service.agents_of_folder(folder, Page()) == []

    async def holdings(tr: Transaction) -> int:
        space = keys.FILE_AGENTS
        return len(await tr.get_range(space.range().start, space.range().stop))

    assert await service.store.transact(holdings) == 0


async def test_open_files_can_close_the_others_and_says_what_range_was_open(
    service: AgentService,
) -> None:
    agent = (await service.create_agent({"name": "a"})).agent.id
    folder = (await service.create_folder({"name": "docs"})).id
    await service.attach_folder(agent, folder, True)
    for n in range(3):
        await _upload(service, folder, f"{n}.txt", "".join(f"line {i}\n" for i in range(9)))
    assert len(await _open_names(service, agent)) == 3
    text = await service.run_file_tool(agent, "open_files", {
        "file_requests": [{"file_name": "docs/0.txt", "offset": 2, "length": 3}],
        "close_all_others": True,
    })  # fmt: skip
    assert text.startswith("* Opened docs/0.txt (lines 3-5) (previously full file)")
    assert "due to close_all_others=True: docs/1.txt, docs/2.txt" in text
    assert await _open_names(service, agent) == ["docs/0.txt"]
    again = await service.run_file_tool(agent, "open_files", {
        "file_requests": [{"file_name": "docs/0.txt", "offset": 6}]})  # fmt: skip
    assert again == "* Opened docs/0.txt (lines 7-end) (previously lines 3-5)"
    found, _ = await service.agent_files(agent, Page(limit=10), is_open=True)
    [(held, _)] = found
    assert held.view.startswith("[Viewing lines 7 to end (out of 9 lines)]\n7: line 6")


async def test_an_agent_created_with_folder_ids_has_them_attached(service: AgentService) -> None:
    folder = (await service.create_folder({"name": "docs"})).id
    await _upload(service, folder, "a.txt", "hello\n")
    view = await service.create_agent({"name": "a", "folder_ids": [folder]})
    assert set(FILE_TOOLS) <= {t.name for t in view.tools}
    assert await _open_names(service, view.agent.id) == ["docs/a.txt"]
    with pytest.raises(NotFound):
        await service.create_agent(
            {"name": "b", "source_ids": ["source-" + "0" * 8 + "-0000-4000-8000-" + "0" * 12]}
        )


async def test_folder_ids_on_an_update_make_the_agents_folders_exactly_those(
    service: AgentService,
) -> None:
    docs = (await service.create_folder({"name": "docs"})).id
    notes = (await service.create_folder({"name": "notes"})).id
    await _upload(service, docs, "a.txt", "hello\n")
    await _upload(service, notes, "b.txt", "world\n")
    agent = (await service.create_agent({"name": "a", "folder_ids": [docs]})).agent.id
    view = await service.update_agent(agent, {"folder_ids": [docs, notes]})
    assert set(FILE_TOOLS) <= {t.name for t in view.tools}
    assert sorted(await _open_names(service, agent)) == ["docs/a.txt", "notes/b.txt"]
    view = await service.update_agent(agent, {"source_ids": [notes]})  # Letta's older name
    assert await _open_names(service, agent) == ["notes/b.txt"]
    view = await service.update_agent(agent, {"folder_ids": []})
    assert not set(FILE_TOOLS) & {t.name for t in view.tools}  # no folder: no file tools
    assert await _open_names(service, agent) == []
    unknown = "source-" + "0" * 8 + "-0000-4000-8000-" + "0" * 12
    with pytest.raises(NotFound):  # refused whole: the name given with it is not changed
        await service.update_agent(agent, {"name": "renamed", "folder_ids": [docs, unknown]})
    assert (await service.get_agent(agent)).agent.name == "a"
    with pytest.raises(Invalid):
        await service.update_agent(agent, {"folder_ids": "docs"})


async def test_a_worker_that_outlived_its_claim_writes_nothing_over_the_one_that_took_over(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """Worker A claims a file and hangs in its parser past the lease; worker B takes the
    file over and completes it; when A's parser returns, A's writes are refused (the
    claim's epoch is no longer A's): the file stays completed, its chunks once."""
    store = MemoryStore()
    await nursery.start(store.run)
    settings = FileSettings(lease=5.0, chunk_chars=50)
    release = trio.Event()
    a = AgentService(store, SimEnv(random.Random(1)))
    b = AgentService(store, SimEnv(random.Random(2)))

    async def hanging(data: bytes, kind: object) -> str:
        await release.wait()
        return "stale text that must never be stored"

    a.file_parser = hanging  # type: ignore[assignment]
    folder = (await a.create_folder({"name": "docs"})).id
    text = "".join(f"line {i} of the file\n" for i in range(10))
    record, _ = await a.upload_file(folder, "a.txt", "text/plain", text.encode())
    async with trio.open_nursery() as workers:
        workers.start_soon(a.process_some_files, settings)
        await trio.sleep(settings.lease + 1)  # A is stuck; its claim runs out
        assert await b.process_some_files(settings)  # B takes the file over and ends it
        done, content = await b.get_file(folder, record.id, content=True)
        assert done.processing_status == "completed" and content == text
        release.set()  # A wakes up with its stale claim
    after, content = await b.get_file(folder, record.id, content=True)
    assert after.processing_status == "completed" and content == text
    assert after.chunks_embedded == after.total_chunks

    async def chunks(tr: Transaction) -> int:
        return len(await tr.get_prefix(keys.PASSAGES.pack((folder,))))

    assert await store.transact(chunks) == after.total_chunks


async def test_an_agents_file_limits_are_whole_numbers_within_lettas_bounds(
    service: AgentService,
) -> None:
    for bad in ({"max_files_open": 0}, {"max_files_open": 1001}, {"max_files_open": "3"},
                {"per_file_view_window_char_limit": -1}):  # fmt: skip
        with pytest.raises(Invalid):
            await service.create_agent({"name": "a", **bad})
    agent = (await service.create_agent({"name": "a", "max_files_open": 7})).agent.id
    with pytest.raises(Invalid):
        await service.update_agent(agent, {"max_files_open": 0})
    assert (await service.get_agent(agent)).agent.max_files_open == 7


async def test_folders_by_name_their_metadata_and_their_passages(service: AgentService) -> None:
    folder = (await service.create_folder({"name": "docs"})).id
    file_id = await _upload(service, folder, "a.txt", "word " * 100)
    assert await service.folder_id_by_name("docs") == folder
    with pytest.raises(NotFound):
        await service.folder_id_by_name("nope")
    stats = await service.folders_metadata(detailed=True)
    assert (stats["total_sources"], stats["total_files"], stats["total_size"]) == (1, 1, 500)
    assert stats["sources"][0]["files"] == [
        {"file_id": file_id, "file_name": "docs/a.txt", "file_size": 500}
    ]
    assert (await service.folders_metadata(detailed=False))["sources"][0]["files"] == []
    chunks = await service.folder_passages(folder, Page(limit=100, order="asc"))
    assert " ".join(p.text for p in chunks).split() == ["word"] * 100
    assert {p.file_id for p in chunks} == {file_id} and all(p.source_id == folder for p in chunks)
