"""Memory blocks: create, read, list, edit, delete; and which agents hold one."""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.errors import Invalid, NotFound
from kelpie_trio.models import convert
from kelpie_trio.models.blocks import UPDATABLE_BLOCK_FIELDS, Block, CreateBlock
from kelpie_trio.service.common import Page, ServiceBase, micros, page_records, read_record
from kelpie_trio.service.limits import MAX_BLOCK_CHARS, check_record
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import set_blob

__all__ = ["BLOCK_AGENTS", "BLOCK_INDEX", "BlockCases"]

BLOCK_INDEX = keys.ROOT["index"]["blocks"]  # (created_us, block_id) -> b""
BLOCK_AGENTS = keys.ROOT["index"]["block_agents"]  # (block_id, agent_id) -> b""


class BlockCases(ServiceBase):
    @staticmethod
    def _check_block(block: Block, where: str = "body") -> None:
        if not 0 < block.limit <= MAX_BLOCK_CHARS:
            raise Invalid.field(
                [where, "limit"],
                f"limit must be a number of characters from 1 to {MAX_BLOCK_CHARS:,}",
            )
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
        set_blob(tr, keys.BLOCKS.pack((block.id,)), check_record(block, "block"))
        if new:
            tr.set(BLOCK_INDEX.pack((micros(block.created_at), block.id)), b"")

    async def _block(self, tr: Transaction, block_id: str) -> Block:
        block = await read_record(tr, keys.BLOCKS.pack((block_id,)), Block)
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
            return await page_records(
                tr,
                BLOCK_INDEX,
                page,
                lambda ident: keys.BLOCKS.pack((ident,)),
                Block,
                (lambda block: block.label == label) if label else None,
            )

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
