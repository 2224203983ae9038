"""Which LLM providers this server is configured for, read from the environment.

OpenAI (or one OpenAI-compatible proxy standing in for it), Anthropic, and any number of local
OpenAI-compatible servers (vLLM, Ollama, llama.cpp, LM Studio), each under its own handle
prefix. Keys stay out of every repr, so a config never carries a key into a log.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Literal, cast

import attrs

__all__ = [
    "ANTHROPIC_BASE_URL",
    "DEFAULT_LOCAL_CONTEXT_WINDOW",
    "OPENAI_BASE_URL",
    "CatalogConfig",
    "LocalEmbedding",
    "LocalKind",
    "LocalServer",
]

OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com/v1"
# Letta's DEFAULT_CONTEXT_WINDOW: what it assumes for a local model that reports none.
DEFAULT_LOCAL_CONTEXT_WINDOW = 128_000

LocalKind = Literal["vllm", "ollama", "llamacpp"]
_KINDS = ("vllm", "ollama", "llamacpp")
# Handle prefixes a local server cannot take: they name other providers' models.
_RESERVED_PREFIXES = {"openai", "openai-proxy", "anthropic", "sim", "letta"}
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@attrs.frozen
class LocalEmbedding:
    name: str
    dim: int  # the server's embedding width; Letta skips Ollama models that do not report one


def _tuple_of_str(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _tuple_of_embeddings(value: Iterable[LocalEmbedding]) -> tuple[LocalEmbedding, ...]:
    return tuple(value)


@attrs.frozen
class LocalServer:
    """A local OpenAI-compatible server and the models it serves.

    Handles are `<prefix>/<model>`; the prefix is the kind unless named (`ollama/llama3.2`, as
    Letta names its vLLM and Ollama providers; llama.cpp has no Letta provider and takes the
    shape of an OpenAI-compatible one named `llamacpp`). `models` is the fixed list, offered
    when the server cannot be asked for its own (discovery.py).
    """

    base_url: str
    kind: LocalKind = "vllm"
    models: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    embedding_models: tuple[LocalEmbedding, ...] = attrs.field(
        default=(), converter=_tuple_of_embeddings
    )
    # The window of models that report none (vLLM reports max_model_len; Ollama does not).
    context_window: int = DEFAULT_LOCAL_CONTEXT_WINDOW
    api_key: str | None = attrs.field(default=None, repr=False)
    prefix: str | None = None

    @property
    def handle_prefix(self) -> str:
        return self.prefix or self.kind

    @property
    def openai_base_url(self) -> str:
        """The base URL with `/v1`, as Letta appends it for vLLM and Ollama."""
        url = self.base_url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"


def _tuple_of_servers(value: Iterable[LocalServer]) -> tuple[LocalServer, ...]:
    return tuple(value)


@attrs.frozen
class CatalogConfig:
    """Which providers are configured. Keys are kept out of reprs so they never reach a log."""

    openai_api_key: str | None = attrs.field(default=None, repr=False)
    # An OpenAI-compatible endpoint (a proxy, a mock) serving the usual OpenAI models. Letta
    # would name them `openai-proxy/...`; they keep their `openai/...` handles here, which is
    # what Letta's own SDK tests ask for (the catalog takes `openai-proxy/...` as an alias).
    openai_base_url: str | None = None
    anthropic_api_key: str | None = attrs.field(default=None, repr=False)
    # An Anthropic-compatible endpoint (a proxy, a mock); Anthropic's own by default.
    anthropic_base_url: str = ANTHROPIC_BASE_URL
    local: LocalServer | None = None  # KELPIE_LOCAL_LLM_URL, the first way to name one
    servers: tuple[LocalServer, ...] = attrs.field(default=(), converter=_tuple_of_servers)
    # Seconds between two askings of the providers for their models; None: at start only.
    refresh_seconds: float | None = None

    @property
    def openai_enabled(self) -> bool:
        return bool(self.openai_api_key or self.openai_base_url)

    @property
    def anthropic_enabled(self) -> bool:
        return bool(self.anthropic_api_key)

    @property
    def local_servers(self) -> tuple[LocalServer, ...]:
        """Every local OpenAI-compatible server, each under its own handle prefix."""
        return ((self.local,) if self.local is not None else ()) + self.servers

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CatalogConfig:
        """OPENAI_API_KEY, OPENAI_BASE_URL (or Letta's OPENAI_API_BASE), ANTHROPIC_API_KEY,
        ANTHROPIC_BASE_URL; one local server by KELPIE_LOCAL_LLM_URL / _KIND / _MODELS
        (comma-separated) / _API_KEY with KELPIE_LOCAL_EMBEDDING_MODELS (`name:dim`,
        comma-separated); more by KELPIE_LLM_ENDPOINTS (`prefix=url`, comma-separated), each
        with its key in KELPIE_LLM_API_KEY_<PREFIX> (upper case, `-` and `.` as `_`);
        KELPIE_MODELS_REFRESH (seconds between askings of the providers for their models).
        Empty values count as unset.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env.get(name) or None

        local = None
        if url := get("KELPIE_LOCAL_LLM_URL"):
            kind = get("KELPIE_LOCAL_LLM_KIND") or "vllm"
            if kind not in _KINDS:
                raise ValueError(f"KELPIE_LOCAL_LLM_KIND {kind!r}: use vllm, ollama or llamacpp")
            embeddings = []
            for item in _split(get("KELPIE_LOCAL_EMBEDDING_MODELS")):
                name, sep, dim = item.rpartition(":")
                if not sep or not name or not dim.isdigit():
                    raise ValueError(f"KELPIE_LOCAL_EMBEDDING_MODELS wants name:dim, got {item!r}")
                embeddings.append(LocalEmbedding(name, int(dim)))
            local = LocalServer(
                base_url=url,
                kind=cast(LocalKind, kind),
                models=_split(get("KELPIE_LOCAL_LLM_MODELS")),
                embedding_models=embeddings,
                api_key=get("KELPIE_LOCAL_LLM_API_KEY"),
            )
        servers = []
        taken = {local.handle_prefix} if local is not None else set()
        for item in _split(get("KELPIE_LLM_ENDPOINTS")):
            prefix, sep, url = item.partition("=")
            prefix = prefix.strip()
            if not sep or not url.strip() or not _PREFIX.match(prefix):
                raise ValueError(
                    f"KELPIE_LLM_ENDPOINTS wants prefix=url (prefix in lower-case letters, "
                    f"digits, '.', '-', '_'), got {item!r}"
                )
            if prefix in _RESERVED_PREFIXES or prefix in taken:
                raise ValueError(f"KELPIE_LLM_ENDPOINTS: the handle prefix {prefix!r} is taken")
            taken.add(prefix)
            key_name = "KELPIE_LLM_API_KEY_" + re.sub(r"[^A-Z0-9]", "_", prefix.upper())
            servers.append(
                LocalServer(
                    base_url=url.strip(),
                    kind=cast(LocalKind, prefix if prefix in _KINDS else "vllm"),
                    api_key=get(key_name),
                    prefix=prefix,
                )
            )
        refresh = get("KELPIE_MODELS_REFRESH")
        try:
            refresh_seconds = float(refresh) if refresh is not None else None
        except ValueError:
            refresh_seconds = -1.0
        if refresh_seconds is not None and not refresh_seconds > 0:
            raise ValueError(f"KELPIE_MODELS_REFRESH wants seconds above 0, got {refresh!r}")
        return cls(
            openai_api_key=get("OPENAI_API_KEY"),
            openai_base_url=get("OPENAI_BASE_URL") or get("OPENAI_API_BASE"),
            anthropic_api_key=get("ANTHROPIC_API_KEY"),
            anthropic_base_url=get("ANTHROPIC_BASE_URL") or ANTHROPIC_BASE_URL,
            local=local,
            servers=servers,
            refresh_seconds=refresh_seconds,
        )


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())
