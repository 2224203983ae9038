"""An agent's own embedding model embeds its passages and its searches' queries (Letta's way).

The server-wide model (`KELPIE_EMBEDDING_MODEL`) stays the default for agents that name none;
vectors of different models never meet in one vector search.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import trio

from kelpie_trio.api.app import create_app
from kelpie_trio.search import MemoryIndex, SearchLayer
from kelpie_trio.search.embedding_models import EmbeddingModels
from kelpie_trio.search.embeddings import Embedder, HashingEmbedder
from kelpie_trio.search.store_reads import VECTORS
from kelpie_trio.search.vectors import Vector, unpack_vector
from kelpie_trio.service import AgentService
from kelpie_trio.storage import MemoryStore, keys
from kelpie_trio.storage.base import Transaction

SIM = "sim/embedding"


class Counting(Embedder):
    """Counts the texts a model is asked to embed."""

    def __init__(self, inner: Embedder, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or inner.name
        self.texts: Counter[str] = Counter()

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        self.texts.update(texts)
        return await self.inner.embed(texts)


class Reversed(HashingEmbedder):
    """Another model as wide as the sim one: its vectors do not compare with the sim's."""

    def __init__(self) -> None:
        super().__init__(1536)
        self.name = "test/reversed-1536"

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        return await super().embed([t[::-1] for t in texts])


def setup(default: Embedder | None = None) -> tuple[AgentService, SearchLayer, Counting]:
    store = MemoryStore()
    service = AgentService(store, store.env)
    agents_model = Counting(HashingEmbedder(1536))
    models = EmbeddingModels(default, made={SIM: agents_model})
    service.search_layer = SearchLayer(store, store.env, models=models)
    return service, service.search_layer, agents_model


async def stored_vectors(service: AgentService, owner: str) -> dict[str, tuple[str, int]]:
    async def read(tr: Transaction) -> dict[str, tuple[str, int]]:
        found = {}
        for key, value in await tr.get_prefix(VECTORS.pack((owner, "passage"))):
            model, _, packed = keys.unpack(value)
            found[VECTORS.unpack(key)[2]] = (model, len(unpack_vector(packed)))
        return found

    return await service.store.transact(read)


async def test_an_agents_passages_are_embedded_by_its_model_once_when_written() -> None:
    default = Counting(HashingEmbedder(32))
    service, layer, model = setup(default)
    agent = (await service.create_agent({"name": "a", "embedding": SIM})).agent.id
    texts = ["The lighthouse keeper rows out at dawn.", "Quarterly tax forms are due soon."]
    made = [(await service.create_passages(agent, {"text": t}))[0].id for t in texts]
    assert model.texts == Counter(texts) and default.texts == Counter()
    assert await stored_vectors(service, agent) == dict.fromkeys(made, (model.name, 1536))

    [found] = await service.search_passages(agent, "ligthouse keper", top_k=1)
    assert found.passage.text == texts[0]  # no word in common: found by its vector
    assert model.texts == Counter([*texts, "ligthouse keper"]) and default.texts == Counter()
    # A new index (another node, a reindex) reads the stored vectors: nothing is embedded.
    again = SearchLayer(service.store, service.env, MemoryIndex("other"), models=layer.models)
    await again.indexer.catch_up(agent)
    assert model.texts == Counter([*texts, "ligthouse keper"])
    assert [d.vector_model for d in again.index.documents(agent, "passage")] == [model.name] * 2


async def test_words_that_match_nothing_find_the_nearest_passages_within_the_tag_filter() -> None:
    service, _, _ = setup()
    agent = (await service.create_agent({"name": "a", "embedding": SIM})).agent.id
    plain = (await service.create_agent({"name": "b"})).agent.id  # no model, no default
    for who in (agent, plain):
        await service.create_passages(
            who, {"text": "The kelp farm opens at dawn", "tags": ["farm"]}
        )
        await service.create_passages(who, {"text": "Ada likes green tea", "tags": ["ada"]})
    # Letta answers a search with the nearest passages, whatever the words.
    assert len(await service.search_passages(agent, "anything", top_k=5)) == 2
    [found] = await service.search_passages(agent, "anything", tags=["farm"])
    assert found.passage.text == "The kelp farm opens at dawn"
    # An agent without an embedding model (and no server-wide one) has its words only.
    assert await service.search_passages(plain, "anything", tags=["farm"]) == []


async def test_vectors_of_two_models_never_meet_in_one_search() -> None:
    """Two agents on different models (of one width) write into one shared archive: each
    agent's query is compared only with the vectors of its own model."""
    service, _, model = setup(Reversed())
    archive = (await service.create_archive({"name": "shared"})).id
    on_sim = (await service.create_agent({"name": "a", "embedding": SIM})).agent.id
    on_default = (await service.create_agent({"name": "b"})).agent.id
    for agent in (on_sim, on_default):
        await service.attach_archive(agent, archive, True)
    mine = (await service.create_passages(on_sim, {"text": "sailing boats"}))[0]
    theirs = (await service.create_passages(on_default, {"text": "mountain goats"}))[0]
    assert {mine.owner, theirs.owner} == {archive}
    assert await stored_vectors(service, archive) == {
        mine.id: (model.name, 1536),
        theirs.id: ("test/reversed-1536", 1536),
    }
    found = await service.search_passages(on_sim, "zzz", top_k=5)
    assert [r.passage.id for r in found] == [mine.id]
    found = await service.search_passages(on_default, "zzz", top_k=5)
    assert [r.passage.id for r in found] == [theirs.id]


async def test_an_unknown_embedding_model_is_a_422_at_create_and_update(
    nursery: trio.Nursery,
) -> None:
    store = MemoryStore()
    await nursery.start(store.run)
    app = create_app(store)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        refused = await client.post("/v1/agents/", json={"name": "a", "embedding": "nope/x"})
        assert refused.status_code == 422
        assert "embedding model 'nope/x' not found" in str(await refused.get_json())
        made = await (await client.post("/v1/agents/", json={"name": "a", "embedding": SIM})
                      ).get_json()  # fmt: skip
        refused = await client.patch(f"/v1/agents/{made['id']}", json={"embedding": "nope/x"})
        assert refused.status_code == 422
        kept = await (await client.get(f"/v1/agents/{made['id']}")).get_json()
        assert kept["embedding_config"]["handle"] == SIM


def test_a_handle_no_provider_here_serves_has_no_embedder() -> None:
    models = EmbeddingModels(None)
    assert models.for_handle("openai/text-embedding-3-small") is None  # no key configured
    assert models.for_handle(SIM).name == "sim/hashing-1536"
    assert models.for_handle(None) is None


async def test_an_archives_own_model_embeds_its_passages_and_its_searches() -> None:
    service, _, model = setup()
    archive = (await service.create_archive({"name": "facts", "embedding": SIM})).id
    await service.create_archive_passages(archive, {"text": "The kelp farm opens at dawn"},
                                          batch=False)  # fmt: skip
    assert model.texts == Counter(["The kelp farm opens at dawn"])
    found = await service.search_all_passages({"archive_id": archive, "query": "keelp"})
    assert [p.text for p, _ in found] == ["The kelp farm opens at dawn"]
    # Across every agent and archive the server's default model embeds the query (none
    # here): the words alone, which match nothing.
    assert await service.search_all_passages({"query": "keelp"}) == []
