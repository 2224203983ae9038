"""The search layer as the service and the agent loop use it.

One `SearchLayer` per service (so one per node): an index, the indexer that
feeds it, and the query path. A query first catches its agent up (bounded by
`wait_bound` seconds), so a search issued right after a write sees it; past
the bound it answers from the index as it stands (lagging, never wrong about
what exists: results are loaded from the store, and a record deleted since is
dropped). Every hit returned counts as one retrieval (promotion, ranking.py).

A service without a layer of its own (tests, tools) gets an in-memory one on
first use; the node sets the configured one and runs its indexer.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio

from kelpie_trio.agent.messages import Message
from kelpie_trio.env import Env
from kelpie_trio.errors import Invalid
from kelpie_trio.models import convert
from kelpie_trio.models.passages import SearchQuery, parse_timestamp
from kelpie_trio.search import outbox
from kelpie_trio.search.documents import MESSAGE, PASSAGE, Hit, Query, message_text
from kelpie_trio.search.embedding_models import EmbeddingModels
from kelpie_trio.search.embeddings import Embedder, EmbeddingError
from kelpie_trio.search.index import MemoryIndex, SearchIndex
from kelpie_trio.search.indexer import Indexer, IndexerConfig
from kelpie_trio.search.ranking import order, rrf
from kelpie_trio.search.vectors import Vector, pack_vector, unpack_vector
from kelpie_trio.storage import Store
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import get_blob

__all__ = [
    "CONVERSATION_DEFAULT_LIMIT",
    "SearchLayer",
    "archival_search",
    "archival_tool_results",
    "conversation_search",
    "search_layer",
]

log = logging.getLogger("kelpie_trio.search")

HYBRID_DEPTH = 50  # candidates taken from each ranking before fusion
CONVERSATION_DEFAULT_LIMIT = 10
CONVERSATION_MAX_LIMIT = 100
CONVERSATION_DEFAULT_ROLES = ("user", "assistant")


class SearchLayer:
    def __init__(
        self,
        store: Store,
        env: Env,
        index: SearchIndex | None = None,
        *,
        config: IndexerConfig | None = None,
        embedder: Embedder | None = None,
        models: EmbeddingModels | None = None,
        wait_bound: float = 2.0,
    ) -> None:
        self.store = store
        self.env = env
        self.index = index or MemoryIndex(env.new_id("index"))
        # `embedder` is the server's default model; `models` adds each agent's own.
        self.models = models or EmbeddingModels(embedder)
        self.indexer = Indexer(store, env, self.index, config, models=self.models)
        self.wait_bound = wait_bound

    @property
    def embedder(self) -> Embedder | None:
        """The server's default embedding model (None: BM25 alone for records naming none)."""
        return self.models.default

    async def embed_new(
        self, handle: str | None, texts: list[str]
    ) -> tuple[str, list[Vector]] | None:
        """Vectors for the texts of passages about to be written, from the model `handle`
        names (the writer's), as Letta embeds at insert: (the model's name, the vectors),
        written in the passages' own transaction so the indexer never embeds them again.
        None when no model serves the handle, or it failed: the indexer tries later."""
        embedder = self.models.for_handle(handle)
        if embedder is None or not texts:
            return None
        try:
            vectors = await embedder.embed(texts)
        except EmbeddingError as error:
            log.warning("search: new passages not embedded now, the indexer tries later: %s",
                        error)  # fmt: skip
            return None
        self.indexer.embedded += len(texts)
        # As stored (float32): the vector read back ranks exactly as this one.
        return embedder.name, [unpack_vector(pack_vector(v)) for v in vectors]

    async def search(self, query: Query, embedding: str | None = None) -> list[Hit]:
        """Catch the agent up (bounded), then rank; the hits returned count as retrieved."""
        return [hit for _, hit in await self.search_owners(query, [query.agent_id], embedding)]

    async def search_owners(
        self, query: Query, owners: list[str], embedding: str | None = None
    ) -> list[tuple[str, Hit]]:
        """`query` over the documents of several owners (an agent and its archives), ranked
        as one list: (owner, hit), best first. `embedding`: the handle of the searcher's
        embedding model (None: the server's default), which embeds the query; only vectors
        of that model are compared with it.

        An archive shared by many agents is indexed once, under its own id, so an
        agent's search is its own documents' and each archive's, merged. BM25's
        statistics are the whole index's (not an owner's), and cosine is absolute, so
        scores from different owners compare; fusion runs over the merged lists.
        """
        owners = list(dict.fromkeys(owners))
        with trio.move_on_after(self.wait_bound):
            for owner in owners:
                await self.indexer.catch_up(owner)
        found = await self._rank(query, owners, self.models.for_handle(embedding))
        for owner in owners:
            keys = [hit.key for who, hit in found if who == owner]
            if keys:
                await self.index.note_retrievals(owner, query.kind, keys)
        return found

    async def _lexical(self, query: Query, owners: list[str], depth: int) -> list[Hit]:
        hits: list[Hit] = []
        for owner in owners:
            page = attrs.evolve(query, agent_id=owner, offset=0, limit=depth)
            hits += [_tagged(owner, h) for h in await self.index.search(page)]
        return order(hits)[:depth]

    async def _rank(
        self, query: Query, owners: list[str], embedder: Embedder | None
    ) -> list[tuple[str, Hit]]:
        """BM25 alone, or BM25 and vectors merged by reciprocal rank fusion."""
        end = query.offset + query.limit
        if embedder is None or not query.text.strip():
            return _untagged((await self._lexical(query, owners, end))[query.offset : end])
        try:
            [vector] = await embedder.embed([query.text])
        except EmbeddingError as error:
            log.warning("search: the query was not embedded, BM25 alone: %s", error)
            return _untagged((await self._lexical(query, owners, end))[query.offset : end])
        depth = max(HYBRID_DEPTH, end * 2)
        lexical = await self._lexical(query, owners, depth)
        semantic: list[Hit] = []
        for owner in owners:
            mine = attrs.evolve(query, agent_id=owner)
            nearest = await self.index.search_vectors(mine, vector, depth, embedder.name)
            semantic += [_tagged(owner, h) for h in nearest]
        semantic = sorted(semantic, key=lambda h: -h.score)[:depth]  # stable: ties keep order
        fused = rrf([[h.key for h in lexical], [h.key for h in semantic]])
        seen = {h.key: h for h in [*semantic, *lexical]}
        hits = [attrs.evolve(seen[key], score=score) for key, score in fused.items()]
        return _untagged(order(hits)[query.offset : end])

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The indexer, as a child of the node's nursery; the index closes with it."""
        try:
            await self.indexer.run(task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                await self.index.aclose()
                await self.models.aclose()


_SEP = "\x1f"  # between an owner and a key while hits of several owners are merged


def _tagged(owner: str, hit: Hit) -> Hit:
    # The owner leads the key, so among equals the order stays the key's within an owner.
    return attrs.evolve(hit, key=f"{owner}{_SEP}{hit.key}")


def _untagged(hits: list[Hit]) -> list[tuple[str, Hit]]:
    found = []
    for hit in hits:
        owner, _, key = hit.key.partition(_SEP)
        found.append((owner, attrs.evolve(hit, key=key)))
    return found


def search_layer(service: Any) -> SearchLayer:
    """The service's search layer; an in-memory one is made on first use."""
    layer = getattr(service, "search_layer", None)
    if layer is None:
        layer = SearchLayer(service.store, service.env)
        service.search_layer = layer
    return layer


async def archival_search(
    service: Any, owners: list[str], search: SearchQuery, embedding: str | None = None
) -> list[tuple[str, str, float]]:
    """The passages of these owners (an agent and its archives) that best match `search`,
    best first: (owner, passage id, score). `embedding`: the handle of the searcher's
    embedding model (the agent's, or the archive's), None for the server's default."""
    query = Query(
        agent_id=owners[0],
        kind=PASSAGE,
        text=search.query,
        limit=search.top_k,
        tags=search.tags,
        tag_match_mode=search.tag_match_mode,
        start=search.start,
        end=search.end,
    )
    found = await search_layer(service).search_owners(query, owners, embedding)
    return [(owner, hit.key, hit.score) for owner, hit in found]


def archival_tool_results(results: list[Any]) -> list[dict[str, Any]]:
    """What the archival_memory_search tool returns to the model (Letta's shape)."""
    return [
        {"timestamp": r.timestamp, "content": r.passage.text, "tags": r.passage.tags}
        for r in results
    ]


def _when(name: str, value: Any, *, end_of_day: bool = False) -> float | None:
    if value is None or value == "":
        return None
    try:
        return parse_timestamp(str(value), end_of_day=end_of_day)
    except ValueError:
        raise Invalid.field([name], "expected an ISO 8601 date or date-time") from None


def _conversation_query(agent_id: str, args: dict[str, Any]) -> Query:
    roles = args.get("roles") or CONVERSATION_DEFAULT_ROLES
    if isinstance(roles, str):
        roles = [roles]
    limit = args.get("limit") or CONVERSATION_DEFAULT_LIMIT
    page = args.get("page") or 0
    if not isinstance(limit, int) or not isinstance(page, int) or limit < 1 or page < 0:
        raise Invalid.field(["limit"], "limit must be a positive integer, page at least 0")
    limit = min(limit, CONVERSATION_MAX_LIMIT)
    return Query(
        agent_id=agent_id,
        kind=MESSAGE,
        text=str(args.get("query") or ""),
        limit=limit,
        offset=page * limit,
        roles=tuple(str(r) for r in roles),
        start=_when("start_date", args.get("start_date")),
        end=_when("end_date", args.get("end_date"), end_of_day=True),
    )


async def conversation_search(service: Any, agent_id: str, args: dict[str, Any]) -> list[dict]:
    """conversation_search: the agent's messages that best match, best first.

    `args` as the tool takes them: query, roles (default user and assistant),
    limit (default 10), start_date, end_date, and page (Letta's older form).
    """
    query = _conversation_query(agent_id, args)
    hits = await search_layer(service).search(query)

    async def load(tr: Transaction) -> list[Message]:
        found = []
        for hit in hits:
            ref = int(hit.key) if hit.key.isdigit() else hit.key
            raw = await get_blob(tr, outbox.message_key(agent_id, ref))
            if raw is not None:
                found.append(convert.decode_record(raw, Message))
        return found

    messages = await service.store.transact(load)
    return [{"role": m.role, "content": message_text(m), "date": m.created_at} for m in messages]
