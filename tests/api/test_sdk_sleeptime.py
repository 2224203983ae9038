"""Sleeptime agents through a real node and letta-client, with a scripted provider: an agent
created with enable_sleeptime shows its group (multi_agent_group) and has a companion of
type sleeptime_agent holding the same blocks; after the group's frequency of turns the
companion's background run edits a shared block, and the primary's next prompt shows it;
deleting the primary deletes the companion."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from letta_client import AsyncLetta, NotFoundError

from kelpie_trio.config import ServerConfig
from kelpie_trio.nursery.node import run_node
from tests.llm.fake_providers import FakeProvider, openai_completion, serving


@asynccontextmanager
async def node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncLetta, FakeProvider, str]]:
    async with serving() as fake, trio.open_nursery() as nursery:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
        stop = trio.Event()
        config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1)
        dispatcher = await nursery.start(
            functools.partial(run_node, config, shutdown=stop, handle_signals=False)
        )
        try:
            yield AsyncLetta(base_url=dispatcher.address, max_retries=0), fake, dispatcher.address
        finally:
            stop.set()


async def test_a_sleeptime_companion_edits_a_shared_block_after_the_group_s_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(60):
        async with node(tmp_path, monkeypatch) as (letta, fake, base):
            agent = await letta.agents.create(
                model="openai/gpt-4o-mini",
                name="ada",
                enable_sleeptime=True,
                memory_blocks=[{"label": "human", "value": "Name: Ada"}],
            )
            group = agent.multi_agent_group
            assert group is not None and "multi_agent_group" in agent.model_fields_set
            assert group.manager_type == "sleeptime"
            assert group.manager_agent_id == agent.id
            assert group.sleeptime_agent_frequency == 5  # Letta's default
            [companion_id] = group.agent_ids
            companion = await letta.agents.retrieve(companion_id)
            assert companion.agent_type == "sleeptime_agent"
            assert companion.name == "ada-sleeptime"
            assert {t.name for t in companion.tools} == {
                "memory_insert", "memory_replace", "memory_rethink", "memory_finish_edits"
            }  # fmt: skip
            human = next(b for b in agent.blocks if b.label == "human")
            assert human.id in {b.id for b in companion.blocks}  # the same block, attached
            assert "memory_persona" in {b.label for b in companion.blocks}

            async with httpx.AsyncClient(base_url=base) as http:
                changed = await http.patch(
                    f"/v1/groups/{group.id}",
                    json={"manager_config": {"manager_type": "sleeptime",
                                             "sleeptime_agent_frequency": 2}},
                )  # fmt: skip
                assert changed.status_code == 200, changed.text
                assert changed.json()["sleeptime_agent_frequency"] == 2
                listed = await http.get(f"/v1/agents/{agent.id}/groups")
                assert [g["id"] for g in listed.json()] == [group.id]

            fake.script(
                openai_completion("Hello Ada."),
                openai_completion("Tea it is."),
                # The companion, in the background after the second turn.
                openai_completion(
                    tool_calls=[
                        ("i", "memory_insert", {"label": "human", "new_string": "Likes tea"})
                    ]
                ),
                openai_completion(tool_calls=[("f", "memory_finish_edits", {})]),
                openai_completion("Your tea is noted."),
            )
            for text in ("Hi, I am Ada.", "I like tea."):
                await letta.agents.messages.create(
                    agent.id, messages=[{"role": "user", "content": text}]
                )
            while True:  # a client watching the companion's run
                runs = [r async for r in letta.runs.list(agent_id=companion_id)]
                if runs and runs[0].status == "completed":
                    break
                await trio.sleep(0.05)
            assert len(runs) == 1
            block = await letta.agents.blocks.retrieve("human", agent_id=agent.id)
            assert "Likes tea" in block.value
            # What the companion read: the two turns, as a transcript.
            seen = str(fake.received[2].json["messages"])
            assert "user: Hi, I am Ada." in seen and "assistant: Tea it is." in seen
            await letta.agents.messages.create(
                agent.id, messages=[{"role": "user", "content": "What do I like?"}]
            )
            assert "Likes tea" in str(fake.received[4].json["messages"][0])

            await letta.agents.delete(agent.id)
            with pytest.raises(NotFoundError):
                await letta.agents.retrieve(companion_id)
