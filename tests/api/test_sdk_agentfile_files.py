"""The official letta-client SDK against a real node: an agent with a folder of a Markdown
file and a PDF goes through export_file and import_file, and the copy reads its files in a
turn (a scripted OpenAI-compatible provider): it opens the PDF, greps the Markdown and
finds the PDF by a semantic search over the chunks the node's worker made of the text the
file brought."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from letta_client import AsyncLetta

from tests.api.letta_agent_file_shape import letta_shape_problems
from tests.api.test_sdk_folders import FILES, _processed, _system_prompt, node
from tests.llm.fake_providers import openai_completion


async def test_an_agent_with_a_folder_moves_by_agent_file_and_reads_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(90):
        async with node(tmp_path, monkeypatch) as (letta, fake):
            letta: AsyncLetta
            folder = await letta.folders.create(name="farm", description="the farm's papers")
            for name, kind in (("handbook.md", "text/markdown"), ("tides.pdf", "application/pdf")):
                made = await letta.folders.files.upload(
                    folder.id, file=(name, (FILES / name).read_bytes(), kind)
                )
                assert (await _processed(letta, folder.id, made.id)).processing_status == (
                    "completed"
                )
            agent = await letta.agents.create(name="reader", model="openai/gpt-4o-mini")
            await letta.agents.folders.attach(folder.id, agent_id=agent.id)
            held = {f.file_name: f for f in (await letta.agents.files.list(agent.id)).files}
            await letta.agents.files.close(held["farm/handbook.md"].file_id, agent_id=agent.id)

            text = await letta.agents.export_file(agent.id)
            exported = json.loads(text)
            assert letta_shape_problems(exported) == []
            assert [s["name"] for s in exported["sources"]] == ["farm"]
            assert sorted(f["original_file_name"] for f in exported["files"]) == [
                "handbook.md", "tides.pdf"]  # fmt: skip

            imported = await letta.agents.import_file(file=("reader.af", text.encode()))
            [copy_id] = imported.agent_ids
            [copy_folder] = [f async for f in letta.agents.folders.list(copy_id)]
            assert copy_folder.id != folder.id and copy_folder.name.startswith("farm_")
            assert copy_folder.description == "the farm's papers"
            files = {
                f.original_file_name: f async for f in letta.folders.files.list(copy_folder.id)
            }
            for record in files.values():
                done = await _processed(letta, copy_folder.id, record.id)
                assert done.processing_status == "completed", done.error_message
                assert done.chunks_embedded == done.total_chunks >= 1
            held = {f.file_name: f for f in (await letta.agents.files.list(copy_id)).files}
            pdf, md = f"{copy_folder.name}/tides.pdf", f"{copy_folder.name}/handbook.md"
            assert set(held) == {pdf, md}
            assert held[pdf].is_open and not held[md].is_open  # as the original held them

            fake.script(
                openai_completion(tool_calls=[
                    ("call_1", "open_files", {"file_requests": [
                        {"file_name": pdf, "offset": 3, "length": 2}]}),
                    ("call_2", "grep_files", {"pattern": "otters"}),
                    ("call_3", "semantic_search_files", {"query": "neap tides nursery"}),
                ]),
                openai_completion("Read them."),
            )  # fmt: skip
            reply = await letta.agents.messages.create(
                copy_id, messages=[{"role": "user", "content": "what do the papers say?"}]
            )
            returns = {m.tool_call_id: m for m in reply.messages
                       if m.message_type == "tool_return_message"}  # fmt: skip
            assert all(r.status == "success" for r in returns.values()), returns
            assert returns["call_1"].tool_return.startswith(f"* Opened {pdf} (lines 4-5)")
            assert f"{md}: 1 matches" in returns["call_2"].tool_return
            assert "Otters guard the longlines at night" in returns["call_2"].tool_return
            assert pdf in returns["call_3"].tool_return
            prompt = _system_prompt(fake)
            assert f'<directory name="{copy_folder.name}">' in prompt
            assert "4: Neap tides keep the nursery lines submerged." in prompt
