"""The `archives` scenario: shared archives under storage faults and indexer crashes (run by
`kelpie-trio sim --scenario archives` and tests/dst/test_dst_archives.py).

Two archives and three agents, through the real service: writers add passages to the
archives (one at a time and in batches) and delete some; the agents insert into their
archival memory (their own, or the archive attached to them, as Letta decides); an
attacher attaches and detaches archives, and one archive may be deleted; searchers search
by agent and with /v1/passages/search's use case. An indexer node runs the background
indexer and crashes now and then, restarting with its index or with a new empty one.

At the end, with faults off and the indexer left to run:

- every owner's documents in both indexes (the background one and the searchers' inline
  one) are exactly the store's passages of that owner: none lost, none twice, none that
  was deleted; an archive's passages are documents of the archive only, once, however
  many agents it is attached to;
- an agent finds, by search and by listing, every passage containing the word among its
  own and its attached archives', and none of an archive whose last acknowledged
  attachment change was a detach, nor of a deleted archive.
"""

from __future__ import annotations

import functools
from collections import Counter

import trio

from kelpie_trio.errors import NotFound
from kelpie_trio.search import MemoryIndex, SearchLayer
from kelpie_trio.search.embeddings import HashingEmbedder
from kelpie_trio.search.store_reads import read_agent_documents
from kelpie_trio.search.text import terms
from kelpie_trio.service import AgentService, Page
from kelpie_trio.service.passages import attached_archive_ids
from kelpie_trio.sim.faults import STORAGE_FAULTS, FaultConfig
from kelpie_trio.sim.search_scenario import CONFIG, crashing_indexer
from kelpie_trio.sim.world import SimWorld
from kelpie_trio.storage import StoreError, keys
from kelpie_trio.storage.base import Transaction

__all__ = ["ARCHIVE_FAULTS", "ArchiveStats", "archives_converge"]

ARCHIVE_FAULTS = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.08))
WORDS = ["tea", "garden", "river", "lantern", "piano", "harbor", "maple", "comet"]


class ArchiveStats(Counter):
    """What ran, by kind (archive inserts, attaches, detaches, indexer crashes, ...)."""

    def summary(self) -> str:
        return "archives: " + ", ".join(f"{k} {v}" for k, v in sorted(self.items()))


def _view(index: MemoryIndex, owner: str) -> set[tuple]:
    return {(d.key, d.text, d.tags, d.created_at) for d in index.documents(owner, "passage")}


async def _stored(tr: Transaction, owner: str) -> set[tuple]:
    return {
        (d.key, d.text, d.tags, d.created_at)
        for d in await read_agent_documents(tr, owner)
        if d.kind == "passage"
    }


