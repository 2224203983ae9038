"""The official letta-client SDK against a real node: folders of files that agents read.

A folder with a PDF, a DOCX and a Markdown file (tests/data/files): uploads answer at once
with `pending`, the node's file worker takes each to `completed` with its chunks; attached
to an agent, the folder gives it the file tools and its files (open, as Letta opens them),
which show in the agent's context; in one turn (a scripted OpenAI-compatible provider) the
agent opens a range of the PDF and greps the DOCX. The API's open/close/close_all change
what the agent's next request shows. Bad uploads are refused with a 4xx and leave nothing.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import letta_client
import pytest
import trio
from letta_client import AsyncLetta

from kelpie_trio.config import ServerConfig
from kelpie_trio.nursery.node import run_node
from tests.llm.fake_providers import FakeProvider, openai_completion, serving

FILES = Path(__file__).resolve().parents[1] / "data" / "files"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@asynccontextmanager
async def node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncLetta, FakeProvider]]:
    async with serving() as fake, trio.open_nursery() as nursery:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
        monkeypatch.setenv("KELPIE_MAX_UPLOAD_BYTES", "100000")
        stop = trio.Event()
        config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1)
        dispatcher = await nursery.start(
            functools.partial(run_node, config, shutdown=stop, handle_signals=False)
        )
        try:
            yield AsyncLetta(base_url=dispatcher.address, max_retries=0), fake
        finally:
            stop.set()


async def _processed(letta: AsyncLetta, folder_id: str, file_id: str) -> object:
    """The file once the worker is done with it (a bounded wait on its status)."""
    while True:
        record = await letta.folders.files.retrieve(file_id, folder_id=folder_id)
        if record.processing_status in ("completed", "error"):
            return record
        await trio.sleep(0.05)


def _system_prompt(fake: FakeProvider) -> str:
    [request] = [r for r in fake.received if r.path.endswith("/chat/completions")][-1:]
    return request.json["messages"][0]["content"]


async def test_a_folder_of_pdf_docx_and_markdown_read_by_an_agent_in_a_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(90):
        async with node(tmp_path, monkeypatch) as (letta, fake):
            folder = await letta.folders.create(name="farm", description="the farm's papers")
            assert folder.id.startswith("source-") and folder.name == "farm"
            uploads = {}
            kinds = {"handbook.md": "text/markdown", "tides.pdf": "application/pdf",
                     "minutes.docx": DOCX}  # fmt: skip
            for name, kind in kinds.items():
                made = await letta.folders.files.upload(
                    folder.id, file=(name, (FILES / name).read_bytes(), kind)
                )
                assert made.file_name == f"farm/{name}" and made.processing_status == "pending"
                uploads[name] = made.id
            for name, file_id in uploads.items():
                done = await _processed(letta, folder.id, file_id)
                assert done.processing_status == "completed", (name, done.error_message)
                assert done.total_chunks >= 1 and done.chunks_embedded == done.total_chunks
            listed = [f async for f in letta.folders.files.list(folder.id)]
            assert {f.id for f in listed} == set(uploads.values())
            text = await letta.folders.files.retrieve(
                uploads["tides.pdf"], folder_id=folder.id, include_content=True
            )
            assert "Neap tides keep the nursery lines submerged" in text.content

            agent = await letta.agents.create(name="reader", model="openai/gpt-4o-mini")
            await letta.agents.folders.attach(folder.id, agent_id=agent.id)
            assert [f.id async for f in letta.agents.folders.list(agent.id)] == [folder.id]
            assert await letta.folders.agents.list(folder.id) == [agent.id]
            tools = {t.name for t in (await letta.agents.retrieve(
                agent.id, include=["agent.tools"])).tools}  # fmt: skip
            assert {"open_files", "grep_files", "semantic_search_files"} <= tools
            state = await letta.agents.retrieve(agent.id)
            assert [s.id for s in state.sources] == [folder.id]
            blocks = {b.label: b for b in state.memory.file_blocks}
            assert set(blocks) == {f"farm/{n}" for n in uploads}
            assert blocks["farm/tides.pdf"].is_open
            assert "Neap tides" in blocks["farm/tides.pdf"].value
            held = await letta.agents.files.list(agent.id)
            assert {f.file_name for f in held.files} == {f"farm/{n}" for n in uploads}
            assert all(f.is_open for f in held.files)

            fake.script(
                openai_completion(tool_calls=[
                    ("call_1", "open_files", {"file_requests": [
                        {"file_name": "farm/tides.pdf", "offset": 3, "length": 2}]}),
                    ("call_2", "grep_files", {"pattern": "alvarez"}),
                    ("call_3", "semantic_search_files", {"query": "tides longlines"}),
                ]),
                openai_completion("Read them."),
            )  # fmt: skip
            reply = await letta.agents.messages.create(
                agent.id, messages=[{"role": "user", "content": "what do the papers say?"}]
            )
            returns = {m.tool_call_id: m for m in reply.messages
                       if m.message_type == "tool_return_message"}  # fmt: skip
            assert all(r.status == "success" for r in returns.values()), returns
            assert returns["call_1"].tool_return == (
                "* Opened farm/tides.pdf (lines 4-5) (previously full file)"
            )
            grep = returns["call_2"].tool_return
            assert "farm/minutes.docx: 1 matches" in grep
            assert "Ines Alvarez will order the replacement floats" in grep
            assert "farm/tides.pdf" in returns["call_3"].tool_return
            # The second request of the turn shows the window the model asked for.
            prompt = _system_prompt(fake)
            assert '<directory name="farm">' in prompt
            assert "[Viewing lines 4 to 5 (out of 5 lines)]" in prompt
            assert "4: Neap tides keep the nursery lines submerged." in prompt
            assert "1: Spring tides" not in prompt

            # The API's open/close change what the agent's next request shows.
            assert await letta.agents.files.close_all(agent.id) != []
            fake.script(openai_completion("ok"))
            await letta.agents.messages.create(
                agent.id, messages=[{"role": "user", "content": "hi"}]
            )
            prompt = _system_prompt(fake)
            assert "current_files_open=0" in prompt and "Neap tides" not in prompt
            await letta.agents.files.open(uploads["minutes.docx"], agent_id=agent.id)
            fake.script(openai_completion("ok"))
            await letta.agents.messages.create(
                agent.id, messages=[{"role": "user", "content": "hi"}]
            )
            prompt = _system_prompt(fake)
            assert "current_files_open=1" in prompt and "second boat" in prompt
            await letta.agents.files.close(uploads["minutes.docx"], agent_id=agent.id)
            opened = await letta.agents.files.list(agent.id, is_open=True)
            assert opened.files == []

            await letta.agents.folders.detach(folder.id, agent_id=agent.id)
            tools = {t.name for t in (await letta.agents.retrieve(
                agent.id, include=["agent.tools"])).tools}  # fmt: skip
            assert "open_files" not in tools
            assert (await letta.agents.files.list(agent.id)).files == []
            await letta.folders.delete(folder.id)
            with pytest.raises(letta_client.NotFoundError):
                await letta.folders.retrieve(folder.id)


async def test_bad_uploads_are_refused_and_change_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(60):
        async with node(tmp_path, monkeypatch) as (letta, _):
            folder = await letta.folders.create(name="inbox")
            with pytest.raises(letta_client.APIStatusError) as raised:
                await letta.folders.files.upload(
                    folder.id, file=("tool.exe", b"MZ\x90\x00", "application/octet-stream")
                )
            assert raised.value.status_code == 415
            assert "Unsupported file type" in raised.value.body["detail"]  # type: ignore[index]
            with pytest.raises(letta_client.APIStatusError) as raised:
                await letta.folders.files.upload(
                    folder.id, file=("big.txt", b"x" * 100_001, "text/plain")
                )
            assert raised.value.status_code == 413
            assert "at most 100000" in raised.value.body["detail"]  # type: ignore[index]
            with pytest.raises(letta_client.UnprocessableEntityError):
                await letta.folders.files.upload(folder.id, file=("empty.txt", b"", "text/plain"))
            with pytest.raises(letta_client.NotFoundError):
                await letta.folders.files.upload(
                    "source-00000000-0000-4000-8000-000000000000",
                    file=("a.txt", b"hello", "text/plain"),
                )
            assert [f async for f in letta.folders.files.list(folder.id)] == []

            # Accepted, then refused by the worker with its reason: never a crash or a hang.
            for name, kind, reason in (
                ("corrupt.pdf", "application/pdf", "the PDF is corrupt"),
                ("bomb.docx", DOCX, "zip bomb"),
            ):
                made = await letta.folders.files.upload(
                    folder.id, file=(name, (FILES / name).read_bytes(), kind)
                )
                done = await _processed(letta, folder.id, made.id)
                assert done.processing_status == "error" and reason in done.error_message
