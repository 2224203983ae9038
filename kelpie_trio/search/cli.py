"""`kelpie-trio reindex`: rebuild the search index from the store, the source of truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from kelpie_trio.config import ServerConfig
from kelpie_trio.env import RealEnv
from kelpie_trio.llm.config import CatalogConfig
from kelpie_trio.search.embedding_models import EmbeddingModels
from kelpie_trio.search.embeddings import embedder_from_env
from kelpie_trio.search.index import MemoryIndex
from kelpie_trio.search.indexer import Indexer
from kelpie_trio.search.open import open_index

__all__ = ["add_arguments", "main", "reindex"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", choices=["sqlite", "fdb"], help="backend (KELPIE_STORE)")
    parser.add_argument("--data-dir", type=Path, help="data directory (KELPIE_DATA_DIR)")
    parser.add_argument("--db", type=Path, help="SQLite file (KELPIE_DB)")
    parser.add_argument("--fdb-cluster-file", help="FoundationDB cluster file")


async def reindex(config: ServerConfig) -> int:
    """Empty the node's index and rebuild every agent into it; the number of agents.

    Safe beside a running server on the same index (its updates are compare-and-set
    on each agent's position), though it is meant for a stopped one.
    """
    from kelpie_trio.nursery.node import open_store

    env = RealEnv()
    store = open_store(config, env)
    index = open_index(config, env)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await index.clear()
            models = EmbeddingModels(embedder_from_env(), CatalogConfig.from_env())
            try:
                count = await Indexer(store, env, index, models=models).warm()
            finally:
                with trio.CancelScope(shield=True):
                    await models.aclose()
            await index.mark_warmed()
            nursery.cancel_scope.cancel()
        return count
    finally:
        with trio.CancelScope(shield=True):
            await index.aclose()
            await store.aclose()


def main(args: argparse.Namespace) -> int:
    try:
        config = ServerConfig.from_env(
            store=args.store,
            data_dir=args.data_dir,
            db=args.db,
            fdb_cluster_file=args.fdb_cluster_file,
        )
    except ValueError as error:
        print(f"kelpie-trio: {error}", file=sys.stderr)
        return 2
    if isinstance(open_index(config, RealEnv()), MemoryIndex):
        print("kelpie-trio: the memory store's index is rebuilt by the server at each start")
        return 2
    count = trio.run(reindex, config)
    print(f"search index rebuilt from the store: {count} agents and archives")
    return 0
