"""The node's search layer from its configuration: which index, where."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kelpie_trio.env import Env
from kelpie_trio.search.layer import SearchLayer
from kelpie_trio.storage import Store

if TYPE_CHECKING:
    from kelpie_trio.config import ServerConfig

__all__ = ["open_search"]


def open_search(config: ServerConfig, store: Store, env: Env) -> SearchLayer:
    """An in-memory BM25 index, warmed from the store at start."""
    return SearchLayer(store, env)
