"""The FTS5 index (the SQLite store's) against the pure-Python one, and its file."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import attrs
import pytest

from kelpie_trio.search import MemoryIndex, Query
from kelpie_trio.search.documents import Document
from kelpie_trio.search.embeddings import HashingEmbedder
from kelpie_trio.search.fts import Fts5Index, index_path_for
from kelpie_trio.search.index import IndexUnavailable
from kelpie_trio.storage import StoreError
from tests.search.relevance import AGENT, evaluate, load_corpus


async def test_fts5_ranks_the_corpus_as_the_memory_index_does(tmp_path: Path) -> None:
    corpus = load_corpus()
    fts = await Fts5Index(tmp_path / "s.db", "index-fts").open()
    memory = MemoryIndex("index-memory")
    for index in (fts, memory):
        assert await index.apply(AGENT, expected=None, position=1, upserts=corpus.documents)
    for text, _ in corpus.queries[:60]:
        query = Query(AGENT, "passage", text, limit=10)
        a, b = await fts.search(query), await memory.search(query)
        assert [h.key for h in a] == [h.key for h in b], text
        assert all(math.isclose(x.score, y.score, rel_tol=1e-6) for x, y in zip(a, b, strict=True))

    async def search(text: str) -> list[str]:
        return [h.key for h in await fts.search(Query(AGENT, "passage", text, limit=10))]

    print(f"\nFTS5 BM25: {await evaluate(corpus, search)}")
    await fts.aclose()


async def test_fts5_keeps_positions_and_documents_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    doc = Document("message", AGENT, "3", "the harbour lights", 5.0, role="user")
    first = await Fts5Index(path, "index-one").open()
    assert await first.apply(AGENT, expected=None, position=4, upserts=[doc])
    assert not await first.apply(AGENT, expected=1, position=9, deletes=[("message", "3")])
    await first.mark_warmed()
    await first.aclose()
    again = await Fts5Index(path, "index-two").open()
    assert again.index_id == "index-one"  # the file's id: its cursors in the store are its own
    assert await again.position(AGENT) == 4 and await again.warmed()
    hits = await again.search(Query(AGENT, "message", "harbours", roles=("user",)))
    assert [h.key for h in hits] == ["3"]
    assert await again.search(Query(AGENT, "message", "harbour", roles=("assistant",))) == []
    assert await again.apply(AGENT, expected=4, position=5, deletes=[("message", "3")])
    assert await again.search(Query(AGENT, "message", "harbour")) == []
    await again.clear()
    assert await again.position(AGENT) is None and not await again.warmed()
    await again.aclose()


def test_the_index_file_sits_beside_the_store_file() -> None:
    assert index_path_for(Path("/d/kelpie.db")) == Path("/d/kelpie.search.db")


async def test_fts5_vector_search_matches_the_memory_index_and_sees_changes(
    tmp_path: Path,
) -> None:
    corpus = load_corpus()
    embedder = HashingEmbedder()
    docs = corpus.documents[:120]
    vectors = await embedder.embed([d.text for d in docs])
    docs = [attrs.evolve(d, vector=v) for d, v in zip(docs, vectors, strict=True)]
    fts = await Fts5Index(tmp_path / "s.db", "index-fts").open()
    memory = MemoryIndex("index-memory")
    for index in (fts, memory):
        assert await index.apply(AGENT, expected=None, position=1, upserts=docs)
    for text, _ in corpus.queries[:20]:
        [vector] = await embedder.embed([text])
        query = Query(AGENT, "passage", text, tags=("pets", "music"))
        a, b = (
            await fts.search_vectors(query, vector, 8),
            await memory.search_vectors(query, vector, 8),
        )
        assert [h.key for h in a] == [h.key for h in b], text
    [vector] = await embedder.embed([docs[0].text])
    query = Query(AGENT, "passage", docs[0].text)
    assert [h.key for h in await fts.search_vectors(query, vector, 1)] == [docs[0].key]
    assert await fts.apply(AGENT, expected=1, position=2, deletes=[("passage", docs[0].key)])
    assert docs[0].key not in [h.key for h in await fts.search_vectors(query, vector, 5)]
    await fts.aclose()


async def test_a_failing_index_file_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    index = Fts5Index(blocker / "s.db", "index-broken")
    with pytest.raises(IndexUnavailable) as caught:
        await index.open()
    assert isinstance(caught.value, StoreError) and caught.value.retryable  # 503 at the API


@pytest.mark.parametrize("kind", ["fts", "memory"])
async def test_a_vector_search_compares_only_vectors_of_the_querys_model(
    tmp_path: Path, kind: str
) -> None:
    index = await Fts5Index(tmp_path / "s.db", "i").open() if kind == "fts" else MemoryIndex("i")
    same = (1.0, 0.0)
    docs = [
        Document("passage", AGENT, "a", "x", 1.0, vector=same, vector_model="model-a"),
        Document("passage", AGENT, "b", "y", 2.0, vector=same, vector_model="model-b"),
    ]
    assert await index.apply(AGENT, expected=None, position=1, upserts=docs)
    query = Query(AGENT, "passage", "q")
    assert [h.key for h in await index.search_vectors(query, same, 5, "model-a")] == ["a"]
    assert [h.key for h in await index.search_vectors(query, same, 5, "model-b")] == ["b"]
    await index.aclose()


async def test_an_index_file_from_before_vector_models_is_rebuilt(tmp_path: Path) -> None:
    """Its vectors' model is unknown: it starts empty and unwarmed, so the indexer rebuilds
    it from the store (which keeps each vector with its model's name)."""
    import sqlite3

    path = tmp_path / "s.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE positions (agent_id TEXT PRIMARY KEY, position INTEGER NOT NULL);"
        "CREATE TABLE docs (id INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, kind TEXT NOT NULL,"
        " key TEXT NOT NULL, role TEXT, tags TEXT NOT NULL, created_at REAL NOT NULL,"
        " retrievals INTEGER NOT NULL DEFAULT 0, vector BLOB, UNIQUE (agent_id, kind, key));"
        "INSERT INTO meta VALUES ('index_id', 'index-old'), ('warmed', '1');"
        f"INSERT INTO positions VALUES ('{AGENT}', 7);"
        f"INSERT INTO docs (agent_id, kind, key, tags, created_at) VALUES ('{AGENT}', 'passage',"
        " 'p', '[]', 1.0);"
    )
    old.commit()
    old.close()
    index = await Fts5Index(path, "index-new").open()
    assert index.index_id == "index-old"
    assert await index.position(AGENT) is None and not await index.warmed()
    doc = Document("passage", AGENT, "p", "x", 1.0, vector=(1.0, 0.0), vector_model="m")
    assert await index.apply(AGENT, expected=None, position=7, upserts=[doc])
    query = Query(AGENT, "passage", "q")
    assert [h.key for h in await index.search_vectors(query, (1.0, 0.0), 1, "m")] == ["p"]
    await index.aclose()


