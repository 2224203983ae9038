"""The search layer ("UMI"): archival and conversation search over a derived index.

The store is the source of truth; every write of a passage or a message also
writes an outbox entry in its transaction (outbox.py); an indexer per node
drains the outbox into the index (indexer.py); a query catches its agent up
first, so it sees the caller's own writes (layer.py). Ranking is BM25 over a
light-stemmed vocabulary (text.py, ranking.py), merged with vector search by
reciprocal rank fusion when an embedding model is configured.
"""

from __future__ import annotations

from kelpie_trio.search import outbox
from kelpie_trio.search.documents import Document, Hit, Query
from kelpie_trio.search.index import MemoryIndex, SearchIndex
from kelpie_trio.search.indexer import Indexer, IndexerConfig
from kelpie_trio.search.layer import (
    SearchLayer,
    archival_search,
    archival_tool_results,
    conversation_search,
    search_layer,
)

__all__ = [
    "Document",
    "Hit",
    "Indexer",
    "IndexerConfig",
    "MemoryIndex",
    "Query",
    "SearchIndex",
    "SearchLayer",
    "archival_search",
    "archival_tool_results",
    "conversation_search",
    "outbox",
    "search_layer",
]
