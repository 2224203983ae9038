"""The search index interface, and the pure-Python BM25 index behind it.

An index is derived data: it holds `Document`s per agent and, per outbox
stream (an agent's, a conversation's, an archive's: see outbox.py), the
position it has applied. `apply` is a compare-and-set on a stream's position,
so two catch-ups racing for one stream (two tasks, or two processes on one
FTS5 file) can never let an older read overwrite a newer one: the loser's
batch is refused and it reads again. A document is fed by one stream only
(`outbox.in_scope`), so the stream's position orders every change to it.

`MemoryIndex` is the index of the memory store and of the simulator: plain
dicts, deterministic, no threads. `Fts5Index` (fts.py) is the SQLite store's,
in a file of its own. Both score with the same BM25 (ranking.py) over the
same terms (text.py).
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Iterable, Sequence

from kelpie_trio.search.documents import Document, Hit, Kind, Query
from kelpie_trio.search.outbox import in_scope, split_stream
from kelpie_trio.search.ranking import bm25_term, idf, order
from kelpie_trio.search.text import terms
from kelpie_trio.search.vectors import nearest
from kelpie_trio.storage.errors import StorageUnavailable

__all__ = ["DocRef", "IndexUnavailable", "MemoryIndex", "SearchIndex"]

DocRef = tuple[Kind, str]  # (kind, key) within one agent


class IndexUnavailable(StorageUnavailable):
    """The index's own storage failed (a full disk, a locked file): retry later.

    A StorageUnavailable, so a search it fails answers 503 with Retry-After."""


class SearchIndex(abc.ABC):
    """What the indexer writes and the search layer reads."""

    index_id: str  # names this index's cursors in the store

    @abc.abstractmethod
    async def position(self, stream: str) -> int | None:
        """The last position of the outbox stream applied here; None: never seen (rebuild)."""

    @abc.abstractmethod
    async def streams(self, owner: str) -> list[str]:
        """The streams of `owner` (an agent: its own and its conversations') that have a
        position here, including those of conversations deleted since."""

    @abc.abstractmethod
    async def apply(
        self,
        stream: str,
        *,
        expected: int | None,
        position: int | None,
        upserts: Sequence[Document] = (),
        deletes: Sequence[DocRef] = (),
        replace: bool = False,
    ) -> bool:
        """Apply one batch of `stream` if it is still at `expected` (None: unseen); then at
        `position` (None: forgotten, the stream's owner is gone).

        `deletes` are documents of the stream's owner. `replace` first drops every
        document the stream feeds (`outbox.in_scope`: a rebuild). False, with nothing
        changed, if another catch-up moved the stream meanwhile.
        """

    @abc.abstractmethod
    async def search(self, query: Query) -> list[Hit]:
        """The ranked hits for `query` (filters, BM25, promotion), one page of them."""

    @abc.abstractmethod
    async def search_vectors(
        self, query: Query, vector: Sequence[float], k: int, model: str | None = None
    ) -> list[Hit]:
        """The `k` admitted documents nearest to `vector` (cosine), best first; only documents
        whose vector came from `model` when it is given (another model's vectors do not
        compare with this one's, even at the same width)."""

    @abc.abstractmethod
    async def note_retrievals(self, agent_id: str, kind: Kind, keys: Iterable[str]) -> None:
        """These documents were returned by a search: each gains one retrieval."""

    @abc.abstractmethod
    async def warmed(self) -> bool:
        """Whether every agent of the store was once rebuilt here (`mark_warmed`); a new
        index, or one whose warm-up was cut short, is warmed (again) from the store."""

    @abc.abstractmethod
    async def mark_warmed(self) -> None: ...

    @abc.abstractmethod
    async def clear(self) -> None:
        """Forget everything (the first step of a full reindex)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass


class _Corpus:
    """BM25 statistics and postings of one kind of document."""

    def __init__(self) -> None:
        self.documents = 0
        self.total_length = 0
        self.frequency: Counter[str] = Counter()  # term -> documents containing it
        # (agent_id, term) -> {key: term frequency}
        self.postings: dict[tuple[str, str], dict[str, int]] = {}


class MemoryIndex(SearchIndex):
    """The whole index in dicts: deterministic, for the memory store and the simulator."""

    def __init__(self, index_id: str) -> None:
        self.index_id = index_id
        self._positions: dict[str, int] = {}
        self._warmed = False
        # (agent_id, kind, key) -> (document, term counts, length in terms)
        self._docs: dict[tuple[str, Kind, str], tuple[Document, Counter[str], int]] = {}
        self._by_agent: dict[tuple[str, Kind], set[str]] = {}
        self._corpora: dict[Kind, _Corpus] = {"passage": _Corpus(), "message": _Corpus()}
        self._retrievals: Counter[tuple[str, Kind, str]] = Counter()

    # -- writes ----------------------------------------------------------------

    def _remove(self, agent_id: str, kind: Kind, key: str) -> None:
        found = self._docs.pop((agent_id, kind, key), None)
        if found is None:
            return
        _, counts, length = found
        corpus = self._corpora[kind]
        corpus.documents -= 1
        corpus.total_length -= length
        for term in counts:
            corpus.frequency[term] -= 1
            if not corpus.frequency[term]:
                del corpus.frequency[term]
            posting = corpus.postings[(agent_id, term)]
            del posting[key]
            if not posting:
                del corpus.postings[(agent_id, term)]
        self._by_agent[(agent_id, kind)].discard(key)
        self._retrievals.pop((agent_id, kind, key), None)

    def _add(self, doc: Document) -> None:
        counts = Counter(terms(doc.text))
        length = sum(counts.values())
        corpus = self._corpora[doc.kind]
        corpus.documents += 1
        corpus.total_length += length
        for term, tf in counts.items():
            corpus.frequency[term] += 1
            corpus.postings.setdefault((doc.agent_id, term), {})[doc.key] = tf
        self._docs[(doc.agent_id, doc.kind, doc.key)] = (doc, counts, length)
        self._by_agent.setdefault((doc.agent_id, doc.kind), set()).add(doc.key)

    async def position(self, stream: str) -> int | None:
        return self._positions.get(stream)

    async def streams(self, owner: str) -> list[str]:
        return sorted(s for s in self._positions if split_stream(s)[0] == owner)

    async def apply(
        self,
        stream: str,
        *,
        expected: int | None,
        position: int | None,
        upserts: Sequence[Document] = (),
        deletes: Sequence[DocRef] = (),
        replace: bool = False,
    ) -> bool:
        if self._positions.get(stream) != expected:
            return False
        agent_id, _ = split_stream(stream)
        if replace:
            for kind in ("passage", "message"):
                for key in sorted(self._by_agent.get((agent_id, kind), ())):
                    if in_scope(stream, kind, key):
                        self._remove(agent_id, kind, key)
        for kind, key in deletes:
            self._remove(agent_id, kind, key)
        for doc in upserts:
            # A changed document keeps its retrievals: it is still the same memory.
            kept = self._retrievals.get((agent_id, doc.kind, doc.key), 0)
            self._remove(agent_id, doc.kind, doc.key)
            self._add(doc)
            if kept:
                self._retrievals[(agent_id, doc.kind, doc.key)] = kept
        if position is None:
            self._positions.pop(stream, None)
        else:
            self._positions[stream] = position
        return True

    async def note_retrievals(self, agent_id: str, kind: Kind, keys: Iterable[str]) -> None:
        for key in keys:
            if (agent_id, kind, key) in self._docs:
                self._retrievals[(agent_id, kind, key)] += 1

    # -- reads -----------------------------------------------------------------

    async def warmed(self) -> bool:
        return self._warmed

    async def mark_warmed(self) -> None:
        self._warmed = True

    async def clear(self) -> None:
        self.__init__(self.index_id)  # type: ignore[misc]

    def documents(self, agent_id: str, kind: Kind) -> list[Document]:
        """Every document of the agent of this kind, by key (for checks and tests)."""
        keys = sorted(self._by_agent.get((agent_id, kind), ()))
        return [self._docs[(agent_id, kind, k)][0] for k in keys]

    async def search(self, query: Query) -> list[Hit]:
        wanted = sorted(set(terms(query.text)))
        if not query.text.strip() or not wanted:
            hits = self._recent(query) if not query.text.strip() else []
        else:
            hits = self._ranked(query, wanted)
        return hits[query.offset : query.offset + query.limit]

    async def search_vectors(
        self, query: Query, vector: Sequence[float], k: int, model: str | None = None
    ) -> list[Hit]:
        docs = {}
        for key in self._by_agent.get((query.agent_id, query.kind), ()):
            doc = self._docs[(query.agent_id, query.kind, key)][0]
            if model is not None and doc.vector_model != model:
                continue
            if doc.vector is not None and query.admits(doc):
                docs[key] = doc
        ranked = nearest(vector, ((key, doc.vector) for key, doc in docs.items()), k)  # type: ignore[misc]
        return [
            Hit(key, score, docs[key].created_at,
                self._retrievals.get((query.agent_id, query.kind, key), 0))
            for key, score in ranked
        ]  # fmt: skip

    def _recent(self, query: Query) -> list[Hit]:
        """No query words: the admitted documents, newest first (no promotion)."""
        hits = []
        for key in self._by_agent.get((query.agent_id, query.kind), ()):
            doc = self._docs[(query.agent_id, query.kind, key)][0]
            if query.admits(doc):
                hits.append(Hit(key, 0.0, doc.created_at))
        return order(hits)

    def _ranked(self, query: Query, wanted: list[str]) -> list[Hit]:
        corpus = self._corpora[query.kind]
        average = corpus.total_length / corpus.documents if corpus.documents else 0.0
        scores: dict[str, float] = {}
        for term in wanted:
            posting = corpus.postings.get((query.agent_id, term))
            if not posting:
                continue
            weight = idf(corpus.documents, corpus.frequency[term])
            for key, tf in posting.items():
                length = self._docs[(query.agent_id, query.kind, key)][2]
                scores[key] = scores.get(key, 0.0) + bm25_term(tf, length, average, weight)
        hits = []
        for key, score in scores.items():
            doc = self._docs[(query.agent_id, query.kind, key)][0]
            if query.admits(doc):
                retrievals = self._retrievals.get((query.agent_id, query.kind, key), 0)
                hits.append(Hit(key, score, doc.created_at, retrievals))
        return order(hits)
