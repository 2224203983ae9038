"""Archival memory: insert, list, delete and search an agent's passages.

Layout: each passage at `PASSAGES(owner, passage_id)` (chunked when large),
and `PASSAGE_INDEX(owner, created_us, passage_id)` for listing in creation
order; both are written and cleared in the same transaction, so a passage is
never without its index entry. The owner is the agent for its own archival
memory (Letta's default archive of the agent) and the archive for an
archive's passages (service/archives.py). An agent sees its own passages and
those of the archives attached to it (`AGENT_ARCHIVES`, with the reverse
`ARCHIVE_AGENTS`, both written in one transaction). Searches go through the
search layer, which indexes each owner once.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from kelpie_trio.errors import Invalid, NotFound, TooLarge
from kelpie_trio.llm.catalog import DEFAULT_EMBEDDING_CHUNK_SIZE
from kelpie_trio.models import convert
from kelpie_trio.models.agents import Agent
from kelpie_trio.models.archives import insert_owner
from kelpie_trio.models.passages import (
    CHARS_PER_TOKEN,
    DEFAULT_TOP_K,
    MAX_INSERT_CHARS,
    CreateArchivalMemory,
    Passage,
    SearchQuery,
    SearchResult,
    default_archive_id,
    parse_timestamp,
    split_text,
)
from kelpie_trio.search import archival_search, outbox, search_layer
from kelpie_trio.search.documents import PASSAGE, embedding_handle, from_passage
from kelpie_trio.search.store_reads import VECTORS, set_vector
from kelpie_trio.search.vectors import Vector
from kelpie_trio.service.common import MAX_PAGE, Page, ServiceBase, micros, page_ids, read_record
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import clear_blob, set_blob

__all__ = [
    "AGENT_ARCHIVES",
    "ARCHIVE_AGENTS",
    "PASSAGE_INDEX",
    "PassageCases",
    "attached_archive_ids",
    "clear_agent_passages",
    "clear_passage",
    "detach_all_archives",
    "has_passages",
    "new_vectors",
    "passage_owners",
    "write_passage",
]

PASSAGE_INDEX = keys.ROOT["index"]["passages"]  # (owner, created_us, passage_id) -> b""
AGENT_ARCHIVES = keys.ROOT["index"]["agent_archives"]  # (agent_id, archive_id) -> (attached_us,)
ARCHIVE_AGENTS = keys.ROOT["index"]["archive_agents"]  # (archive_id, agent_id) -> b""


def clear_agent_passages(tr: Transaction, agent_id: str) -> None:
    """Every passage of an owner, its index entries and vectors (deleting the agent or
    archive)."""
    for subspace in (keys.PASSAGES, PASSAGE_INDEX):
        where = subspace.range((agent_id,))
        tr.clear_range(where.start, where.stop)
    tr.clear_range(*keys.prefix_range(VECTORS.pack((agent_id, PASSAGE))))


def _passage_key(owner: str, passage_id: str) -> bytes:
    return keys.PASSAGES.pack((owner, passage_id))


def write_passage(
    tr: Transaction, passage: Passage, vector: tuple[str, Vector] | None = None
) -> None:
    """The passage and its index entry; and its vector, (model, vector), when it was
    embedded on its way in (the indexer then reads it instead of embedding again)."""
    set_blob(tr, _passage_key(passage.owner, passage.id), convert.encode_record(passage))
    tr.set(PASSAGE_INDEX.pack((passage.owner, micros(passage.created_at), passage.id)), b"")
    if vector is not None:
        set_vector(tr, from_passage(passage), *vector)


def clear_passage(tr: Transaction, passage: Passage) -> None:
    clear_blob(tr, _passage_key(passage.owner, passage.id))
    tr.clear(PASSAGE_INDEX.pack((passage.owner, micros(passage.created_at), passage.id)))
    tr.clear(VECTORS.pack((passage.owner, PASSAGE, passage.id)))


def new_vectors(
    embedded: tuple[str, list[Vector]] | None, count: int
) -> list[tuple[str, Vector] | None]:
    """One (model, vector) per new passage from what `SearchLayer.embed_new` made, or Nones."""
    if embedded is None or len(embedded[1]) != count:
        return [None] * count
    return [(embedded[0], vector) for vector in embedded[1]]


async def has_passages(tr: Transaction, owner: str) -> bool:
    return bool(await tr.get_prefix(PASSAGE_INDEX.pack((owner,)), limit=1))


async def attached_archive_ids(tr: Transaction, agent_id: str) -> list[str]:
    """The archives attached to the agent, in the order they were attached."""
    rows = await tr.get_prefix(AGENT_ARCHIVES.pack((agent_id,)))
    found = [(keys.unpack(v)[0], AGENT_ARCHIVES.unpack(k)[1]) for k, v in rows]
    return [archive_id for _, archive_id in sorted(found)]


async def passage_owners(tr: Transaction, agent_id: str) -> list[str]:
    """Whose passages the agent sees: its own, then its archives'."""
    return [agent_id, *await attached_archive_ids(tr, agent_id)]


