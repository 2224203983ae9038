"""The official letta-client SDK against a real node: archives shared by agents.

An archive made with client.archives, filled with client.archives.passages, attached to
two agents with client.agents.archives: both find its passages with archival_memory_search
in a turn (a scripted OpenAI-compatible provider), with /v1/passages/search and in their
archival-memory listing; detached, one no longer does; deleted, no one does.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import letta_client
import orjson
import pytest
import trio
from letta_client import AsyncLetta

from kelpie_trio.config import ServerConfig
from kelpie_trio.nursery.node import run_node
from tests.llm.fake_providers import FakeProvider, openai_completion, serving


@asynccontextmanager
async def node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncLetta, FakeProvider]]:
    async with serving() as fake, trio.open_nursery() as nursery:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
        stop = trio.Event()
        config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1)
        dispatcher = await nursery.start(
            functools.partial(run_node, config, shutdown=stop, handle_signals=False)
        )
        try:
            yield AsyncLetta(base_url=dispatcher.address, max_retries=0), fake
        finally:
            stop.set()


async def _search_in_a_turn(
    letta: AsyncLetta, fake: FakeProvider, agent_id: str, query: str
) -> list[dict]:
    """One turn whose model calls archival_memory_search(query): what the tool returned."""
    call = ("call_1", "archival_memory_search", {"query": query})
    fake.script(openai_completion(tool_calls=[call]), openai_completion("Found it."))
    reply = await letta.agents.messages.create(
        agent_id, messages=[{"role": "user", "content": f"look up {query}"}]
    )
    [returned] = [m for m in reply.messages if m.message_type == "tool_return_message"]
    assert returned.status == "success", returned.tool_return
    return orjson.loads(returned.tool_return)


async def test_an_archive_shared_by_two_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(60):
        async with node(tmp_path, monkeypatch) as (letta, fake):
            archive = await letta.archives.create(name="handbook", description="team facts")
            assert archive.id.startswith("archive-") and archive.name == "handbook"
            first = await letta.archives.passages.create(
                archive.id, text="The kelp farm opens at dawn", tags=["farm"]
            )
            assert first.archive_id == archive.id and first.tags == ["farm"]
            more = await letta.archives.passages.create_many(
                archive.id,
                passages=[
                    {"text": "Otters guard the kelp at night"},
                    {"text": "Tide tables hang by the door", "metadata": {"page": 3}},
                ],
            )
            assert [p.text for p in more] == [
                "Otters guard the kelp at night",
                "Tide tables hang by the door",
            ]
            tools = ["archival_memory_search", "archival_memory_insert"]  # attached by name
            ada = await letta.agents.create(name="ada", model="openai/gpt-4o-mini", tools=tools)
            bob = await letta.agents.create(name="bob", model="openai/gpt-4o-mini", tools=tools)
            own = await letta.agents.passages.create(ada.id, text="Ada's own note on kelp")
            for agent in (ada, bob):
                await letta.agents.archives.attach(archive.id, agent_id=agent.id)
            attached = [a.id async for a in letta.archives.list(agent_id=bob.id)]
            assert attached == [archive.id]

            # Both agents find the archive's passages with their archival tool.
            for agent in (ada, bob):
                found = await _search_in_a_turn(letta, fake, agent.id, "kelp farm dawn")
                assert found[0]["content"] == "The kelp farm opens at dawn"
            found = await _search_in_a_turn(letta, fake, ada.id, "kelp")
            assert {r["content"] for r in found} >= {"Ada's own note on kelp", first.text}
            found = await _search_in_a_turn(letta, fake, bob.id, "kelp")
            assert "Ada's own note on kelp" not in {r["content"] for r in found}

            # /v1/passages/search: by agent (own and archives'), by archive, everything.
            by_agent = await letta.passages.search(agent_id=ada.id, query="kelp")
            assert {r.passage.id for r in by_agent} == {own[0].id, first.id, more[0].id}
            by_archive = await letta.passages.search(archive_id=archive.id, query="kelp")
            assert {r.passage.id for r in by_archive} == {first.id, more[0].id}
            tagged = await letta.passages.search(query="kelp", tags=["farm"])
            assert [r.passage.id for r in tagged] == [first.id]
            assert all(r.score > 0 for r in by_agent)
            listed = await letta.agents.passages.list(bob.id)
            assert {p.id for p in listed} == {first.id, *(p.id for p in more)}

            # Bob's inserts go to the archive, his only one (as Letta decides); Ada's stay hers.
            [bobs] = await letta.agents.passages.create(bob.id, text="Bob saw a seal")
            assert bobs.archive_id == archive.id
            [adas] = await letta.agents.passages.create(ada.id, text="Ada saw a seal")
            assert adas.archive_id != archive.id
            seal = await letta.passages.search(agent_id=ada.id, query="seal")
            assert {r.passage.id for r in seal} == {bobs.id, adas.id}

            # Detached: Bob no longer finds them; Ada still does.
            await letta.agents.archives.detach(archive.id, agent_id=bob.id)
            found = await _search_in_a_turn(letta, fake, bob.id, "kelp farm dawn")
            assert found == []
            assert await letta.agents.passages.list(bob.id) == []
            found = await _search_in_a_turn(letta, fake, ada.id, "kelp farm dawn")
            assert found[0]["content"] == "The kelp farm opens at dawn"

            await letta.archives.passages.delete(first.id, archive_id=archive.id)
            by_archive = await letta.passages.search(archive_id=archive.id, query="kelp")
            assert {r.passage.id for r in by_archive} == {more[0].id}
            with pytest.raises(letta_client.NotFoundError):
                await letta.archives.passages.delete(first.id, archive_id=archive.id)

            renamed = await letta.archives.update(archive.id, name="manual")
            assert renamed.name == "manual" and renamed.description == "team facts"
            assert (await letta.archives.retrieve(archive.id)).name == "manual"
            await letta.archives.delete(archive.id)
            with pytest.raises(letta_client.NotFoundError):
                await letta.archives.retrieve(archive.id)
            by_agent = await letta.passages.search(agent_id=ada.id, query="kelp seal")
            assert {r.passage.id for r in by_agent} == {own[0].id, adas.id}
            assert [a.id async for a in letta.archives.list()] == []


async def test_archive_requests_a_client_gets_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(60):
        async with node(tmp_path, monkeypatch) as (letta, _):
            missing = "archive-00000000-0000-4000-8000-000000000000"
            with pytest.raises(letta_client.NotFoundError):
                await letta.archives.retrieve(missing)
            with pytest.raises(letta_client.UnprocessableEntityError):
                await letta.archives.retrieve("not-an-id")
            archive = await letta.archives.create(name="a")
            with pytest.raises(letta_client.UnprocessableEntityError):
                await letta.archives.passages.create(archive.id, text="")
            with pytest.raises(letta_client.UnprocessableEntityError):
                await letta.passages.search(query="x", limit=101)
            with pytest.raises(letta_client.NotFoundError):
                agent = "agent-00000000-0000-4000-8000-000000000000"
                await letta.agents.archives.attach(archive.id, agent_id=agent)
            with pytest.raises(letta_client.UnprocessableEntityError):
                await letta.archives.create(name="b", embedding="nobody/none")
