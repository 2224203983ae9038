"""letta-client against a real node: an agent's own embedding model (a strict fake OpenAI).

An agent created with `embedding="openai/text-embedding-3-small"` has its passages embedded
by that model (the provider's name for it, each text once, whether inserted through the API
or by the agent's archival_memory_insert in a turn), and its searches embed the query with
it: a query whose words match nothing finds the nearest passages, within a tag filter, as in
Letta. An agent that names no model (and no server-wide one) searches by words alone.
"""

from __future__ import annotations

import functools
from collections import Counter
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
from kelpie_trio.search.embeddings import HashingEmbedder
from tests.llm.fake_providers import FakeProvider, openai_completion, serving

MODEL = "openai/text-embedding-3-small"
_SPELLING = HashingEmbedder(1536)


def fake_vector(model: str, text: str) -> list[float]:
    """The fake's embedding: spelling-aware and deterministic, 1536 wide like the real one."""
    assert model == "text-embedding-3-small"
    return list(_SPELLING._one(text))


@asynccontextmanager
async def node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncLetta, FakeProvider]]:
    async with serving() as fake, trio.open_nursery() as nursery:
        fake.embed = fake_vector
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
        monkeypatch.delenv("KELPIE_EMBEDDING_MODEL", raising=False)
        stop = trio.Event()
        config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1)
        dispatcher = await nursery.start(
            functools.partial(run_node, config, shutdown=stop, handle_signals=False)
        )
        try:
            yield AsyncLetta(base_url=dispatcher.address, max_retries=0), fake
        finally:
            stop.set()


def embedded(fake: FakeProvider) -> Counter[str]:
    """Every text the fake was asked to embed, counted."""
    texts: Counter[str] = Counter()
    for sent in fake.received:
        if sent.path.endswith("/embeddings"):
            assert sent.json["model"] == "text-embedding-3-small"  # the provider's name
            assert sent.headers["authorization"] == "Bearer sk-test"
            texts.update(sent.json["input"])
    return texts


async def test_an_agents_embedding_model_embeds_its_passages_and_finds_the_nearest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with node(tmp_path, monkeypatch) as (letta, fake):
        agent = await letta.agents.create(
            model="openai/gpt-4o-mini", embedding=MODEL,
            tools=["archival_memory_insert", "archival_memory_search"],
        )  # fmt: skip
        plain = await letta.agents.create(model="openai/gpt-4o-mini")
        assert agent.embedding_config.handle == MODEL and plain.embedding_config is None
        texts = {"The lighthouse keeper rows out at dawn": ["sea"],
                 "Quarterly tax forms are due soon": ["money"]}  # fmt: skip
        for text, tags in texts.items():
            for who in (agent.id, plain.id):
                await letta.agents.passages.create(who, text=text, tags=tags)
        # The agent's own passages only; each text once. The plain agent's are not embedded.
        assert embedded(fake) == Counter(list(texts)) and fake.refused == []

        # In a turn, archival_memory_insert writes a passage, embedded by the agent's model.
        call = ("call_1", "archival_memory_insert", {"content": "Ada keeps bees", "tags": ["ada"]})
        fake.script(openai_completion(tool_calls=[call]), openai_completion("Noted."))
        await letta.agents.messages.create(agent.id, input="remember: Ada keeps bees")
        assert embedded(fake) == Counter([*texts, "Ada keeps bees"])

        found = await letta.agents.passages.search(agent.id, query="ligthouse keper", top_k=1)
        assert [r.content for r in found.results] == ["The lighthouse keeper rows out at dawn"]
        # Words that match nothing: the nearest passages, within the tag filter (Letta's way).
        found = await letta.agents.passages.search(agent.id, query="anything", tags=["money"])
        assert [r.content for r in found.results] == ["Quarterly tax forms are due soon"]
        assert len((await letta.agents.passages.search(agent.id, query="anything")).results) == 3
        none = await letta.agents.passages.search(plain.id, query="anything", tags=["money"])
        assert none.results == []

        # In a turn, archival_memory_search embeds the query by the agent's model too.
        call = ("call_2", "archival_memory_search", {"query": "beekeeping hobby"})
        fake.script(openai_completion(tool_calls=[call]), openai_completion("Bees."))
        reply = await letta.agents.messages.create(agent.id, input="what does Ada do?")
        [returned] = [m for m in reply.messages if m.message_type == "tool_return_message"]
        assert orjson.loads(returned.tool_return)[0]["content"] == "Ada keeps bees"
        # Passages were never embedded twice; only the queries were added.
        passages = Counter([*texts, "Ada keeps bees"])
        assert {t: n for t, n in embedded(fake).items() if t in passages} == passages
        assert fake.refused == []


async def test_an_unknown_embedding_model_is_refused_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with node(tmp_path, monkeypatch) as (letta, _):
        with pytest.raises(letta_client.UnprocessableEntityError, match="not found"):
            await letta.agents.create(model="openai/gpt-4o-mini", embedding="openai/nope")
        agent = await letta.agents.create(model="openai/gpt-4o-mini", embedding=MODEL)
        with pytest.raises(letta_client.UnprocessableEntityError, match="not found"):
            await letta.agents.update(agent.id, embedding="openai/nope")
        kept = await letta.agents.retrieve(agent.id)
        assert kept.embedding_config.handle == MODEL
        assert [a.id async for a in letta.agents.list()] == [agent.id]