async def archives_converge(world: SimWorld) -> ArchiveStats:
    stats = ArchiveStats()
    rng = world.rng("test")
    embedder = HashingEmbedder(dimensions=32) if world.seed % 2 else None
    api = world.new_node("api")
    api.store.max_attempts = 4  # give up sooner: failed writes, whose fate is unknown, happen
    service = AgentService(api.store, api.env)
    service.search_layer = SearchLayer(api.store, api.env, embedder=embedder, config=CONFIG)
    world.faults.enabled = False
    agents = [(await service.create_agent({"name": f"a{i}"})).agent.id for i in range(3)]
    archives = [(await service.create_archive({"name": f"r{i}"})).id for i in range(2)]
    world.faults.enabled = True

    # (agent, archive) -> the last attachment change acknowledged, None once one failed
    # (its fate is unknown: the commit may have landed).
    known: dict[tuple[str, str], bool | None] = {}
    deleted: set[str] = set()  # archives whose deletion was acknowledged
    durable = MemoryIndex("index-durable")
    final_layer: list[SearchLayer] = []
    indexer_up = trio.Event()

    indexer_node = functools.partial(
        crashing_indexer, world, rng, stats, durable,
        embedder=embedder, up=indexer_up, final_layer=final_layer,
    )  # fmt: skip

    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))

    async def archive_writer(archive_id: str) -> None:
        made: list[str] = []
        for _ in range(rng.randint(4, 9)):
            try:
                if made and rng.random() < 0.3:
                    await service.delete_archive_passage(
                        archive_id, made.pop(rng.randrange(len(made)))
                    )
                    stats["archive deletes"] += 1
                elif rng.random() < 0.4:
                    body = {"passages": [{"text": text(), "tags": ["b"]} for _ in range(3)]}
                    found = await service.create_archive_passages(archive_id, body, batch=True)
                    made += [p.id for p in found]
                    stats["archive batches"] += 1
                else:
                    body = {"text": text(), "tags": [rng.choice(["x", "y"])]}
                    found = await service.create_archive_passages(archive_id, body, batch=False)
                    made += [p.id for p in found]
                    stats["archive inserts"] += 1
            except StoreError:
                stats["writes failed"] += 1
            except NotFound:
                stats["writes to a deleted archive"] += 1
            await trio.sleep(rng.uniform(0.0, 0.5))

    async def agent_writer(agent_id: str) -> None:
        for _ in range(rng.randint(2, 5)):
            try:
                await service.create_passages(agent_id, {"text": text()})
                stats["agent inserts"] += 1
            except StoreError:
                stats["writes failed"] += 1
            await trio.sleep(rng.uniform(0.0, 1.0))

    async def attacher() -> None:
        for _ in range(rng.randint(6, 12)):
            agent_id, archive_id = rng.choice(agents), rng.choice(archives)
            attach = rng.random() < 0.6
            try:
                await service.attach_archive(agent_id, archive_id, attach)
                known[(agent_id, archive_id)] = attach
                stats["attaches" if attach else "detaches"] += 1
            except StoreError:
                known[(agent_id, archive_id)] = None
                stats["writes failed"] += 1
            except NotFound:
                stats["attach to a deleted archive"] += 1
            await trio.sleep(rng.uniform(0.0, 0.6))

    async def delete_one_archive() -> None:
        if rng.random() < 0.5:
            return
        await trio.sleep(rng.uniform(2.0, 5.0))
        try:
            await service.delete_archive(archives[1])
            deleted.add(archives[1])
            stats["archives deleted"] += 1
        except StoreError:
            stats["writes failed"] += 1

    async def searcher() -> None:
        for _ in range(8):
            try:
                if rng.random() < 0.5:
                    await service.search_passages(rng.choice(agents), rng.choice(WORDS))
                else:
                    body = {"query": rng.choice(WORDS), "archive_id": rng.choice(archives)}
                    await service.search_all_passages(body)
                stats["searches"] += 1
            except (StoreError, NotFound):
                stats["searches failed"] += 1
            await trio.sleep(rng.uniform(0.1, 1.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(indexer_node)
        await indexer_up.wait()
        for archive_id in archives:
            nursery.start_soon(archive_writer, archive_id)
        for agent_id in agents:
            nursery.start_soon(agent_writer, agent_id)
        nursery.start_soon(attacher)
        nursery.start_soon(delete_one_archive)
        nursery.start_soon(searcher)

    world.faults.enabled = False
    await trio.sleep(10)  # the background indexer catches up on its own

    owners = agents + archives

    async def truth(tr: Transaction) -> tuple[dict[str, set], dict[str, list[str]], set[str]]:
        docs = {owner: await _stored(tr, owner) for owner in owners}
        links = {a: await attached_archive_ids(tr, a) for a in agents}
        gone = {a for a in archives if not await tr.get_prefix(keys.ARCHIVES.pack((a,)))}
        return docs, links, gone

    # `gone` may hold more than `deleted`: a deletion whose answer was lost may have landed.
    stored, links, gone = await api.store.transact(truth)
    assert deleted <= gone
    [background] = final_layer
    inline = service.search_layer
    for agent_id in agents:  # the inline layer catches its owners up at a search
        await service.search_passages(agent_id, "tea")
    for archive_id in archives:
        if archive_id not in gone:
            await service.search_all_passages({"query": "tea", "archive_id": archive_id})
        else:
            await inline.indexer.catch_up(archive_id)
    for layer, name in ((background, "background"), (inline, "inline")):
        index = layer.index
        assert isinstance(index, MemoryIndex)
        for owner in owners:
            assert _view(index, owner) == stored[owner], (
                f"the {name} index's passages of {owner} differ from the store's"
            )
        total = sum(len(index.documents(owner, "passage")) for owner in owners)
        assert index._corpora["passage"].documents == total, (
            f"the {name} index counts a passage twice"
        )
        stats["documents checked"] += total
    for archive_id in gone:
        assert stored[archive_id] == set(), "a deleted archive kept passages"
        assert not any(archive_id in links[a] for a in agents), "a deleted archive is attached"

    # What each agent finds: its own and its attached archives' passages, nothing else.
    by_owner = {owner: {key for key, *_ in stored[owner]} for owner in owners}
    for agent_id in agents:
        for (who, archive_id), attached in known.items():
            if who != agent_id or attached is None:
                continue
            assert (archive_id in links[agent_id]) == (attached and archive_id not in gone), (
                f"{agent_id}'s attachment of {archive_id} is not the last acknowledged change"
            )
        visible = set().union(*(by_owner[o] for o in [agent_id, *links[agent_id]]))
        hidden = set().union(*(by_owner[o] for o in archives if o not in links[agent_id]))
        listed = await service.list_passages(agent_id, Page(limit=1000))
        assert {p.id for p in listed} == visible
        for word in WORDS:
            found = await service.search_passages(agent_id, word, top_k=1000)
            ids = {r.passage.id for r in found}
            assert ids <= visible and not ids & hidden, f"{agent_id} found what it cannot see"
            wanted = {p.id for p in listed if set(terms(word)) <= set(terms(p.text))}
            assert wanted <= ids, f"{agent_id} missed passages with {word!r}"
            stats["searches checked"] += 1

    async def leftovers(tr: Transaction) -> int:
        rows = await tr.get_prefix(keys.PASSAGES.pack((archives[0],)))
        return len(rows)

    stats["archive passages left"] += await api.store.transact(leftovers)
    return stats
