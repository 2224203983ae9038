"""Asking each configured provider which models it has, as Letta does at start.

Two halves. Parsing is sans-IO: `parse_openai_models` reads an OpenAI-compatible `/v1/models`
answer (OpenAI, vLLM, Ollama, llama.cpp, LM Studio, OpenRouter), `parse_anthropic_models` one
page of Anthropic's, into `DiscoveredModel`s with the context window where the server reports
one. Fetching is a thin shell: `discover` asks every provider at once under one deadline and
returns what answered; a provider that did not answer (down, refused, too slow, nonsense) is
left out, and the catalog offers its fixed set instead (catalog.py). Discovery never fails the
server's start.

It runs when the node starts (nursery/node.py): a restart asks again. Letta 0.16.8 does the
same for the providers it is configured with by environment; its refresh route
(`PATCH /v1/providers/{id}/refresh`) serves only providers added through the API, which this
server does not have. With `KELPIE_MODELS_REFRESH` (seconds) the node also asks again on that
period (`keep_catalog_fresh`), so a model pulled into Ollama shows up without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import trio

from kelpie_trio.llm.anthropic import ANTHROPIC_VERSION
from kelpie_trio.llm.catalog import DiscoveredModel, ModelCatalog
from kelpie_trio.llm.config import OPENAI_BASE_URL, CatalogConfig

__all__ = [
    "DISCOVERY_TIMEOUT",
    "discover",
    "keep_catalog_fresh",
    "parse_anthropic_models",
    "parse_openai_models",
]

log = logging.getLogger("kelpie_trio.llm.discovery")

DISCOVERY_TIMEOUT = 10.0  # seconds, for all providers together: a start never waits longer
_ANTHROPIC_PAGE = 1000  # the most Anthropic gives per page
_ANTHROPIC_MAX_PAGES = 20

# Letta lists only these of api.openai.com's models (the others are not chat models, or cannot
# call tools); an OpenAI-compatible proxy or local server lists what it serves.
_OPENAI_CHAT_PREFIXES = ("gpt-4", "gpt-5", "o1", "o3", "o4")
_OPENAI_NOT_CHAT = ("transcribe", "search", "realtime", "tts", "audio", "computer", "o1-mini",
                    "o1-preview", "o1-pro", "image", "embedding")  # fmt: skip
# Where each server puts a model's context window in its /v1/models entries.
_WINDOW_KEYS = (
    "max_model_len",  # vLLM
    "context_length",  # OpenRouter, Together
    "context_window",  # Groq
    "max_context_length",  # LM Studio's /api/v0
)


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    return None


def _window(entry: Mapping[str, Any]) -> int | None:
    for key in _WINDOW_KEYS:
        if (window := _positive_int(entry.get(key))) is not None:
            return window
    meta = entry.get("meta")
    if isinstance(meta, Mapping):
        # llama.cpp reports the context the model was trained with.
        return _positive_int(meta.get("n_ctx_train"))
    return None


def parse_openai_models(body: Any, *, official: bool = False) -> list[DiscoveredModel]:
    """The chat models of an OpenAI-compatible `/v1/models` answer (`{"data": [...]}`, or a
    bare list as Together sends). `official`: api.openai.com's list, filtered as Letta does.

    Raises ValueError for an answer that is not a model list.
    """
    data = body.get("data") if isinstance(body, Mapping) else body
    if not isinstance(data, list):
        raise ValueError("a model list is an object with a `data` list")
    models: list[DiscoveredModel] = []
    seen: set[str] = set()
    for entry in data:
        if not isinstance(entry, Mapping):
            continue
        name = entry.get("id")
        if not isinstance(name, str) or not name or name in seen:
            continue
        if official and (
            not name.startswith(_OPENAI_CHAT_PREFIXES) or any(w in name for w in _OPENAI_NOT_CHAT)
        ):
            continue
        if entry.get("type") in ("embedding", "embeddings"):  # LM Studio says which
            continue
        seen.add(name)
        models.append(DiscoveredModel(name, _window(entry)))
    return models


def parse_anthropic_models(body: Any) -> tuple[list[DiscoveredModel], str | None]:
    """One page of Anthropic's `/v1/models`: its models, and the id to ask after for the next
    page (None on the last). Raises ValueError for an answer that is not a model list."""
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list):
        raise ValueError("an Anthropic model list is an object with a `data` list")
    models = [
        DiscoveredModel(entry["id"], _positive_int(entry.get("max_input_tokens")))
        for entry in data
        if isinstance(entry, Mapping)
        and entry.get("type", "model") == "model"
        and isinstance(entry.get("id"), str)
        and entry["id"]
        and not entry["id"].startswith("claude-2")  # Letta leaves out the old text models
    ]
    last = body.get("last_id")
    more = body.get("has_more") is True and isinstance(last, str) and last
    return models, (last if more else None)


async def _get_json(http: httpx.AsyncClient, url: str, **kw: Any) -> Any:
    response = await http.get(url, **kw)
    response.raise_for_status()
    return response.json()


async def fetch_openai_models(
    http: httpx.AsyncClient, base_url: str, api_key: str | None
) -> list[DiscoveredModel]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = await _get_json(http, base_url.rstrip("/") + "/models", headers=headers)
    official = base_url.rstrip("/") == OPENAI_BASE_URL
    return parse_openai_models(body, official=official)


async def fetch_anthropic_models(
    http: httpx.AsyncClient, base_url: str, api_key: str
) -> list[DiscoveredModel]:
    headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
    models: list[DiscoveredModel] = []
    after: str | None = None
    for _ in range(_ANTHROPIC_MAX_PAGES):
        params: dict[str, Any] = {"limit": _ANTHROPIC_PAGE}
        if after is not None:
            params["after_id"] = after
        body = await _get_json(http, base_url.rstrip("/") + "/models", headers=headers,
                               params=params)  # fmt: skip
        page, after = parse_anthropic_models(body)
        models += page
        if after is None:
            break
    return models


async def discover(
    config: CatalogConfig,
    *,
    within: float = DISCOVERY_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, list[DiscoveredModel]]:
    """The models of every configured provider that answered `within` seconds, by provider
    ("openai", "anthropic", a local server's handle prefix)."""
    asks: dict[str, Any] = {}
    if config.openai_enabled:
        base = config.openai_base_url or OPENAI_BASE_URL
        asks["openai"] = (fetch_openai_models, base, config.openai_api_key)
    if config.anthropic_enabled and config.anthropic_api_key:
        asks["anthropic"] = (fetch_anthropic_models, config.anthropic_base_url,
                             config.anthropic_api_key)  # fmt: skip
    for local in config.local_servers:
        asks[local.handle_prefix] = (fetch_openai_models, local.openai_base_url, local.api_key)
    found: dict[str, list[DiscoveredModel]] = {}
    if not asks:
        return found

    async def ask(name: str, fetch: Any, base: str, key: Any) -> None:
        try:
            models = await fetch(http, base, key)
        except (httpx.HTTPError, ValueError) as error:
            log.warning("models of %s (%s) not listed, offering the fixed set: %r",
                        name, base, error)  # fmt: skip
            return
        if not models:
            log.warning("%s (%s) listed no chat models, offering the fixed set", name, base)
            return
        found[name] = models
        log.info("%s (%s) lists %d models", name, base, len(models))

    async with httpx.AsyncClient(timeout=within, transport=transport) as http:
        with trio.move_on_after(within) as waited:
            async with trio.open_nursery() as nursery:
                for name, (fetch, base, key) in asks.items():
                    nursery.start_soon(ask, name, fetch, base, key)
        if waited.cancelled_caught:
            late = sorted(set(asks) - set(found))
            log.warning("no model list within %gs from %s, offering the fixed set", within,
                        ", ".join(late))  # fmt: skip
    return found


async def keep_catalog_fresh(
    config: CatalogConfig,
    every: float,
    publish: Callable[[ModelCatalog], None],
    *,
    found: Mapping[str, list[DiscoveredModel]] | None = None,
    ask: Callable[[CatalogConfig], Awaitable[Mapping[str, list[DiscoveredModel]]]] = discover,
) -> None:
    """Every `every` seconds, ask the providers again and `publish` the new catalog. A provider
    that does not answer this time keeps the list it gave last (`found`, the answers at start),
    not the fixed set: one slow answer does not take its models away."""
    known = dict(found or {})
    while True:
        await trio.sleep(every)
        known.update(await ask(config))
        publish(ModelCatalog.from_config(config, known))
