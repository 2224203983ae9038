"""/v1/blocks/: standalone memory blocks (Letta's client.blocks)."""

from __future__ import annotations

from quart import Blueprint, Response, request

from kelpie_trio.api.common import body, check_id, json_response, page_args, render, service
from kelpie_trio.api.spec import documented
from kelpie_trio.models.blocks import Block, CreateBlock

PAGING = ("after", "before", "limit", "order")

blocks = Blueprint("blocks", __name__)


@blocks.post("/v1/blocks/")
@blocks.post("/v1/blocks")
@documented("Create a block", request=CreateBlock, response=Block)
async def create_block() -> Response:
    return json_response(render(await service().create_block(await body())))


@blocks.get("/v1/blocks/")
@blocks.get("/v1/blocks")
@documented("List blocks", response=Block, many=True, query=(*PAGING, "label"), cursor="block")
async def list_blocks() -> Response:
    found = await service().list_blocks(page_args("block"), label=request.args.get("label"))
    return json_response([render(b) for b in found])


@blocks.get("/v1/blocks/<block_id>")
@documented("Retrieve a block", response=Block)
async def retrieve_block(block_id: str) -> Response:
    return json_response(render(await service().get_block(check_id(block_id, "block", "block_id"))))


@blocks.patch("/v1/blocks/<block_id>")
@documented(
    "Modify a block: only the fields given change", request=Block, response=Block, partial=True
)
async def modify_block(block_id: str) -> Response:
    block_id = check_id(block_id, "block", "block_id")
    return json_response(render(await service().update_block(block_id, await body())))


@blocks.delete("/v1/blocks/<block_id>")
@documented("Delete a block (and detach it from its agents)")
async def delete_block(block_id: str) -> Response:
    await service().delete_block(check_id(block_id, "block", "block_id"))
    return json_response(None)
