"""What every group of use cases shares: the store, paging, record reads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import attrs

from kelpie_trio.env import Env
from kelpie_trio.llm.catalog import SIM_CHAT_HANDLE, CatalogConfig, ModelCatalog
from kelpie_trio.models import convert
from kelpie_trio.storage import Store, keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import get_blob

__all__ = [
    "MAX_PAGE",
    "Page",
    "ServiceBase",
    "micros",
    "page_ids",
    "page_records",
    "read_record",
    "window",
]

T = TypeVar("T")

MAX_PAGE = 1000


@attrs.frozen
class Page:
    """Cursor pagination as the SDK drives it: `after`/`before` are ids of the last page."""

    after: str | None = None
    before: str | None = None
    limit: int | None = 50
    order: Literal["asc", "desc"] = "asc"


def micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


async def read_record(tr: Transaction, key: bytes, cls: type[T]) -> T | None:
    raw = await get_blob(tr, key)
    return None if raw is None else convert.decode_record(raw, cls)


async def page_ids(
    tr: Transaction,
    index: keys.Subspace,
    page: Page,
    position: Callable[[str], Awaitable[tuple | None]],
    keep: Callable[[str], Awaitable[bool]] | None = None,
) -> list[str]:
    """Ids from a (created_us, id) index, in `page.order`, strictly between the cursors.

    An unknown cursor gives an empty page: the SDK stops iterating rather than
    looping forever over a page it has already seen.
    """
    begin, end = index.range().start, index.range().stop
    for cursor, is_lower in ((page.after, page.order == "asc"), (page.before, page.order != "asc")):
        if cursor is None:
            continue
        where = await position(cursor)
        if where is None:
            return []
        key = index.pack(where)
        if is_lower:
            begin = max(begin, key + b"\x00")
        else:
            end = min(end, key)
    if begin >= end:
        return []
    limit = min(page.limit or MAX_PAGE, MAX_PAGE)
    ids: list[str] = []
    reverse = page.order == "desc"
    # Filtered listings read in batches until the page is full or the index ends.
    while begin < end and len(ids) < limit:
        batch = await tr.get_range(begin, end, limit=limit * (4 if keep else 1), reverse=reverse)
        if not batch:
            break
        for key, _ in batch:
            ident = index.unpack(key)[1]
            if keep is None or await keep(ident):
                ids.append(ident)
                if len(ids) == limit:
                    break
        last = batch[-1][0]
        if reverse:
            end = last
        else:
            begin = last + b"\x00"
    return ids


async def page_records(
    tr: Transaction,
    index: keys.Subspace,
    page: Page,
    key_of: Callable[[str], bytes],
    cls: type[T],
    keep: Callable[[T], bool] | None = None,
) -> list[T]:
    """One page of records (with `id` and `created_at`) from a (created_us, id) index,
    those that `keep` accepts when it is given; each record is read once."""
    cache: dict[str, T | None] = {}

    async def load(ident: str) -> T | None:
        if ident not in cache:
            cache[ident] = await read_record(tr, key_of(ident), cls)
        return cache[ident]

    async def position(ident: str) -> tuple | None:
        record: Any = await load(ident)
        return None if record is None else (micros(record.created_at), record.id)

    async def kept(ident: str) -> bool:
        record = await load(ident)
        return record is not None and keep is not None and keep(record)

    ids = await page_ids(tr, index, page, position, kept if keep else None)
    records = [await load(i) for i in ids]
    return [r for r in records if r is not None]


class ServiceBase:
    """The store, the environment and the model catalog, for every use case."""

    def __init__(self, store: Store, env: Env, catalog: ModelCatalog | None = None) -> None:
        self.store = store
        self.env = env
        self.catalog = catalog or ModelCatalog.from_config(CatalogConfig.from_env())
        # An agent created without a model gets a real one when a provider is
        # configured, else the simulated model (offline, and labeled so).
        offered = self.catalog.handles()
        self.default_model = next(
            (h for h in ("openai/gpt-4o-mini", *offered) if h in offered and not
             self.catalog.is_simulated(h)),
            SIM_CHAT_HANDLE,
        )  # fmt: skip


def window(items: list[str], page: Page) -> list[str]:
    """Cursor paging over a small in-memory list of ids (an agent's blocks, tags)."""
    ordered = items if page.order == "asc" else items[::-1]
    if page.after is not None:
        ordered = ordered[ordered.index(page.after) + 1 :] if page.after in ordered else []
    if page.before is not None:
        ordered = ordered[: ordered.index(page.before)] if page.before in ordered else []
    return ordered[: min(page.limit or MAX_PAGE, MAX_PAGE)]
