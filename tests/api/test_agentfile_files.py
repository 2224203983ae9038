"""Agent files with folders and files, through the app's test client (the file worker run by
hand): what the export carries, what an import makes of it (new folders and files whose
text the worker chunks once, the agent holding its files as the file says), Letta's own
shape both ways, and bad references refused whole."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from quart.testing import QuartClient
from werkzeug.datastructures import FileStorage

from kelpie_trio.api.app import create_app
from kelpie_trio.llm.catalog import CatalogConfig, ModelCatalog
from kelpie_trio.models.agentfile_files import NO_CONTENT
from kelpie_trio.models.passages import split_text
from kelpie_trio.service import AgentService, Page, agentfile_files
from kelpie_trio.service.agent_files import holdings
from kelpie_trio.storage import MemoryStore, keys
from tests.api.letta_agent_file_shape import letta_shape_problems

FILES = Path(__file__).resolve().parents[1] / "data" / "files"
LETTA = Path(__file__).resolve().parents[1] / "data" / "letta_agent_files"


@pytest.fixture
async def app(nursery: trio.Nursery) -> AsyncIterator[tuple[QuartClient, AgentService]]:
    store = MemoryStore()
    await nursery.start(store.run)
    catalog = ModelCatalog.from_config(CatalogConfig(openai_api_key="sk-test"))
    quart = create_app(store, catalog=catalog)
    async with quart.test_app() as test_app:
        yield test_app.test_client(), quart.config["KELPIE_SERVICE"]


async def ok(response: Any) -> Any:
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


def upload(content: dict) -> dict[str, FileStorage]:
    raw = json.dumps(content).encode()
    return {"file": FileStorage(io.BytesIO(raw), filename="agent.af", name="file")}


async def drain(service: AgentService) -> None:
    """Run the file worker until nothing is queued."""
    while await service.process_some_files(service.file_settings):
        pass


async def a_reader(client: QuartClient, service: AgentService) -> tuple[str, str, dict]:
    """An agent with a folder of a Markdown file and a PDF, processed; the Markdown closed
    and lines 4-5 of the PDF open. (agent id, folder id, file ids by name)"""
    folder = await service.create_folder({"name": "farm", "instructions": "Tides first."})
    ids = {}
    for name, kind in (("handbook.md", "text/markdown"), ("tides.pdf", "application/pdf")):
        record, _ = await service.upload_file(folder.id, name, kind, (FILES / name).read_bytes())
        ids[name] = record.id
    await drain(service)
    body = {"name": "reader", "model": "openai/gpt-4o-mini"}
    agent = await ok(await client.post("/v1/agents/", json=body))
    await service.attach_folder(agent["id"], folder.id, True)
    await ok(await client.patch(f"/v1/agents/{agent['id']}/files/{ids['handbook.md']}/close"))
    await service.run_file_tool(agent["id"], "open_files", {"file_requests": [
        {"file_name": "farm/tides.pdf", "offset": 3, "length": 2}]})  # fmt: skip
    return agent["id"], folder.id, ids


async def held(service: AgentService, agent_id: str) -> dict[str, Any]:
    found = await service.store.transact(lambda tr: holdings(tr, agent_id))
    return {h.file_name: h for h in found}


async def test_export_carries_the_folders_their_files_text_and_what_the_agent_holds(
    app: tuple[QuartClient, AgentService],
) -> None:
    client, service = app
    agent_id, _, _ = await a_reader(client, service)
    exported = await ok(await client.get(f"/v1/agents/{agent_id}/export"))
    assert letta_shape_problems(exported) == []
    [source] = exported["sources"]
    assert (source["id"], source["name"], source["instructions"]) == ("source-0", "farm",
                                                                      "Tides first.")  # fmt: skip
    files = {f["original_file_name"]: f for f in exported["files"]}
    assert {f["id"] for f in files.values()} == {"file-0", "file-1"}
    assert files["tides.pdf"]["source_id"] == "source-0"
    assert files["tides.pdf"]["processing_status"] == "completed"
    assert "Neap tides keep the nursery lines submerged" in files["tides.pdf"]["content"]
    assert "The kelp farm opens at dawn" in files["handbook.md"]["content"]
    [agent] = exported["agents"]
    assert agent["source_ids"] == ["source-0"]
    holding = {h["file_name"]: h for h in agent["files_agents"]}
    assert set(holding) == {"farm/handbook.md", "farm/tides.pdf"}
    assert all(h["agent_id"] == "agent-0" for h in holding.values())
    assert holding["farm/handbook.md"]["is_open"] is False
    assert holding["farm/handbook.md"]["visible_content"] is None
    pdf = holding["farm/tides.pdf"]
    assert pdf["is_open"] and (pdf["start_line"], pdf["end_line"]) == (4, 5)
    assert "4: Neap tides keep the nursery lines submerged." in pdf["visible_content"]
    assert pdf["file_id"] == files["tides.pdf"]["id"]
    assert {"open_files", "grep_files"} <= {t["name"] for t in exported["tools"]}


async def test_import_makes_new_folders_and_files_that_the_worker_chunks_once(
    app: tuple[QuartClient, AgentService],
) -> None:
    client, service = app
    agent_id, folder_id, _ = await a_reader(client, service)
    exported = await ok(await client.get(f"/v1/agents/{agent_id}/export"))
    [copy_id] = (await ok(await client.post("/v1/agents/import", files=upload(exported))))[
        "agent_ids"
    ]
    [folder] = [f for f in await service.list_folders(Page(limit=10)) if f.id != folder_id]
    # A new folder, never the one here of the same name: that name gets a suffix, as Letta's.
    assert folder.name.startswith("farm_") and len(folder.name) == len("farm_") + 8
    assert folder.instructions == "Tides first."
    records = {r.original_file_name: r for r in await service.list_files(folder.id, Page())}
    assert set(records) == {"handbook.md", "tides.pdf"}
    assert all(r.processing_status == "embedding" and r.chunks_embedded == 0
               for r in records.values())  # fmt: skip
    # The copy holds its files as the original did, at once: the PDF open at lines 4-5.
    copy = await held(service, copy_id)
    pdf, md = copy[f"{folder.name}/tides.pdf"], copy[f"{folder.name}/handbook.md"]
    assert not md.is_open and md.view is None
    assert pdf.is_open and (pdf.start_line, pdf.end_line) == (4, 5)
    assert "4: Neap tides keep the nursery lines submerged." in pdf.view
    assert pdf.file_id == records["tides.pdf"].id
    tools = await ok(await client.get(f"/v1/agents/{copy_id}/tools"))
    assert {"open_files", "grep_files", "semantic_search_files"} <= {t["name"] for t in tools}
    # It greps its files before the worker has chunked them (their text came with the file).
    grep = await service.run_file_tool(copy_id, "grep_files", {"pattern": "otters"})
    assert f"{folder.name}/handbook.md" in grep and "Otters guard the longlines" in grep

    await drain(service)
    for record in await service.list_files(folder.id, Page()):
        assert record.processing_status == "completed", record.error_message
        text = (await service.get_file(folder.id, record.id, content=True))[1]
        pieces = split_text(text, service.file_settings.chunk_chars)
        assert record.total_chunks == record.chunks_embedded == len(pieces)
    chunks = await service.folder_passages(folder.id, Page(limit=100))
    total = sum(r.total_chunks for r in await service.list_files(folder.id, Page()))
    assert len(chunks) == len({c.id for c in chunks}) == total
    # The worker's completion left the copy's files as the import made them.
    after = await held(service, copy_id)
    assert not after[f"{folder.name}/handbook.md"].is_open
    assert after[f"{folder.name}/tides.pdf"].view == pdf.view
    # Its own export passes Letta's reader again.
    again = await ok(await client.get(f"/v1/agents/{copy_id}/export"))
    assert letta_shape_problems(again) == []


async def test_a_letta_file_with_sources_and_files_imports(
    app: tuple[QuartClient, AgentService],
) -> None:
    client, service = app
    letta = json.loads((LETTA / "folder_with_files_v2.af").read_text())
    assert letta_shape_problems(letta) == []
    [agent_id] = (await ok(await client.post("/v1/agents/import", files=upload(letta))))[
        "agent_ids"
    ]
    [folder] = await service.list_folders(Page())
    assert (folder.name, folder.description, folder.metadata) == (
        "farm", "the farm's papers", {"team": "ops"})  # fmt: skip
    copy = await held(service, agent_id)
    assert set(copy) == {"farm/handbook.md", "farm/notes.txt"}
    handbook = copy["farm/handbook.md"]
    # Letta's files name no lines: the view the file carries is the one shown.
    assert handbook.is_open and handbook.view == letta["agents"][0]["files_agents"][0][
        "visible_content"]  # fmt: skip
    assert not copy["farm/notes.txt"].is_open
    state = await ok(await client.get(f"/v1/agents/{agent_id}"))
    assert [s["id"] for s in state["sources"]] == [folder.id]
    await drain(service)
    records = await service.list_files(folder.id, Page())
    assert [r.processing_status for r in records] == ["completed", "completed"]
    grep = await service.run_file_tool(agent_id, "grep_files", {"pattern": "buoy"})
    assert "Buoy 7 needs a new light" in grep
    # Imported again: another folder, whose name takes a suffix, with files of its own.
    await ok(await client.post("/v1/agents/import", files=upload(letta)))
    names = sorted(f.name for f in await service.list_folders(Page()))
    assert len(names) == 2 and names[0] == "farm" and names[1].startswith("farm_")


async def counts(client: QuartClient, service: AgentService) -> tuple[int, int, int]:
    agents = await ok(await client.get("/v1/agents/"))
    folders = await service.count_folders()
    raw = await service.store.transact(lambda tr: tr.get_prefix(keys.FILES.key()))
    return len(agents), folders, len(raw)


@pytest.mark.parametrize(
    ("spoil", "where", "said"),
    [
        (lambda f: f["files"][1].update(source_id="source-7"),
         ["body", "file", "files", 1, "source_id"], "no source with the file-local id"),
        (lambda f: f["agents"][0]["files_agents"][1].update(file_id="file-9"),
         ["body", "file", "agents", 0, "files_agents", 1, "file_id"], "no file with"),
        (lambda f: f["agents"][0]["source_ids"].append("source-3"),
         ["body", "file", "agents", 0, "source_ids", 1], "no source with"),
        (lambda f: f["agents"][0]["files_agents"][0].update(agent_id="agent-4"),
         ["body", "file", "agents", 0, "files_agents", 0, "agent_id"], "not the agent"),
        (lambda f: f["sources"].append(dict(f["sources"][0])),
         ["body", "file", "sources"], "two sources have the id"),
        (lambda f: f["sources"][0].update(name="x" * 20_000),
         ["body", "file", "sources", 0, "name"], "a folder's name has 20,000 bytes"),
    ],
)  # fmt: skip
async def test_bad_references_are_refused_and_write_nothing(
    app: tuple[QuartClient, AgentService], spoil: Any, where: list, said: str
) -> None:
    client, service = app
    before = await counts(client, service)
    letta = json.loads((LETTA / "folder_with_files_v2.af").read_text())
    spoil(letta)
    response = await client.post("/v1/agents/import", files=upload(letta))
    assert response.status_code == 422, await response.get_data()
    detail = (await response.get_json())["detail"]
    assert any(d["loc"] == where and said in d["msg"] for d in detail), detail
    assert await counts(client, service) == before


async def test_texts_past_the_budget_travel_without_content_and_import_as_errors(
    app: tuple[QuartClient, AgentService], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, service = app
    agent_id, _, _ = await a_reader(client, service)
    # Room for the PDF's text (about 170 bytes), not for the handbook's (344) as well.
    monkeypatch.setattr(agentfile_files, "CONTENT_BUDGET", 200)
    exported = await ok(await client.get(f"/v1/agents/{agent_id}/export"))
    contents = {f["original_file_name"]: f["content"] for f in exported["files"]}
    assert contents["handbook.md"] is None and "Neap tides" in contents["tides.pdf"], contents
    [copy_id] = (await ok(await client.post("/v1/agents/import", files=upload(exported))))[
        "agent_ids"
    ]
    await drain(service)
    by_name = {f["file_name"]: f for f in exported["files"]}
    copy = await held(service, copy_id)
    records = [
        r for f in await service.list_folders(Page()) if f.name != "farm"
        for r in await service.list_files(f.id, Page())
    ]  # fmt: skip
    [failed] = [r for r in records if r.processing_status == "error"]
    assert failed.error_message == NO_CONTENT
    assert by_name[f"farm/{failed.original_file_name}"]["content"] is None
    # The agent holds the file that came with its text, not the one without.
    assert [h.file_id for h in copy.values()] == [
        r.id for r in records if r.processing_status == "completed"
    ]


async def test_the_embedding_option_applies_to_the_folders_too(
    app: tuple[QuartClient, AgentService],
) -> None:
    client, service = app
    letta = json.loads((LETTA / "folder_with_files_v2.af").read_text())
    letta["sources"][0]["embedding_config"] = None  # so the option is what gives one
    response = await client.post(
        "/v1/agents/import", files=upload(letta),
        form={"embedding": "openai/text-embedding-3-small"},
    )  # fmt: skip
    await ok(response)
    [folder] = await service.list_folders(Page())
    assert folder.embedding_config["handle"] == "openai/text-embedding-3-small"
    before = await counts(client, service)
    response = await client.post(
        "/v1/agents/import", files=upload(letta), form={"embedding": "openai/no-such-model"}
    )
    assert response.status_code == 422
    assert await counts(client, service) == before
