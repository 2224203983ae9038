"""Archival memory: insert, list, delete and search an agent's passages.

Layout: each passage at `PASSAGES(agent_id, passage_id)` (chunked when
large), and `PASSAGE_INDEX(agent_id, created_us, passage_id)` for listing in
creation order; both are written and cleared in the same transaction, so a
passage is never without its index entry. The search here reads the agent's
passages from the store and ranks them with `models.passages.rank`; the
search index fed from the outbox is its own issue.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from kelpie_trio.errors import Invalid, NotFound, TooLarge
from kelpie_trio.llm.catalog import DEFAULT_EMBEDDING_CHUNK_SIZE
from kelpie_trio.models import convert
from kelpie_trio.models.agents import Agent
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
from kelpie_trio.search import archival_search, outbox
from kelpie_trio.service.common import Page, ServiceBase, micros, page_ids, read_record
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import clear_blob, set_blob

__all__ = ["PASSAGE_INDEX", "PassageCases", "clear_agent_passages"]

PASSAGE_INDEX = keys.ROOT["index"]["passages"]  # (agent_id, created_us, passage_id) -> b""


def clear_agent_passages(tr: Transaction, agent_id: str) -> None:
    """Every passage of an agent and its index entries (for deleting the agent)."""
    for subspace in (keys.PASSAGES, PASSAGE_INDEX):
        where = subspace.range((agent_id,))
        tr.clear_range(where.start, where.stop)


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
    def _key(agent_id: str, passage_id: str) -> bytes:
        return keys.PASSAGES.pack((agent_id, passage_id))

    @staticmethod
    def _index_key(passage: Passage) -> bytes:
        return PASSAGE_INDEX.pack((passage.agent_id, micros(passage.created_at), passage.id))

    async def create_passages(self, agent_id: str, body: Any) -> list[Passage]:
        """Insert text into the agent's archival memory: one passage, or several if long."""
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

        async def insert(tr: Transaction) -> list[Passage]:
            agent = await self._owner(tr, agent_id)
            config = agent.embedding_config
            chunk_tokens = (config or {}).get("embedding_chunk_size")
            max_chars = (chunk_tokens or DEFAULT_EMBEDDING_CHUNK_SIZE) * CHARS_PER_TOKEN
            now = self.env.now()
            # Whole microseconds, one apart: the pieces list in the order of the text.
            start_us = micros(now if created_at is None else created_at)
            made = []
            # Ids are drawn per attempt: only the attempt that commits is ever seen.
            for i, text in enumerate(split_text(create.text, max_chars)):
                passage = Passage(
                    id=self.env.new_id("passage"),
                    agent_id=agent_id,
                    text=text,
                    archive_id=default_archive_id(agent_id),
                    tags=list(tags),
                    embedding_config=config,
                    created_at=(start_us + i) / 1_000_000,
                    updated_at=now,
                )
                set_blob(tr, self._key(agent_id, passage.id), convert.encode_record(passage))
                tr.set(self._index_key(passage), b"")
                made.append(passage)
            await outbox.record(tr, agent_id, passages=[p.id for p in made])
            return made

        return await self.store.transact(insert)

    async def list_passages(
        self, agent_id: str, page: Page, *, search: str | None = None
    ) -> list[Passage]:
        needle = search.casefold() if search else None

        async def listing(tr: Transaction) -> list[Passage]:
            await self._owner(tr, agent_id)
            cache: dict[str, Passage | None] = {}

            async def load(ident: str) -> Passage | None:
                if ident not in cache:
                    cache[ident] = await read_record(tr, self._key(agent_id, ident), Passage)
                return cache[ident]

            async def position(ident: str) -> tuple | None:
                passage = await load(ident)
                return None if passage is None else (micros(passage.created_at), passage.id)

            async def keep(ident: str) -> bool:
                passage = await load(ident)
                return passage is not None and needle in passage.text.casefold()

            index = PASSAGE_INDEX[agent_id]
            ids = await page_ids(tr, index, page, position, keep if needle else None)
            found = [await load(i) for i in ids]
            return [p for p in found if p is not None]

        return await self.store.transact(listing)

    async def delete_passage(self, agent_id: str, passage_id: str) -> None:
        async def delete(tr: Transaction) -> None:
            await self._owner(tr, agent_id)
            # Keyed by agent: another agent's passage is simply not found here.
            passage = await read_record(tr, self._key(agent_id, passage_id), Passage)
            if passage is None:
                raise NotFound("Passage", passage_id)
            clear_blob(tr, self._key(agent_id, passage_id))
            tr.clear(self._index_key(passage))
            await outbox.record(tr, agent_id, passages=[passage_id])

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

        ids = await archival_search(self, agent_id, search)  # the index, caught up first

        async def find(tr: Transaction) -> list[SearchResult]:
            agent = await self._owner(tr, agent_id)
            found = [await read_record(tr, self._key(agent_id, i), Passage) for i in ids]
            best = [p for p in found if p is not None]  # a passage deleted since is left out
            return [SearchResult(p, _local_iso(p.created_at, agent.timezone)) for p in best]

        return await self.store.transact(find)
