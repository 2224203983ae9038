"""Which embedding model embeds what: an agent's (or archive's) own model, else the server's.

Letta embeds a passage with the embedding model of the agent (or archive) that writes it, and
embeds a search's query with the searching agent's model. Here a passage's record names that
model by the handle in its `embedding_config` (`openai/text-embedding-3-small`, `sim/embedding`,
`ollama/nomic-embed-text`); a record that names none (an agent created without `embedding`,
a message) is embedded by the server-wide `KELPIE_EMBEDDING_MODEL`, when one is set.

A handle is resolved against the providers this server is configured for (`CatalogConfig`),
never against the endpoint a record carries: a record can come from outside (an imported agent
file), and a key only ever goes to the endpoint it was configured for. A handle no configured
provider serves gets no embedder (its documents are found by BM25 alone, and the log says so
once); the API refuses such handles at create and update, so that is a record from elsewhere.

Each embedder's `name` is what stored vectors and index documents are labeled with, and a
vector search compares the query only with vectors of that name: vectors of different models
(and so of different widths) never meet in one ranking.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kelpie_trio.llm.catalog import SIM_EMBEDDING_DIM
from kelpie_trio.llm.config import OPENAI_BASE_URL, CatalogConfig
from kelpie_trio.search.embeddings import Embedder, HashingEmbedder, OpenAiEmbedder

__all__ = ["EmbeddingModels"]

log = logging.getLogger("kelpie_trio.search")


class EmbeddingModels:
    """One embedder per handle, made on first use and kept; `default` serves records naming
    none. `made` pre-sets the embedder of some handles (tests count their calls)."""

    def __init__(
        self,
        default: Embedder | None = None,
        catalog_config: CatalogConfig | None = None,
        *,
        made: Mapping[str, Embedder | None] | None = None,
    ) -> None:
        self.default = default
        self._config = catalog_config or CatalogConfig()
        self._made: dict[str, Embedder | None] = dict(made or {})

    def for_handle(self, handle: str | None) -> Embedder | None:
        """The embedder of `handle`: the default for None, None when nothing here serves it."""
        if not handle:
            return self.default
        if handle not in self._made:
            self._made[handle] = self._make(handle)
            if self._made[handle] is None:
                log.warning("search: no provider here serves the embedding model %r: "
                            "its passages are searched by their words alone", handle)  # fmt: skip
        return self._made[handle]

    def _make(self, handle: str) -> Embedder | None:
        prefix, _, model = handle.partition("/")
        if not model:
            return None
        if prefix == "sim":  # the catalog's sim/embedding, as wide as text-embedding-3-small
            return HashingEmbedder(SIM_EMBEDDING_DIM)
        config = self._config
        if prefix in ("openai", "openai-proxy") and config.openai_enabled:
            base = config.openai_base_url or OPENAI_BASE_URL
            return OpenAiEmbedder(model, base_url=base, api_key=config.openai_api_key)
        for server in config.local_servers:
            if server.handle_prefix == prefix:
                return OpenAiEmbedder(model, base_url=server.openai_base_url,
                                      api_key=server.api_key)  # fmt: skip
        return None

    async def aclose(self) -> None:
        closed: set[int] = set()
        for embedder in (self.default, *self._made.values()):
            if embedder is not None and id(embedder) not in closed:
                closed.add(id(embedder))
                await embedder.aclose()
