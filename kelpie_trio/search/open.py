"""The node's search layer from its configuration: which index, where."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kelpie_trio.env import Env
from kelpie_trio.llm.config import CatalogConfig
from kelpie_trio.search.embedding_models import EmbeddingModels
from kelpie_trio.search.embeddings import embedder_from_env
from kelpie_trio.search.fts import Fts5Index, index_path_for
from kelpie_trio.search.index import MemoryIndex, SearchIndex
from kelpie_trio.search.layer import SearchLayer
from kelpie_trio.storage import Store

if TYPE_CHECKING:
    from kelpie_trio.config import ServerConfig

__all__ = ["open_index", "open_search"]


def open_index(config: ServerConfig, env: Env) -> SearchIndex:
    """FTS5 beside the SQLite store's file; in memory for the memory store (whose data
    goes with the process); for FoundationDB, FTS5 in this node's data directory."""
    if config.store == "memory":
        return MemoryIndex(env.new_id("index"))
    if config.store == "sqlite":
        return Fts5Index(index_path_for(config.db_path), env.new_id("index"))
    return Fts5Index(config.data_dir / "search-index.db", env.new_id("index"))


def open_search(
    config: ServerConfig, store: Store, env: Env, catalog_config: CatalogConfig | None = None
) -> SearchLayer:
    """The node's search layer: the configured index; its indexer runs in the node. Passages
    are embedded by their agent's (or archive's) model, through the providers of
    `catalog_config`, else by `KELPIE_EMBEDDING_MODEL`'s."""
    models = EmbeddingModels(embedder_from_env(), catalog_config)
    return SearchLayer(store, env, open_index(config, env), models=models)
