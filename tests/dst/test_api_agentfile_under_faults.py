"""Agent file imports in the simulator: concurrent imports under storage faults, all or nothing.

Each import writes blocks, custom tools, an agent, its history, its passages, its
archive, and its folder with two files in one transaction. Under storage faults an
import answers 200 or a clean 503, and the store never holds part of one: every agent
has all its blocks, tools, messages, passages, its archive with all of that archive's
passages, and its folder with both files' texts (one held open, one closed); no block,
archive or folder is orphaned, a tool name several imports race to create exists once,
and every acknowledged import is there. Then a file worker, under the same faults,
chunks the imported texts: each file ends `completed` with each chunk once, and the
agents still hold their files as the file said.
"""

from __future__ import annotations

import io
import json
from collections import Counter

import orjson
import trio
from werkzeug.datastructures import FileStorage

from kelpie_trio.models.passages import split_text
from kelpie_trio.service import AGENT_INDEX, BLOCK_AGENTS, BLOCK_INDEX, PASSAGE_INDEX
from kelpie_trio.service.agent_files import attached_folder_ids, holdings
from kelpie_trio.service.file_worker import FileSettings
from kelpie_trio.service.folders import FOLDER_FILES, FOLDER_INDEX, read_file
from kelpie_trio.service.passages import attached_archive_ids
from kelpie_trio.service.tools import TOOL_AGENTS, TOOL_INDEX, TOOL_NAMES, TOOLS
from kelpie_trio.sim import SimWorld
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import get_blob
from kelpie_trio.tools.base import BASE_TOOLS_BY_ID
from tests.dst.test_api_under_faults import api_on_a_sim_node, run_over_seeds

IMPORTS = 24


def source(name: str, doc: str) -> str:
    return f'def {name}(x: int) -> int:\n    """{doc}"""\n    return x\n'


MESSAGES = 5  # in the file besides its system prompt
OWN_PASSAGES = 2
ARCHIVE_PASSAGES = 3
TEXTS = {"open.txt": "kelp lines at dawn\n" * 6, "shut.md": "Otters guard the nets. " * 5}
# Small chunks in small batches: each file takes several of the worker's transactions.
WORKER = FileSettings(lease=5.0, poll=0.5, batch=2, chunk_chars=40, max_attempts=1000)


def with_knowledge(exported: dict) -> dict:
    """The file with a history, a window, passages and an archive, as a file may carry."""
    agent = exported["agents"][0]
    for i in range(1, MESSAGES + 1):
        role = "user" if i % 2 else "assistant"
        agent["messages"].append(
            {"id": f"message-{i}", "role": role, "agent_id": "agent-0",
             "content": [{"type": "text", "text": f"line {i}"}],
             "created_at": f"2026-01-01T00:00:0{i}Z"}
        )  # fmt: skip
    agent["in_context_message_ids"] = ["message-0", "message-3", "message-4", "message-5"]
    agent["passages"] = [{"id": f"passage-{i}", "text": f"own {i}"} for i in range(OWN_PASSAGES)]
    agent["archive_ids"] = ["archive-0"]
    exported["archives"] = [
        {"id": "archive-0", "name": "shared",
         "passages": [{"id": f"passage-{9 + i}", "text": f"kept {i}"}
                      for i in range(ARCHIVE_PASSAGES)]}
    ]  # fmt: skip
    exported["sources"] = [{"id": "source-0", "name": "papers", "description": "d"}]
    exported["files"] = [
        {"id": f"file-{i}", "source_id": "source-0", "file_name": f"papers/{name}",
         "original_file_name": name, "processing_status": "completed", "content": text}
        for i, (name, text) in enumerate(TEXTS.items())
    ]  # fmt: skip
    agent["source_ids"] = ["source-0"]
    agent["files_agents"] = [
        {"id": f"file_agent-{i}", "agent_id": "agent-0", "file_id": f"file-{i}",
         "source_id": "source-0", "file_name": f"papers/{name}", "is_open": i == 0}
        for i, name in enumerate(TEXTS)
    ]  # fmt: skip
    return exported


def variant(exported: dict, i: int) -> dict:
    """The exported file, with tools that make imports race: a new name several share."""
    copy = json.loads(json.dumps(exported))
    tool = next(t for t in copy["tools"] if t["name"] == "greet")
    tool.update(source_code=source("greet", f"Version {i}."), json_schema=None)
    copy["tools"].append(
        {"id": "tool-90", "name": f"wave_{i % 3}", "tool_type": "custom",
         "source_code": source(f"wave_{i % 3}", f"Wave {i}.")}
    )  # fmt: skip
    copy["agents"][0]["tool_ids"].append("tool-90")
    return copy