@pytest.mark.parametrize("kind", ["fts", "memory"])
async def test_a_streams_rebuild_replaces_only_the_documents_it_feeds(
    tmp_path: Path, kind: str
) -> None:
    index = MemoryIndex("m") if kind == "memory" else await Fts5Index(tmp_path / "s.db", "f").open()
    conv, other = f"{AGENT}/conv-1", f"{AGENT}/conv-2"

    def doc(key: str, doc_kind: str = "message") -> Document:
        return Document(doc_kind, AGENT, key, f"lantern {key}", 1.0, role="user")  # type: ignore[arg-type]

    assert await index.apply(
        AGENT, expected=None, position=2, upserts=[doc("1"), doc("p", "passage")]
    )
    assert await index.apply(conv, expected=None, position=1, upserts=[doc("conv-1/0")])
    assert await index.apply(other, expected=None, position=1, upserts=[doc("conv-2/0")])
    assert await index.streams(AGENT) == [AGENT, conv, other]
    # A rebuild of one conversation's stream: the others' documents stay.
    assert await index.apply(conv, expected=1, position=3, upserts=[doc("conv-1/5")], replace=True)
    keys = {h.key for h in await index.search(Query(AGENT, "message", "lantern", limit=10))}
    assert keys == {"1", "conv-1/5", "conv-2/0"}
    # The agent's own stream: its passages and default messages only.
    assert await index.apply(AGENT, expected=2, position=4, replace=True)
    keys = {h.key for h in await index.search(Query(AGENT, "message", "lantern", limit=10))}
    assert keys == {"conv-1/5", "conv-2/0"}
    assert await index.search(Query(AGENT, "passage", "lantern")) == []
    # A deleted conversation's stream: its documents go and its position is forgotten.
    assert await index.apply(other, expected=1, position=None, replace=True)
    assert await index.position(other) is None and await index.streams(AGENT) == [AGENT, conv]
    await index.aclose()


async def test_an_index_file_from_before_streams_per_thread_is_rebuilt(tmp_path: Path) -> None:
    """Its positions were per agent: which conversations it had applied is unknown."""
    path = tmp_path / "s.db"
    old = await Fts5Index(path, "index-one").open()
    doc = Document("message", AGENT, "conv-1/3", "the harbour lights", 5.0, role="user")
    assert await old.apply(AGENT, expected=None, position=4, upserts=[doc])
    await old.mark_warmed()
    await old.aclose()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM meta WHERE key = 'format'")  # as the older version wrote it
    db.close()
    again = await Fts5Index(path, "index-two").open()
    assert again.index_id == "index-one"
    assert await again.position(AGENT) is None and not await again.warmed()
    assert await again.search(Query(AGENT, "message", "harbour")) == []
    await again.aclose()
