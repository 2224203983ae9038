"""The production path: SQLite store, FTS5 index file, indexer in a nursery, restart, reindex."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from kelpie_trio.cli import main
from kelpie_trio.config import ServerConfig
from kelpie_trio.env import RealEnv
from kelpie_trio.search import SearchLayer, outbox
from kelpie_trio.search.cli import reindex
from kelpie_trio.search.fts import Fts5Index
from kelpie_trio.search.open import open_search
from kelpie_trio.service import AgentService
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.sqlite import SqliteStore


async def _texts(service: AgentService, agent_id: str, query: str) -> list[str]:
    return sorted(r.passage.text for r in await service.search_passages(agent_id, query, top_k=20))


async def test_sqlite_index_resumes_from_its_cursor_after_a_restart(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path)
    env = RealEnv()
    store = SqliteStore(config.db_path, env)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        service = AgentService(store, env)
        layer = service.search_layer = open_search(config, store, env)
        assert isinstance(layer.index, Fts5Index)
        await nursery.start(layer.run)
        agent = (await service.create_agent({"name": "keeper"})).agent.id
        await service.create_passages(agent, {"text": "the lighthouse lamp was replaced"})
        assert await _texts(service, agent, "lighthouse") == ["the lighthouse lamp was replaced"]
        position = await layer.index.position(agent)

        async def cursor(tr: Transaction) -> bytes | None:
            return await tr.get(outbox.CURSORS.pack((layer.index.index_id, agent)))

        assert await store.transact(cursor) is not None  # registered: the cursor is kept
        # The node goes down; writes go on (another node, or before the restart).
        nursery.cancel_scope.cancel()
    await store.aclose()

    store = SqliteStore(config.db_path, env)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        writer = AgentService(store, env)
        writer.search_layer = SearchLayer(store, env)  # a scratch index: the file is untouched
        await writer.create_passages(agent, {"text": "a second lighthouse on the pier"})
        archive = (await writer.create_archive({"name": "coast"})).id
        body = {"text": "every lighthouse keeper logs the weather"}
        await writer.create_archive_passages(archive, body, batch=False)
        await writer.attach_archive(agent, archive, True)
        service = AgentService(store, env)
        layer = service.search_layer = open_search(config, store, env)
        await nursery.start(layer.run)
        assert await layer.index.position(agent) == position  # the file kept its place
        assert await _texts(service, agent, "lighthouse") == [
            "a second lighthouse on the pier",
            "every lighthouse keeper logs the weather",  # the archive's, indexed as its own
            "the lighthouse lamp was replaced",
        ]
        # Resumed from the cursor: only the new entry; the archive, new, was built whole.
        assert layer.indexer.rebuilds == 1
        nursery.cancel_scope.cancel()
    await store.aclose()

    assert await reindex(config) == 2  # the agent and the archive
    store = SqliteStore(config.db_path, env)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        service = AgentService(store, env)
        layer = service.search_layer = open_search(config, store, env)
        assert await layer.index.warmed()
        assert len(await _texts(service, agent, "lighthouse")) == 3
        assert layer.indexer.applied == 0  # the rebuild had it all, the archive's too
        nursery.cancel_scope.cancel()
    await layer.index.aclose()
    await store.aclose()


def test_reindex_command_rebuilds_the_index_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("KELPIE_STORE", "KELPIE_DB", "KELPIE_FDB_CLUSTER_FILE", "KELPIE_EMBEDDING_MODEL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["reindex", "--data-dir", str(tmp_path)]) == 0
    assert "0 agents" in capsys.readouterr().out
    assert (tmp_path / "kelpie.search.db").exists()
    monkeypatch.setenv("KELPIE_STORE", "memory")
    assert main(["reindex", "--data-dir", str(tmp_path)]) == 2