async def imports_under_faults(world: SimWorld, statuses: Counter[int]) -> None:
    node, app = api_on_a_sim_node(world)
    acknowledged: dict[str, str] = {}  # agent id -> name, of every 200
    async with app.test_app() as test_app:
        client = test_app.test_client()
        world.faults.enabled = False
        await client.post("/v1/tools/", json={"source_code": source("greet", "Version 0.")})
        body = {
            "name": "original",
            "memory_blocks": [{"label": "human", "value": "h"}, {"label": "persona", "value": "p"}],
            "tools": ["greet"],
        }
        original = await (await client.post("/v1/agents/", json=body)).get_json()
        exported = with_knowledge(
            json.loads(await (await client.get(f"/v1/agents/{original['id']}/export")).get_data())
        )
        world.faults.enabled = True

        async def one(i: int) -> None:
            raw = orjson.dumps(variant(exported, i))
            response = await client.post(
                "/v1/agents/import",
                files={"file": FileStorage(io.BytesIO(raw), filename="a.af", name="file")},
                form={"name": f"copy-{i}", "override_existing_tools": str(i % 2 == 0).lower()},
            )
            answer = await response.get_json()
            statuses[response.status_code] += 1
            if response.status_code == 200:
                (agent_id,) = answer["agent_ids"]
                acknowledged[agent_id] = f"copy-{i}"
            else:
                assert response.status_code == 503, answer
                assert response.headers["Retry-After"] and "detail" in answer

        async with trio.open_nursery() as nursery:
            for i in range(IMPORTS):
                nursery.start_soon(one, i)
        world.faults.enabled = False
        await trio.sleep(1)  # commits still in flight (unknown results) land or fail by now
        held_before = await node.store.transact(imported_holdings)
        # A file worker chunks the imported texts, under the same faults, then without.
        service = app.config["KELPIE_SERVICE"]
        async with trio.open_nursery() as workers:
            world.faults.enabled = True
            workers.start_soon(service.process_files, WORKER)
            await trio.sleep(20)
            world.faults.enabled = False
            await trio.sleep(WORKER.lease * 3 + 10)  # past every claim a failed write left
            workers.cancel_scope.cancel()

    async def files_of(tr: Transaction) -> dict[str, tuple[list, int]]:
        """Each folder's files (record, text) and how many chunks it holds."""
        found: dict[str, tuple[list, int]] = {}
        for key, _ in await tr.get_prefix(FOLDER_INDEX.key()):
            folder_id = FOLDER_INDEX.unpack(key)[1]
            files = []
            for row, _ in await tr.get_prefix(FOLDER_FILES.pack((folder_id,))):
                record = await read_file(tr, FOLDER_FILES.unpack(row)[2])
                assert record is not None, "a folder lists a file it lacks"
                files.append((record, await get_blob(tr, keys.FILE_TEXT.pack((record.id,)))))
            chunks = await tr.get_prefix(PASSAGE_INDEX.pack((folder_id,)))
            found[folder_id] = (files, len(chunks))
        return found

    async def stored(tr: Transaction) -> tuple:
        agents = {
            keys.AGENTS.unpack(k)[0]: orjson.loads(v)
            for k, v in await tr.get_prefix(keys.AGENTS.key())
        }
        agent_index = {AGENT_INDEX.unpack(k)[1] for k, _ in await tr.get_prefix(AGENT_INDEX.key())}
        blocks = {keys.BLOCKS.unpack(k)[0] for k, _ in await tr.get_prefix(keys.BLOCKS.key())}
        block_index = {BLOCK_INDEX.unpack(k)[1] for k, _ in await tr.get_prefix(BLOCK_INDEX.key())}
        block_links = {BLOCK_AGENTS.unpack(k) for k, _ in await tr.get_prefix(BLOCK_AGENTS.key())}
        tools = {TOOLS.unpack(k)[0] for k, _ in await tr.get_prefix(TOOLS.key())}
        tool_index = {TOOL_INDEX.unpack(k)[1] for k, _ in await tr.get_prefix(TOOL_INDEX.key())}
        names = {
            TOOL_NAMES.unpack(k)[0]: v.decode() for k, v in await tr.get_prefix(TOOL_NAMES.key())
        }
        tool_links = {TOOL_AGENTS.unpack(k) for k, _ in await tr.get_prefix(TOOL_AGENTS.key())}
        knowledge = {}
        for agent_id in agents:
            rows = await tr.get_prefix(keys.MESSAGES.pack((agent_id,)))
            archives = await attached_archive_ids(tr, agent_id)
            knowledge[agent_id] = (
                len({keys.MESSAGES.unpack(k)[1] for k, _ in rows}),
                len(await tr.get_prefix(PASSAGE_INDEX.pack((agent_id,)))),
                [len(await tr.get_prefix(PASSAGE_INDEX.pack((a,)))) for a in archives],
            )
        archive_records = {
            keys.ARCHIVES.unpack(k)[0] for k, _ in await tr.get_prefix(keys.ARCHIVES.key())
        }
        return agents, agent_index, blocks, block_index, block_links, tools, tool_index, names, \
            tool_links, knowledge, archive_records  # fmt: skip

    (
        agents,
        agent_index,
        blocks,
        block_index,
        block_links,
        tools,
        tool_index,
        names,
        tool_links,
        knowledge,
        archive_records,
    ) = await node.store.transact(stored)
    assert set(agents) == agent_index, "an agent without its index entry, or the reverse"
    assert acknowledged.keys() <= agents.keys(), "an acknowledged import is missing"
    imported = [a for a in agents.values() if a["name"] != "original"]
    counts = Counter(a["name"] for a in imported)
    assert all(n == 1 for n in counts.values()), "an import landed twice"
    # Whole imports only: every agent has both its blocks, and every block belongs to one.
    assert blocks == block_index
    assert {(b, a) for a, r in agents.items() for b in r["block_ids"]} == block_links
    assert {b for b, _ in block_links} == blocks, "a block without an agent: half an import"
    assert all(len(a["block_ids"]) == 2 for a in agents.values())
    # Tools: every name once, every tool an agent holds exists, the links agree.
    assert tools == tool_index == set(names.values())
    assert set(names) <= {"greet", "wave_0", "wave_1", "wave_2"}
    held = {(t, a) for a, r in agents.items() for t in r["tool_ids"]}
    assert held == tool_links
    assert {t for t, _ in held} <= tools | BASE_TOOLS_BY_ID.keys()
    for record in imported:
        custom = [t for t in record["tool_ids"] if t not in BASE_TOOLS_BY_ID]
        assert len(custom) == 2, record  # greet and its wave: never one without the other
        # The whole history, the passages, the archive with all its passages, or none.
        assert knowledge[record["id"]] == (MESSAGES, OWN_PASSAGES, [ARCHIVE_PASSAGES]), record
    assert len(archive_records) == len(imported), "an archive without its agent, or twice"

    # Folders and files: one folder of both files per import, the agent holding them.
    folders = await node.store.transact(files_of)
    assert len(folders) == len(imported), "a folder without its agent, or twice"
    for record in imported:
        held = held_before[record["id"]]
        assert len(held["folders"]) == 1, record
        [folder_id] = held["folders"]
        files, chunks = folders[folder_id]
        names = sorted(f.original_file_name for f, _ in files)
        assert names == sorted(TEXTS), f"an import's folder lacks a file: {names}"
        assert held["open"] == {f.file_name for f, _ in files if f.original_file_name == "open.txt"}
        assert held["files"] == {f.id for f, _ in files}
        for file, text in files:
            assert text is not None and text.decode() == TEXTS[file.original_file_name]
            assert file.processing_status == "completed", file.error_message
            pieces = split_text(text.decode(), WORKER.chunk_chars)
            assert file.total_chunks == file.chunks_embedded == len(pieces)
        assert chunks == sum(f.total_chunks for f, _ in files), "a chunk lost, or twice"
    # The worker's completion left the agents' files as the import made them.
    assert await node.store.transact(imported_holdings) == held_before


async def imported_holdings(tr: Transaction) -> dict[str, dict]:
    """Per agent: its folders, the files it holds, and the names of those open with a view."""
    found = {}
    for key, _ in await tr.get_prefix(keys.AGENTS.key()):
        agent_id = keys.AGENTS.unpack(key)[0]
        held = await holdings(tr, agent_id)
        found[agent_id] = {
            "folders": await attached_folder_ids(tr, agent_id),
            "files": {h.file_id for h in held},
            "open": {h.file_name for h in held if h.is_open and h.view},
            "views": {h.file_name: h.view for h in held},
        }
    return found


def test_dst_agent_file_imports_are_all_or_nothing_under_storage_faults() -> None:
    run_over_seeds(imports_under_faults)
