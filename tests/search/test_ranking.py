"""The sans-IO parts of search: terms, BM25, fusion, promotion, the memory index."""

from __future__ import annotations

import math

from kelpie_trio.search import MemoryIndex, Query
from kelpie_trio.search.documents import Document, Hit
from kelpie_trio.search.ranking import bm25_term, idf, order, rrf
from kelpie_trio.search.text import stem, terms

A = "agent-a"


def test_terms_fold_case_drop_stopwords_and_stem_word_forms_together() -> None:
    assert terms("The Gardens were gardening; a GARDENED garden!") == ["garden"] * 4
    assert [stem(w) for w in ("note", "notes", "noted")] == ["not"] * 3
    assert stem("running") == stem("runs") == "run"
    assert stem("cat") == "cat" and stem("category") == "category"  # no partial words


def test_bm25_rewards_rarer_terms_and_shorter_documents() -> None:
    assert idf(100, 1) > idf(100, 10) > 0
    assert idf(100, 90) == 1e-6  # FTS5's floor for terms in most documents
    assert bm25_term(1, 5, 10.0, 1.0) > bm25_term(1, 20, 10.0, 1.0)
    assert bm25_term(3, 10, 10.0, 1.0) > bm25_term(1, 10, 10.0, 1.0)


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = rrf([["a", "b"], ["b", "c"]], k=60)
    assert math.isclose(fused["b"], 1 / 62 + 1 / 61)
    assert max(fused, key=fused.__getitem__) == "b"


def test_promotion_orders_equals_by_retrievals_but_never_beats_relevance() -> None:
    hits = [Hit("old", 1.0, 1.0, retrievals=5), Hit("new", 1.0, 2.0), Hit("best", 2.0, 0.0)]
    assert [h.key for h in order(hits)] == ["best", "old", "new"]
    assert [h.key for h in order([Hit("x", 1.0, 1.0), Hit("y", 1.0, 2.0)])] == ["y", "x"]


async def _index(*docs: Document) -> MemoryIndex:
    index = MemoryIndex("index-test")
    assert await index.apply(A, expected=None, position=len(docs), upserts=docs)
    return index


def _doc(key: str, text: str, at: float = 0.0, **kw) -> Document:
    return Document("passage", A, key, text, at, **kw)


async def test_index_filters_by_agent_tags_and_dates_and_pages() -> None:
    index = await _index(
        _doc("1", "tea in the garden", 1.0, tags=("home",)),
        _doc("2", "green tea", 2.0, tags=("food", "home")),
        _doc("3", "tea again", 3.0, tags=("food",)),
    )
    await index.apply("agent-b", expected=None, position=1, upserts=[
        Document("passage", "agent-b", "9", "tea tea tea", 1.0)])  # fmt: skip

    async def keys(**kw) -> list[str]:
        return [h.key for h in await index.search(Query(A, "passage", "tea", limit=10, **kw))]

    assert sorted(await keys()) == ["1", "2", "3"]  # never agent-b's
    assert sorted(await keys(tags=("home",))) == ["1", "2"]
    assert await keys(tags=("food", "home"), tag_match_mode="all") == ["2"]
    assert sorted(await keys(start=2.0, end=3.0)) == ["2", "3"]
    first = await index.search(Query(A, "passage", "tea", limit=2))
    rest = await index.search(Query(A, "passage", "tea", limit=2, offset=2))
    assert len(first) == 2 and len(rest) == 1
    assert {h.key for h in first + rest} == {"1", "2", "3"}


async def test_index_apply_is_a_compare_and_set_on_the_position() -> None:
    index = await _index(_doc("1", "one"))
    assert not await index.apply(A, expected=0, position=5, upserts=[_doc("2", "two")])
    assert await index.position(A) == 1
    assert await index.apply(A, expected=1, position=2, deletes=[("passage", "1")])
    assert index.documents(A, "passage") == []


async def test_retrieved_documents_surface_first_among_equals() -> None:
    index = await _index(_doc("1", "memo", 1.0), _doc("2", "memo", 2.0))
    top = await index.search(Query(A, "passage", "memo", limit=1))
    assert [h.key for h in top] == ["2"]  # the newer, at first
    await index.note_retrievals(A, "passage", ["1", "1"])
    top = await index.search(Query(A, "passage", "memo", limit=1))
    assert [h.key for h in top] == ["1"]  # retrieved more often: first among equals
