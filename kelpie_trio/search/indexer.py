"""The indexer: drains the outbox into one search index, and catches an owner up on demand.

`_catch_up(stream)` is the unit of work: read the stream's entries after the
index's position (and the records they name) in one snapshot, apply them to
the index with a compare-and-set on the stream's position, repeat until none
are left, then advance the index's cursor in the store and trim what every
consumer has applied. A stream the index has never seen, or whose entries were
trimmed past the index's position (or cleared: its head is below it), or that
says "resync", is rebuilt instead: every document the stream feeds (the agent
stream's: the owner's passages and default conversation's messages; a
conversation stream's: that conversation's messages), read in one snapshot
together with the stream's head. A rebuild of an agent's own stream re-reads
its conversations' streams too (rebuilding each in its own compare-and-set,
before the agent stream's position moves): entries of an older version put
every thread's changes on the agent stream. An entry there naming one
conversation's message makes that conversation's stream rebuild the same way.
A stream whose owner (agent, conversation) is gone rebuilds to nothing, its
position is forgotten, and once no live consumer needs it the stream is cleared
from the store (outbox.py).

`catch_up(owner)` catches up every stream of an owner that is behind (an
agent's own, its conversations', and any the index holds a position for, such
as a deleted conversation's; which of them are behind is read in one
snapshot), under a per-owner lock so two tasks of this process never
work on one agent's streams at once. `run` is the node's background task (a
child of the node's nursery): at start an empty index is warmed from the
store, owner by owner; then it finds the streams with entries past the index's
position and catches each up, polling, and heartbeats the index's
registration. A search calls `catch_up` itself before it reads the index
(read-your-writes); the lock keeps the two from doing the same work twice.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio

from kelpie_trio.env import Env
from kelpie_trio.search import outbox
from kelpie_trio.search.documents import Document
from kelpie_trio.search.embedding_models import EmbeddingModels
from kelpie_trio.search.embeddings import Embedder, EmbeddingError
from kelpie_trio.search.index import SearchIndex
from kelpie_trio.search.store_reads import (
    VECTORS,
    Batch,
    is_agent_stream,
    is_archive,
    read_batch,
    set_vector,
    stored_vectors,
    stream_exists,
    vector_range,
)
from kelpie_trio.search.vectors import Vector, pack_vector, unpack_vector
from kelpie_trio.storage import Store, StoreError, keys
from kelpie_trio.storage.base import Transaction, key_after

__all__ = ["Indexer", "IndexerConfig"]

log = logging.getLogger("kelpie_trio.search")


@attrs.frozen
class IndexerConfig:
    batch: int = 128  # outbox entries read per snapshot
    # Seconds between scans when nothing woke the indexer: entries written through this
    # node's store wake it at their commit; this poll finds those of other nodes (whose
    # searches catch up on their own anyway) and of commits whose outcome was unknown.
    poll_interval: float = 60.0
    # The registration lives `consumer_ttl`: renewing it at a fifth of that keeps it
    # alive through several failed renewals, and costs an idle node one commit in two
    # minutes.
    heartbeat_interval: float = 120.0
    consumer_ttl: float = 600.0  # a consumer silent this long no longer holds entries back
    scan_agents: int = 100  # streams looked at per scan of the outbox
    # Seconds a wake-up waits before draining, so that the commits behind it (one client's
    # turns, a few a second) share one drain instead of paying one each. Nothing waits on
    # the drain (a search catches its owners up first): a drain costs about the same for
    # one turn as for many, and one client's CPU per message was 7.0 ms at 1 s, 6.5 at 3 s.
    settle: float = 3.0
    error_backoff: float = 1.0


class Indexer:
    def __init__(
        self,
        store: Store,
        env: Env,
        index: SearchIndex,
        config: IndexerConfig | None = None,
        embedder: Embedder | None = None,
        models: EmbeddingModels | None = None,
    ) -> None:
        self.store = store
        self.env = env
        self.index = index
        self.config = config or IndexerConfig()
        # `embedder`: the server's default model, for documents that name none.
        self.models = models or EmbeddingModels(embedder)
        self.embedded = 0  # texts sent to an embedding model (here or, for passages, at write)
        self._locks: dict[str, trio.Lock] = {}
        self._wake = trio.Event()
        self._scan_from: bytes | None = None  # where the next outbox scan starts (None: first)
        self._scan_more = False  # the last scan stopped before the end of the outbox
        store.on_commit(outbox.NEW_ENTRIES, self.wake)
        self._last_heartbeat: float | None = None
        self.applied = 0  # batches applied (for tests and metrics)
        self.rebuilds = 0
        # Waiting with nothing it knows of left to apply: no wake-up pending, the last scan
        # reached the end of the outbox. A bench waits for it before it measures an idle
        # node; entries of other nodes and unknown commits only the next poll finds.
        self._waiting = False

    # -- one owner, one stream ------------------------------------------------------

    def _lock(self, owner: str) -> trio.Lock:
        return self._locks.setdefault(owner, trio.Lock())

    def _unlock(self, owner: str, lock: trio.Lock) -> None:
        if not lock.locked() and lock.statistics().tasks_waiting == 0:
            self._locks.pop(owner, None)

    async def catch_up(self, owner: str) -> int:
        """Apply every entry of the owner's streams committed before this call (an agent's:
        its own and each conversation's); the position of the owner's own stream."""
        lock = self._lock(owner)
        try:
            async with lock:
                for stream in await self._behind(owner):
                    await self._catch_up(stream)
                return await self.index.position(owner) or 0
        finally:
            self._unlock(owner, lock)

    async def _behind(self, owner: str) -> list[str]:
        """The owner's streams with something for this index, found in one snapshot (a
        search of an agent with many conversations reads each stream only when needed):
        the agent's own and its conversations', and those the index knows that the store
        no longer lists (a deleted conversation's documents go when its stream is caught
        up)."""
        known = await self.index.streams(owner) if not is_archive(owner) else [owner]
        positions = {stream: await self.index.position(stream) for stream in known}
        positions[owner] = await self.index.position(owner)

        async def look(tr: Transaction) -> list[str]:
            listed = [owner] if is_archive(owner) else await outbox.agent_streams(tr, owner)
            behind = []
            for stream in dict.fromkeys([*listed, *known]):
                at = positions.get(stream)
                if at is None:
                    behind.append(stream)  # never seen here: rebuilt
                    continue
                pending = await outbox.read_pending(tr, stream, at, limit=1)
                if (
                    pending.entries
                    or pending.trimmed > at
                    or (
                        await outbox.read_head(tr, stream) < at  # cleared: its owner is gone
                    )
                ):
                    behind.append(stream)
            return behind

        return await self.store.transact(look)

    async def catch_up_stream(
        self, stream: str, *, advances: dict[str, tuple[int, bool]] | None = None
    ) -> int:
        """Apply every entry of one stream committed before this call; its new position.

        `advances`: where the stream's cursor goes in the store, left there for the caller
        to record with others (`_advance_all`) instead of a commit of its own."""
        owner, _ = outbox.split_stream(stream)
        lock = self._lock(owner)
        try:
            async with lock:
                return await self._catch_up(stream, advances=advances)
        finally:
            self._unlock(owner, lock)

    async def _catch_up(
        self,
        stream: str,
        *,
        force: bool = False,
        advances: dict[str, tuple[int, bool]] | None = None,
    ) -> int:
        """`force`: rebuild the stream (an agent stream's rebuild, or an entry of an older
        version on it, named this conversation), until a rebuild is applied."""
        owner, _ = outbox.split_stream(stream)
        position = await self.index.position(stream)
        reached: tuple[int, bool] | None = None  # (position, gone) to record in the store
        while True:
            after = position
            batch = await self.store.transact(
                lambda tr, after=after, force=force: read_batch(
                    tr, stream, after, self.config.batch, force
                )
            )
            if not batch.rebuild and batch.position == after and not batch.threads:
                break  # nothing new
            threads = list(batch.threads)
            if batch.rebuild and is_agent_stream(stream):
                # And those the index holds that the store no longer lists (deleted).
                known = [s for s in await self.index.streams(owner) if s != stream]
                threads += [s for s in known if s not in threads]
            # First: once this stream's position moves past the entries naming them, no
            # one would rebuild them again.
            for thread in threads:
                await self._catch_up(thread, force=True)
            upserts = await self._with_vectors(stream, batch)
            applied = await self.index.apply(
                stream,
                expected=after,
                # A deleted thread's stream is forgotten: while its entries are held back
                # (another consumer lags), each scan finds it again, until it is dropped.
                position=None if batch.gone else batch.position,
                upserts=upserts,
                deletes=batch.deletes,
                replace=batch.rebuild,
            )
            if applied:
                self.applied += 1
                self.rebuilds += batch.rebuild
                force = False
                position = None if batch.gone else batch.position
                reached = (batch.position, batch.gone)
                if not batch.more:
                    break
            else:
                position = await self.index.position(stream)  # another process moved it
        if reached is not None:
            if advances is None:
                await self._advance_all({stream: reached})
            else:
                advances[stream] = reached
        return position or 0

    async def _with_vectors(self, stream: str, batch: Batch) -> list[Document]:
        """The batch's documents with their vectors, each from the model that embeds it (a
        passage's own, from its embedding_config; else the server's default): from the store
        when it has them for that model and text (a passage's, written with it), else from
        the model (then kept in the store). Vectors are best effort: a model that fails
        leaves documents to BM25 alone until reindexed."""
        agent_id, conversation = outbox.split_stream(stream)
        groups: dict[int, tuple[Embedder, list[Document]]] = {}
        for doc in batch.upserts:
            embedder = self.models.for_handle(doc.embedding) if doc.text.strip() else None
            if embedder is not None:
                groups.setdefault(id(embedder), (embedder, []))[1].append(doc)
        vectors: dict[tuple[str, str], tuple[str, Vector]] = {}
        for embedder, docs in groups.values():
            found = await self._vectors_of(agent_id, embedder, docs)
            vectors.update({ref: (embedder.name, vector) for ref, vector in found.items()})

        async def forget(tr: Transaction) -> None:
            # An empty rebuild is a deleted owner's only if it is still gone now: vectors
            # are also written with new passages, which may have committed since the read.
            if batch.rebuild and not batch.upserts and not await stream_exists(tr, stream):
                tr.clear_range(*vector_range(agent_id, conversation))
            for kind, key in batch.deletes:
                tr.clear(VECTORS.pack((agent_id, kind, key)))

        # Passages' vectors go with the passage (service/passages.py); messages' are the
        # default model's, made here, so only then is there anything left to clear.
        if self.models.default is not None and (
            batch.deletes or (batch.rebuild and not batch.upserts)
        ):
            try:
                await self.store.transact(forget)
            except StoreError as error:
                log.info("search: stale vectors of %s not cleared: %r", agent_id, error)
        return [
            attrs.evolve(d, vector=vectors[ref][1], vector_model=vectors[ref][0])
            if (ref := (d.kind, d.key)) in vectors
            else d
            for d in batch.upserts
        ]

    async def _vectors_of(
        self, agent_id: str, embedder: Embedder, docs: list[Document]
    ) -> dict[tuple[str, str], Vector]:
        model = embedder.name
        known = await self.store.transact(lambda tr: stored_vectors(tr, model, docs))
        missing = [d for d in docs if (d.kind, d.key) not in known]
        made: dict[tuple[str, str], Vector] = {}
        step = self.config.batch
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            try:
                vectors = await embedder.embed([d.text for d in chunk])
            except EmbeddingError as error:
                log.warning("search: no vectors for %d documents of %s: %s",
                            len(chunk), agent_id, error)  # fmt: skip
                continue
            self.embedded += len(chunk)
            # As stored (float32): a vector read back later ranks exactly as this one.
            vectors = [unpack_vector(pack_vector(v)) for v in vectors]
            made.update(zip(((d.kind, d.key) for d in chunk), vectors, strict=True))

            async def keep(tr: Transaction, chunk: list[Document] = chunk) -> None:
                for doc in chunk:
                    set_vector(tr, doc, model, made[(doc.kind, doc.key)])

            try:
                await self.store.transact(keep)
            except StoreError as error:  # embedded again next time: only a cost
                log.info("search: vectors of %s not kept: %r", agent_id, error)
        return {**known, **made}

    async def _advance_all(self, advances: dict[str, tuple[int, bool]]) -> None:
        """Record streams' cursors (stream -> position, gone) in the store, a drain's in
        one commit. Safe to be late or lost (a crash): the index holds its own positions;
        the store's cursors only let applied entries be trimmed, and never move back."""
        if not advances:
            return
        now = self.env.now()
        ttl = self.config.consumer_ttl
        index_id = self.index.index_id

        async def write(tr: Transaction) -> None:
            for stream, (position, gone) in advances.items():
                await outbox.advance(tr, index_id, stream, position, now, ttl, gone=gone)

        try:
            await self.store.transact(write)
        except StoreError as error:
            # The index has the changes; only trimming waits for the next advance.
            log.info("search: cursors of %s not advanced yet: %r", sorted(advances), error)

    # -- the background task ---------------------------------------------------------

    def wake(self) -> None:
        """Look for new entries now rather than at the next poll."""
        self._wake.set()

    async def all_agents(self) -> list[str]:
        """Every agent in the store, in id order (read in pages, each its own snapshot)."""
        found: list[str] = []
        begin, end = keys.AGENTS.range().start, keys.AGENTS.range().stop
        while True:

            async def page(tr: Transaction, begin: bytes = begin) -> list[str]:
                ids: list[str] = []
                cursor = begin
                for _ in range(500):
                    rows = await tr.get_range(cursor, end, limit=1)
                    if not rows:
                        break
                    (agent_id, *_) = keys.AGENTS.unpack(rows[0][0])
                    ids.append(agent_id)
                    cursor = keys.AGENTS.range((agent_id,)).stop
                return ids

            ids = await self.store.transact(page)
            if not ids:
                return found
            found += ids
            begin = keys.AGENTS.range((ids[-1],)).stop

    async def pending_streams(self) -> list[str]:
        """Streams with outbox entries past this index's position (up to `scan_agents`).

        A scan looks at a bounded number of streams, from where the last one stopped: when
        other consumers hold entries back from trimming, the outbox holds many streams this
        index has already applied, and a scan always starting from the first would never
        reach those after them. `_scan_more` says this one stopped before the end."""

        async def scan(tr: Transaction) -> tuple[list[str], bytes | None]:
            found: list[str] = []
            begin = self._scan_from or outbox.ENTRIES.range().start
            end = outbox.ENTRIES.range().stop
            for _ in range(self.config.scan_agents * 2):
                rows = await tr.get_range(begin, end, limit=1)
                if not rows:
                    return found, None  # the end: the next scan starts from the first
                stream, position = outbox.ENTRIES.unpack(rows[0][0])
                known = await self.index.position(stream)
                if known is None or position > known:
                    found.append(stream)
                    begin = outbox.ENTRIES.range((stream,)).stop
                    if len(found) == self.config.scan_agents:
                        break
                else:
                    begin = key_after(outbox.ENTRIES.pack((stream, known)))
            return found, begin

        found, self._scan_from = await self.store.transact(scan)
        self._scan_more = self._scan_from is not None
        return found

    async def all_archives(self, subspace: keys.Subspace = keys.ARCHIVES) -> list[str]:
        """Every archive (or folder) in the store, in id order (one snapshot per page of
        500)."""
        found: list[str] = []
        begin, end = subspace.range().start, subspace.range().stop
        while True:
            rows = await self.store.transact(
                lambda tr, begin=begin: tr.get_range(begin, end, limit=500)
            )
            if not rows:
                return found
            ids = list(dict.fromkeys(subspace.unpack(k)[0] for k, _ in rows))  # chunks
            found += [i for i in ids if not found or i != found[-1]]
            begin = subspace.range((ids[-1],)).stop

    async def warm(self) -> int:
        """Rebuild every agent (each of its streams), archive and folder of the store into
        the index; how many owners."""
        agents = (await self.all_agents() + await self.all_archives()
                  + await self.all_archives(keys.FOLDERS))  # fmt: skip
        for agent_id in agents:
            await self.catch_up(agent_id)
        return len(agents)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                # Registered first: from then on no entry this index has not applied is
                # trimmed, so what the warm-up does not see, the scan below will.
                if self._last_heartbeat is None or (
                    self.env.now() - self._last_heartbeat >= self.config.heartbeat_interval
                ):
                    await self._heartbeat()
                if not await self.index.warmed():
                    count = await self.warm()
                    await self.index.mark_warmed()
                    log.info("search: index %s built from %d agents", self.index.index_id, count)
                advances: dict[str, tuple[int, bool]] = {}
                try:
                    for stream in await self.pending_streams():
                        await self.catch_up_stream(stream, advances=advances)
                finally:  # what was applied, even if a later stream failed
                    await self._advance_all(advances)
                if self._scan_more:
                    continue  # the scan stopped before the end: look at the rest now
            except StoreError as error:  # the store's, or the index's own (IndexUnavailable)
                # The index lags meanwhile; the node and its writes go on.
                log.warning("search: indexer paused: %r", error)
                await trio.sleep(self.config.error_backoff)
                continue
            # Until an outbox entry is committed on this node, or the safety poll; no
            # wait (heartbeat due first) is longer than the heartbeat's own interval.
            # Both are polls: they end on the node's next tick (env.Ticks).
            poll = min(self.config.poll_interval, self._until_heartbeat())
            with trio.move_on_at(self.env.poll_time(poll)):
                self._waiting = True
                try:
                    await self._wake.wait()
                finally:
                    self._waiting = False
                # Woken by a commit: let the commits right behind it join the same drain
                # (one scan, one batch, one advance for all of them). Searches do not wait
                # for this: they catch their owner up themselves.
                await trio.sleep(self.config.settle)
            self._wake = trio.Event()

    @property
    def caught_up(self) -> bool:
        """Every outbox entry committed through this node's store is applied (as far as
        this indexer knows: see `_waiting`)."""
        return self._waiting and not self._wake.is_set()

    def _until_heartbeat(self) -> float:
        if self._last_heartbeat is None:
            return 0.0
        return max(0.0, self._last_heartbeat + self.config.heartbeat_interval - self.env.now())

    async def _heartbeat(self) -> None:
        now = self.env.now()

        async def beat(tr: Transaction) -> list[str]:
            return await outbox.heartbeat(tr, self.index.index_id, now, self.config.consumer_ttl)

        # Idempotent: the registration's time is decided before; forgetting the silent
        # ones again forgets nothing more.
        gone = await self.store.transact(beat, idempotent=True)
        if gone:
            log.info("search: forgot silent index consumers %s", gone)
        self._last_heartbeat = now