async def detach_all_archives(tr: Transaction, agent_id: str) -> None:
    """Forget the agent's attachments both ways (deleting the agent); the archives stay."""
    for archive_id in await attached_archive_ids(tr, agent_id):
        tr.clear(ARCHIVE_AGENTS.pack((archive_id, agent_id)))
    tr.clear_range(*keys.prefix_range(AGENT_ARCHIVES.pack((agent_id,))))


def _moment(loc: list[str | int], value: str | None, *, end_of_day: bool = False) -> float | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value, end_of_day=end_of_day)
    except ValueError:
        raise Invalid.field(loc, "expected an ISO 8601 date or date-time") from None


def _local_iso(seconds: float, timezone: str | None) -> str:
    try:
        zone: dt.tzinfo = zoneinfo.ZoneInfo(timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC  # an unknown zone name must not fail a search
    return dt.datetime.fromtimestamp(seconds, zone).isoformat()


class PassageCases(ServiceBase):
    @staticmethod
    async def _owner(tr: Transaction, agent_id: str) -> Agent:
        agent = await read_record(tr, keys.AGENTS.pack((agent_id,)), Agent)
        if agent is None:
            raise NotFound("Agent", agent_id)
        return agent

    @staticmethod
    async def _find_passage(tr: Transaction, owners: list[str], passage_id: str) -> Passage | None:
        for owner in owners:
            found = await read_record(tr, _passage_key(owner, passage_id), Passage)
            if found is not None:
                return found
        return None

    async def create_passages(self, agent_id: str, body: Any) -> list[Passage]:
        """Insert text into the agent's archival memory: one passage, or several if long.

        The passages go where Letta 0.16.8 puts an agent's inserts (models.archives.
        insert_owner): the agent's own archive, or the archive attached to it.
        """
        if isinstance(body, dict) and isinstance(body.get("tags"), str):
            # cattrs would read a string as a list of its characters.
            raise Invalid.field(["body", "tags"], "expected a list of strings")
        create = convert.structure_api(body, CreateArchivalMemory)
        if not create.text.strip():
            raise Invalid.field(["body", "text"], "text must not be empty")
        if len(create.text) > MAX_INSERT_CHARS:
            raise TooLarge(
                f"text has {len(create.text)} characters; one insert takes at most "
                f"{MAX_INSERT_CHARS}"
            )
        created_at = _moment(["body", "created_at"], create.created_at)
        tags = list(dict.fromkeys(create.tags or []))

        def pieces(config: dict[str, Any] | None) -> list[str]:
            chunk_tokens = (config or {}).get("embedding_chunk_size")
            max_chars = (chunk_tokens or DEFAULT_EMBEDDING_CHUNK_SIZE) * CHARS_PER_TOKEN
            return split_text(create.text, max_chars)

        # Embedded by the agent's model before the write, as Letta does, and once: the
        # vectors go in the passages' transaction, whose retries do not embed again.
        asked = (await self.store.transact(lambda tr: self._owner(tr, agent_id))).embedding_config
        embedded = await search_layer(self).embed_new(embedding_handle(asked), pieces(asked))

        async def insert(tr: Transaction) -> list[Passage]:
            agent = await self._owner(tr, agent_id)
            owner = insert_owner(
                agent_id, await has_passages(tr, agent_id), await attached_archive_ids(tr, agent_id)
            )
            config = agent.embedding_config
            texts = pieces(config)
            # The agent's model changed meanwhile: the indexer embeds them by the new one.
            vectors = new_vectors(embedded if config == asked else None, len(texts))
            now = self.env.now()
            # Whole microseconds, one apart: the pieces list in the order of the text.
            start_us = micros(now if created_at is None else created_at)
            made = []
            # Ids are drawn per attempt: only the attempt that commits is ever seen.
            for i, text in enumerate(texts):
                passage = Passage(
                    id=self.env.new_id("passage"),
                    agent_id=agent_id if owner == agent_id else None,
                    text=text,
                    archive_id=default_archive_id(agent_id) if owner == agent_id else owner,
                    tags=list(tags),
                    embedding_config=config,
                    created_at=(start_us + i) / 1_000_000,
                    updated_at=now,
                )
                write_passage(tr, passage, vectors[i])
                made.append(passage)
            await outbox.record(tr, owner, passages=[p.id for p in made])
            return made

        return await self.store.transact(insert)

    async def list_passages(
        self, agent_id: str, page: Page, *, search: str | None = None
    ) -> list[Passage]:
        """The passages the agent sees (its own and its archives'), in creation order."""
        needle = search.casefold() if search else None

        async def listing(tr: Transaction) -> list[Passage]:
            await self._owner(tr, agent_id)
            owners = await passage_owners(tr, agent_id)
            cache: dict[tuple[str, str], Passage | None] = {}

            async def load(owner: str, ident: str) -> Passage | None:
                if (owner, ident) not in cache:
                    key = _passage_key(owner, ident)
                    cache[(owner, ident)] = await read_record(tr, key, Passage)
                return cache[(owner, ident)]

            async def position(ident: str) -> tuple | None:
                # A cursor is a passage of any of the owners: its place in every index.
                passage = await self._find_passage(tr, owners, ident)
                return None if passage is None else (micros(passage.created_at), passage.id)

            found: list[Passage] = []
            for owner in owners:

                async def keep(ident: str, owner: str = owner) -> bool:
                    passage = await load(owner, ident)
                    return passage is not None and needle in passage.text.casefold()

                ids = await page_ids(
                    tr, PASSAGE_INDEX[owner], page, position, keep if needle else None
                )
                found += [p for p in [await load(owner, i) for i in ids] if p is not None]
            # Each owner gave its first page; merged, the first `limit` of them are the page.
            found.sort(key=lambda p: (micros(p.created_at), p.id), reverse=page.order == "desc")
            return found[: min(page.limit or MAX_PAGE, MAX_PAGE)]

        return await self.store.transact(listing)

    async def delete_passage(self, agent_id: str, passage_id: str) -> None:
        async def delete(tr: Transaction) -> None:
            await self._owner(tr, agent_id)
            # Only what the agent sees: another agent's passage is simply not found here.
            passage = await self._find_passage(tr, await passage_owners(tr, agent_id), passage_id)
            if passage is None:
                raise NotFound("Passage", passage_id)
            clear_passage(tr, passage)
            await outbox.record(tr, passage.owner, passages=[passage_id])

        await self.store.transact(delete)

    async def search_passages(
        self,
        agent_id: str,
        query: str,
        *,
        tags: list[str] | None = None,
        tag_match_mode: str = "any",
        top_k: int | None = None,
        start_datetime: str | None = None,
        end_datetime: str | None = None,
    ) -> list[SearchResult]:
        if tag_match_mode not in ("any", "all"):
            raise Invalid.field(["query", "tag_match_mode"], "must be 'any' or 'all'")
        if top_k is not None and top_k < 1:
            raise Invalid.field(["query", "top_k"], "top_k must be at least 1")
        search = SearchQuery(
            query=query,
            tags=tuple(dict.fromkeys(tags or [])),
            tag_match_mode="all" if tag_match_mode == "all" else "any",
            top_k=top_k or DEFAULT_TOP_K,
            start=_moment(["query", "start_datetime"], start_datetime),
            end=_moment(["query", "end_datetime"], end_datetime, end_of_day=True),
        )

        async def owners_of(tr: Transaction) -> tuple[list[str], str | None]:
            agent = await self._owner(tr, agent_id)
            return await passage_owners(tr, agent_id), embedding_handle(agent.embedding_config)

        owners, model = await self.store.transact(owners_of)
        # The query is embedded by the agent's model (the index caught up first).
        hits = await archival_search(self, owners, search, model)

        async def find(tr: Transaction) -> list[SearchResult]:
            agent = await self._owner(tr, agent_id)
            seen = set(await passage_owners(tr, agent_id))  # detached meanwhile: not shown
            found = [await read_record(tr, _passage_key(o, i), Passage)
                     for o, i, _ in hits if o in seen]  # fmt: skip
            best = [p for p in found if p is not None]  # a passage deleted since is left out
            return [SearchResult(p, _local_iso(p.created_at, agent.timezone)) for p in best]

        return await self.store.transact(find)
