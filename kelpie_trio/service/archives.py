"""Archives: create, read, list, edit, delete; their passages; which agents they are attached to.

An archive is a record at `ARCHIVES(archive_id)` with a creation-order index;
its passages are stored as an agent's are, under the archive's id
(`PASSAGES(archive_id, passage_id)`, service/passages.py), and every write of
them records the change in the archive's own outbox stream, so the search
index holds an archive's passages once, however many agents see them.
Attaching is two keys written in one transaction (agent -> archive with the
time it was attached, archive -> agent); detaching clears both and touches no
passage: the agent's searches simply stop asking for the archive.

`POST /v1/passages/search` searches the passages of an agent (its own and its
archives'), of one archive, or of every agent and archive.
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.errors import Invalid, NotFound, TooLarge
from kelpie_trio.llm.catalog import UnknownModel
from kelpie_trio.models import convert
from kelpie_trio.models.agents import Agent
from kelpie_trio.models.archives import (
    MAX_BATCH_CHARS,
    MAX_BATCH_PASSAGES,
    Archive,
    CreateArchive,
    CreateArchivePassage,
    CreateArchivePassages,
    PassageSearchRequest,
    UpdateArchive,
)
from kelpie_trio.models.passages import Passage, SearchQuery, parse_timestamp
from kelpie_trio.search import archival_search, outbox, search_layer
from kelpie_trio.search.documents import embedding_handle, tags_match
from kelpie_trio.service.common import Page, ServiceBase, micros, page_records, read_record
from kelpie_trio.service.limits import check_record
from kelpie_trio.service.passages import (
    AGENT_ARCHIVES,
    ARCHIVE_AGENTS,
    PASSAGE_INDEX,
    clear_agent_passages,
    clear_passage,
    new_vectors,
    passage_owners,
    write_passage,
)
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction, key_after
from kelpie_trio.storage.chunks import clear_blob, set_blob

__all__ = ["ARCHIVE_INDEX", "ArchiveCases"]

ARCHIVE_INDEX = keys.ROOT["index"]["archives"]  # (created_us, archive_id) -> b""
MAX_SEARCH_LIMIT = 100  # Letta's bound on POST /v1/passages/search's `limit`


def _archive_key(archive_id: str) -> bytes:
    return keys.ARCHIVES.pack((archive_id,))


def _when(loc: list[str | int], value: str | None, *, end_of_day: bool = False) -> float | None:
    if value is None or value == "":
        return None
    try:
        return parse_timestamp(str(value), end_of_day=end_of_day)
    except ValueError:
        raise Invalid.field(loc, "expected an ISO 8601 date or date-time") from None


def _tags(body: Any, loc: list[str | int]) -> None:
    if isinstance(body, dict) and isinstance(body.get("tags"), str):
        # cattrs would read a string as a list of its characters.
        raise Invalid.field([*loc, "tags"], "expected a list of strings")


class ArchiveCases(ServiceBase):
    async def _archive(self, tr: Transaction, archive_id: str) -> Archive:
        archive = await read_record(tr, _archive_key(archive_id), Archive)
        if archive is None:
            raise NotFound("Archive", archive_id)
        return archive

    @staticmethod
    async def _agent_record(tr: Transaction, agent_id: str) -> Agent:
        agent = await read_record(tr, keys.AGENTS.pack((agent_id,)), Agent)
        if agent is None:
            raise NotFound("Agent", agent_id)
        return agent

    @staticmethod
    def _write_archive(tr: Transaction, archive: Archive) -> None:
        set_blob(tr, _archive_key(archive.id), check_record(archive, "archive"))

    # -- the archive itself ----------------------------------------------------------

    async def create_archive(self, body: Any) -> Archive:
        create = convert.structure_api(body, CreateArchive)
        config = create.embedding_config
        if create.embedding is not None:
            try:
                config = self.catalog.embedding_config_for(create.embedding)
            except UnknownModel as error:
                raise Invalid.field(["body", "embedding"], str(error)) from None
        now = self.env.now()
        archive = Archive(
            id=self.env.new_id("archive"),
            name=create.name,
            description=create.description,
            embedding_config=config,
            metadata={},
            created_at=now,
            updated_at=now,
        )

        async def write(tr: Transaction) -> Archive:
            self._write_archive(tr, archive)
            tr.set(ARCHIVE_INDEX.pack((micros(archive.created_at), archive.id)), b"")
            return archive

        return await self.store.transact(write)

    async def get_archive(self, archive_id: str) -> Archive:
        return await self.store.transact(lambda tr: self._archive(tr, archive_id))

    async def update_archive(self, archive_id: str, body: Any) -> Archive:
        update = convert.structure_api(body, UpdateArchive)
        now = self.env.now()

        async def change(tr: Transaction) -> Archive:
            archive = await self._archive(tr, archive_id)
            changed = attrs.evolve(
                archive,
                name=update.name if update.name is not None else archive.name,
                description=update.description
                if update.description is not None
                else archive.description,
                updated_at=now,
            )
            self._write_archive(tr, changed)
            return changed

        return await self.store.transact(change)

    async def list_archives(
        self, page: Page, *, name: str | None = None, agent_id: str | None = None
    ) -> list[Archive]:
        async def listing(tr: Transaction) -> list[Archive]:
            attached: set[str] | None = None
            if agent_id is not None:
                await self._agent_record(tr, agent_id)
                rows = await tr.get_prefix(AGENT_ARCHIVES.pack((agent_id,)))
                attached = {AGENT_ARCHIVES.unpack(k)[1] for k, _ in rows}

            def keep(archive: Archive) -> bool:
                if name is not None and archive.name != name:
                    return False
                return attached is None or archive.id in attached

            return await page_records(tr, ARCHIVE_INDEX, page, _archive_key, Archive, keep)

        return await self.store.transact(listing)

    async def delete_archive(self, archive_id: str) -> None:
        """The archive, its passages and its attachments, in one transaction."""

        async def delete(tr: Transaction) -> None:
            archive = await self._archive(tr, archive_id)
            clear_blob(tr, _archive_key(archive_id))
            tr.clear(ARCHIVE_INDEX.pack((micros(archive.created_at), archive_id)))
            clear_agent_passages(tr, archive_id)  # range clears: cheap for any size
            for key, _ in await tr.get_prefix(ARCHIVE_AGENTS.pack((archive_id,))):
                agent_id = ARCHIVE_AGENTS.unpack(key)[1]
                tr.clear(AGENT_ARCHIVES.pack((agent_id, archive_id)))
            tr.clear_range(*keys.prefix_range(ARCHIVE_AGENTS.pack((archive_id,))))
            await outbox.record(tr, archive_id, resync=True)  # the index forgets it

        await self.store.transact(delete)

    async def agents_of_archive(self, archive_id: str) -> list[str]:
        async def listing(tr: Transaction) -> list[str]:
            await self._archive(tr, archive_id)
            rows = await tr.get_prefix(ARCHIVE_AGENTS.pack((archive_id,)))
            return [ARCHIVE_AGENTS.unpack(k)[1] for k, _ in rows]

        return await self.store.transact(listing)

    # -- attaching -------------------------------------------------------------------

    async def attach_archive(self, agent_id: str, archive_id: str, attach: bool) -> None:
        """Attach (or detach) an archive; doing it twice is the same as once.

        Letta 0.16.8 allows one archive per agent (a second attach is a 409 there);
        here an agent may hold several, and searches see them all.
        """
        now = self.env.now()

        async def change(tr: Transaction) -> None:
            await self._agent_record(tr, agent_id)
            await self._archive(tr, archive_id)
            link = AGENT_ARCHIVES.pack((agent_id, archive_id))
            if attach:
                if await tr.get(link) is None:
                    tr.set(link, keys.pack((micros(now),)))
                    tr.set(ARCHIVE_AGENTS.pack((archive_id, agent_id)), b"")
            else:
                tr.clear(link)
                tr.clear(ARCHIVE_AGENTS.pack((archive_id, agent_id)))

        await self.store.transact(change)

    # -- an archive's passages -----------------------------------------------------

    def _new_archive_passage(
        self, archive: Archive, create: CreateArchivePassage, loc: list[str | int], now: float
    ) -> Passage:
        if not create.text.strip():
            raise Invalid.field([*loc, "text"], "text must not be empty")
        created_at = _when([*loc, "created_at"], create.created_at)
        return Passage(
            id=self.env.new_id("passage"),
            agent_id=None,
            text=create.text,
            archive_id=archive.id,
            tags=list(dict.fromkeys(create.tags or [])),
            metadata=dict(create.metadata or {}),
            embedding_config=archive.embedding_config,
            created_at=now if created_at is None else created_at,
            updated_at=now,
        )

    async def create_archive_passages(
        self, archive_id: str, body: Any, *, batch: bool
    ) -> list[Passage]:
        """One passage (POST .../passages) or several (POST .../passages/batch), all or none."""
        if batch:
            if isinstance(body, dict) and isinstance(body.get("passages"), list):
                for i, item in enumerate(body["passages"]):
                    _tags(item, ["body", "passages", i])
            creates = convert.structure_api(body, CreateArchivePassages).passages
            locs: list[list[str | int]] = [["body", "passages", i] for i in range(len(creates))]
        else:
            _tags(body, ["body"])
            creates = [convert.structure_api(body, CreateArchivePassage)]
            locs = [["body"]]
        if len(creates) > MAX_BATCH_PASSAGES:
            raise TooLarge(f"{len(creates)} passages; one batch takes at most {MAX_BATCH_PASSAGES}")
        total = sum(len(c.text) for c in creates)
        if total > MAX_BATCH_CHARS:
            raise TooLarge(
                f"{total} characters of text; one request takes at most {MAX_BATCH_CHARS}"
            )
        now = self.env.now()
        for create, loc in zip(creates, locs, strict=True):
            if not create.text.strip():  # refused before anything is embedded
                raise Invalid.field([*loc, "text"], "text must not be empty")
        # Embedded by the archive's model before the write, once (see create_passages).
        archive = await self.store.transact(lambda tr: self._archive(tr, archive_id))
        asked = archive.embedding_config
        texts = [c.text for c in creates]
        embedded = await search_layer(self).embed_new(embedding_handle(asked), texts)

        async def insert(tr: Transaction) -> list[Passage]:
            archive = await self._archive(tr, archive_id)
            vectors = new_vectors(
                embedded if archive.embedding_config == asked else None, len(texts)
            )
            # Ids are drawn per attempt: only the attempt that commits is ever seen.
            made = [
                self._new_archive_passage(archive, create, loc, now)
                for create, loc in zip(creates, locs, strict=True)
            ]
            for passage, vector in zip(made, vectors, strict=True):
                write_passage(tr, passage, vector)
            await outbox.record(tr, archive_id, passages=[p.id for p in made])
            return made

        return await self.store.transact(insert)

    async def delete_archive_passage(self, archive_id: str, passage_id: str) -> None:
        async def delete(tr: Transaction) -> None:
            await self._archive(tr, archive_id)
            key = keys.PASSAGES.pack((archive_id, passage_id))
            passage = await read_record(tr, key, Passage)
            if passage is None:
                raise NotFound("Passage", passage_id)
            clear_passage(tr, passage)
            await outbox.record(tr, archive_id, passages=[passage_id])

        await self.store.transact(delete)

    # -- POST /v1/passages/search ------------------------------------------------------

    async def _every_owner(self, tr: Transaction) -> list[str]:
        owners: list[str] = []
        for subspace in (keys.AGENTS, keys.ARCHIVES):
            begin, end = subspace.range().start, subspace.range().stop
            while True:
                rows = await tr.get_range(begin, end, limit=1)
                if not rows:
                    break
                owner = subspace.unpack(rows[0][0])[0]
                owners.append(owner)
                begin = subspace.range((owner,)).stop
        return owners

    async def search_all_passages(self, body: Any) -> list[tuple[Passage, float]]:
        """Passages of an agent (its own and its archives'), of an archive, or of all."""
        if isinstance(body, dict) and isinstance(body.get("tags"), str):
            raise Invalid.field(["body", "tags"], "expected a list of strings")
        request = convert.structure_api(body, PassageSearchRequest)
        if isinstance(request.limit, bool) or not 1 <= request.limit <= MAX_SEARCH_LIMIT:
            raise Invalid.field(
                ["body", "limit"], f"limit must be between 1 and {MAX_SEARCH_LIMIT}"
            )
        search = SearchQuery(
            query=request.query or "",
            tags=tuple(dict.fromkeys(request.tags or [])),
            tag_match_mode=request.tag_match_mode,
            top_k=request.limit,
            start=_when(["body", "start_date"], request.start_date),
            end=_when(["body", "end_date"], request.end_date, end_of_day=True),
        )

        async def owners_of(tr: Transaction) -> tuple[list[str], str | None]:
            """Whose passages, and the model that embeds the query: the agent's, the
            archive's, or (across everything) the server's default."""
            if request.agent_id is not None:  # Letta: the agent wins over the archive
                agent = await self._agent_record(tr, request.agent_id)
                owners = await passage_owners(tr, request.agent_id)
                return owners, embedding_handle(agent.embedding_config)
            if request.archive_id is not None:
                archive = await self._archive(tr, request.archive_id)
                return [request.archive_id], embedding_handle(archive.embedding_config)
            return await self._every_owner(tr), None

        owners, model = await self.store.transact(owners_of)
        if not owners:
            return []
        if not search.query.strip():
            return await self.store.transact(lambda tr: _oldest_first(tr, owners, search))
        hits = await archival_search(self, owners, search, model)

        async def load(tr: Transaction) -> list[tuple[Passage, float]]:
            found = []
            for owner, passage_id, score in hits:
                passage = await read_record(tr, keys.PASSAGES.pack((owner, passage_id)), Passage)
                if passage is not None:  # deleted since it was indexed: left out
                    found.append((passage, score))
            return found

        return await self.store.transact(load)


async def _oldest_first(
    tr: Transaction, owners: list[str], search: SearchQuery
) -> list[tuple[Passage, float]]:
    """A search without a query: the passages that pass its filters, oldest first, as
    Letta lists them then (no relevance: every score is 0)."""
    found: list[Passage] = []
    last = None if search.end is None else micros(search.end)
    for owner in owners:
        begin, end = PASSAGE_INDEX.range((owner,)).start, PASSAGE_INDEX.range((owner,)).stop
        if search.start is not None:
            begin = max(begin, PASSAGE_INDEX.pack((owner, micros(search.start))))
        mine = 0
        while mine < search.top_k and begin < end:
            rows = await tr.get_range(begin, end, limit=search.top_k)
            if not rows:
                break
            for key, _ in rows:
                _, created_us, passage_id = PASSAGE_INDEX.unpack(key)
                if last is not None and created_us > last:
                    begin = end  # the rest is later still
                    break
                passage = await read_record(tr, keys.PASSAGES.pack((owner, passage_id)), Passage)
                if passage is not None and tags_match(
                    passage.tags, search.tags, search.tag_match_mode
                ):
                    found.append(passage)
                    mine += 1
            else:
                begin = key_after(rows[-1][0])
    found.sort(key=lambda p: (micros(p.created_at), p.id))
    return [(p, 0.0) for p in found[: search.top_k]]
