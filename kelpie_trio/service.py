"""The use cases behind the API: create a block, list agents, send a message...

CRUD goes straight to the store, one transaction per use case, so a request
either happens whole or not at all; anything that runs an agent goes through
the dispatcher. Input arrives as parsed JSON and is validated here (through
the models' converter), so the API layer stays a thin shell and the whole
service runs inside the simulator.

Layout in the store (kelpie_trio/storage/keys.py): each record at
`<subspace>(id)` (chunked when large), and a creation-order index per
collection, `<index>(created_us, id)`, which gives stable pagination even for
records created in the same microsecond.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import attrs

from kelpie_trio.env import Env
from kelpie_trio.errors import Invalid, NotFound
from kelpie_trio.models import convert
from kelpie_trio.models.blocks import UPDATABLE_BLOCK_FIELDS, Block, CreateBlock
from kelpie_trio.storage import Store, keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import clear_blob, get_blob, set_blob

__all__ = ["AgentService", "Page"]

T = TypeVar("T")

BLOCK_INDEX = keys.ROOT["index"]["blocks"]  # (created_us, block_id) -> b""

MAX_PAGE = 1000


@attrs.frozen
class Page:
    """Cursor pagination as the SDK drives it: `after`/`before` are ids of the last page."""

    after: str | None = None
    before: str | None = None
    limit: int | None = 50
    order: Literal["asc", "desc"] = "asc"


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


async def _read(tr: Transaction, key: bytes, cls: type[T]) -> T | None:
    raw = await get_blob(tr, key)
    return None if raw is None else convert.decode_record(raw, cls)


async def _page_ids(
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


class AgentService:
    def __init__(self, store: Store, env: Env) -> None:
        self.store = store
        self.env = env

    # -- blocks --------------------------------------------------------------

    @staticmethod
    def _check_block(block: Block, where: str = "body") -> None:
        if block.limit <= 0:
            raise Invalid.field([where, "limit"], "limit must be a positive number of characters")
        if len(block.value) > block.limit:
            raise Invalid.field(
                [where, "value"],
                f"value has {len(block.value)} characters, over the block's limit of {block.limit}",
            )

    def _new_block(self, create: CreateBlock, where: str = "body") -> Block:
        block = Block(
            id=self.env.new_id("block"),
            created_at=self.env.now(),
            **attrs.asdict(create, recurse=False),
        )
        self._check_block(block, where)
        return block

    @staticmethod
    def _write_block(tr: Transaction, block: Block, *, new: bool) -> None:
        set_blob(tr, keys.BLOCKS.pack((block.id,)), convert.encode_record(block))
        if new:
            tr.set(BLOCK_INDEX.pack((_micros(block.created_at), block.id)), b"")

    async def _block(self, tr: Transaction, block_id: str) -> Block:
        block = await _read(tr, keys.BLOCKS.pack((block_id,)), Block)
        if block is None:
            raise NotFound("Block", block_id)
        return block

    async def create_block(self, body: Any) -> Block:
        block = self._new_block(convert.structure_api(body, CreateBlock))

        async def create(tr: Transaction) -> None:
            self._write_block(tr, block, new=True)

        await self.store.transact(create)
        return block

    async def get_block(self, block_id: str) -> Block:
        return await self.store.transact(lambda tr: self._block(tr, block_id))

    async def list_blocks(self, page: Page, *, label: str | None = None) -> list[Block]:
        async def listing(tr: Transaction) -> list[Block]:
            cache: dict[str, Block | None] = {}

            async def load(ident: str) -> Block | None:
                if ident not in cache:
                    cache[ident] = await _read(tr, keys.BLOCKS.pack((ident,)), Block)
                return cache[ident]

            async def position(ident: str) -> tuple | None:
                block = await load(ident)
                return None if block is None else (_micros(block.created_at), block.id)

            async def keep(ident: str) -> bool:
                block = await load(ident)
                return block is not None and block.label == label

            ids = await _page_ids(tr, BLOCK_INDEX, page, position, keep if label else None)
            blocks = [await load(i) for i in ids]
            return [b for b in blocks if b is not None]

        return await self.store.transact(listing)

    async def update_block(self, block_id: str, body: Any) -> Block:
        if not isinstance(body, dict):
            raise Invalid.field(["body"], "expected a JSON object", "model_type")
        changes = {k: v for k, v in body.items() if k in UPDATABLE_BLOCK_FIELDS}

        async def update(tr: Transaction) -> Block:
            current = await self._block(tr, block_id)
            merged = {**convert.api.unstructure(current), **changes}
            block = convert.structure_api(merged, Block)
            self._check_block(block)
            self._write_block(tr, block, new=False)
            return block

        return await self.store.transact(update)

    async def delete_block(self, block_id: str) -> None:
        async def delete(tr: Transaction) -> None:
            block = await self._block(tr, block_id)
            clear_blob(tr, keys.BLOCKS.pack((block_id,)))
            tr.clear(BLOCK_INDEX.pack((_micros(block.created_at), block_id)))

        await self.store.transact(delete)
