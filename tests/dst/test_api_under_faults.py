"""The API in the simulator: the Quart app on a SimStore, driven by its test client.

Under storage faults every request either succeeds whole or fails with a clean
JSON error (503 + Retry-After when the store gives up), and the store never
holds half a request: no record without its index entry, none without a 200.
"""

from __future__ import annotations

import trio

from kelpie_trio.api.app import create_app
from kelpie_trio.service import AGENT_INDEX, BLOCK_AGENTS, BLOCK_INDEX
from kelpie_trio.sim import FaultConfig, SimWorld
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

FAULTS = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.15))


async def blocks_under_faults(world: SimWorld) -> dict[str, int]:
    node = world.new_node("api")
    node.store.max_attempts = 4  # give up sooner than production would: more 503s to see
    app = create_app(node.store, env=node.env)
    created: set[str] = set()
    statuses: dict[str, int] = {}
    async with app.test_app() as test_app:
        client = test_app.test_client()

        async def one(i: int) -> None:
            response = await client.post("/v1/blocks/", json={"label": "l", "value": f"v{i}"})
            body = await response.get_json()
            key = str(response.status_code)
            statuses[key] = statuses.get(key, 0) + 1
            if response.status_code == 200:
                created.add(body["id"])
            else:
                assert response.status_code == 503, body
                assert response.headers["Retry-After"] and "detail" in body

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, i)

        world.faults.enabled = False
        await trio.sleep(1)  # commits still in flight (unknown results) land or fail by now
        listed = {b["id"] for b in await (await client.get("/v1/blocks/?limit=1000")).get_json()}

    async def stored(tr: Transaction) -> tuple[set[str], set[str]]:
        records = {keys.BLOCKS.unpack(k)[0] for k, _ in await tr.get_prefix(keys.BLOCKS.key())}
        index = {BLOCK_INDEX.unpack(k)[1] for k, _ in await tr.get_prefix(BLOCK_INDEX.key())}
        return records, index

    records, index = await node.store.transact(stored)
    assert records == index, "a block without its index entry, or the reverse"
    assert created <= records, "a block the client was told about is missing"
    assert listed == records
    # A 503 may still have landed (the store gave up after an unknown result),
    # but never as half a block: the sets above match.
    return statuses


def test_dst_api_requests_succeed_whole_or_fail_cleanly_under_storage_faults() -> None:
    totals: dict[str, int] = {}

    def one(seed: int) -> None:
        for status, count in SimWorld(seed, FAULTS).run(blocks_under_faults).items():
            totals[status] = totals.get(status, 0) + count

    run_seeds(one, 20)
    assert totals.get("200", 0) > 0 and totals.get("503", 0) > 0  # both paths really ran


async def agents_under_faults(world: SimWorld) -> dict[str, int]:
    node = world.new_node("api")
    node.store.max_attempts = 4
    app = create_app(node.store, env=node.env)
    created: set[str] = set()
    statuses: dict[str, int] = {}
    async with app.test_app() as test_app:
        client = test_app.test_client()

        async def one(i: int) -> None:
            response = await client.post(
                "/v1/agents/",
                json={
                    "name": f"a{i}",
                    "tags": [f"t{i % 3}"],
                    "memory_blocks": [
                        {"label": "human", "value": f"h{i}"},
                        {"label": "persona", "value": f"p{i}"},
                    ],
                },
            )
            key = str(response.status_code)
            statuses[key] = statuses.get(key, 0) + 1
            if response.status_code == 200:
                created.add((await response.get_json())["id"])
            else:
                assert response.status_code == 503

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(one, i)
        world.faults.enabled = False
        await trio.sleep(1)

    async def stored(tr: Transaction) -> tuple[set[str], set[str], set[str], set[tuple]]:
        agents = {keys.AGENTS.unpack(k)[0] for k, _ in await tr.get_prefix(keys.AGENTS.key())}
        index = {AGENT_INDEX.unpack(k)[1] for k, _ in await tr.get_prefix(AGENT_INDEX.key())}
        blocks = {keys.BLOCKS.unpack(k)[0] for k, _ in await tr.get_prefix(keys.BLOCKS.key())}
        links = {BLOCK_AGENTS.unpack(k) for k, _ in await tr.get_prefix(BLOCK_AGENTS.key())}
        return agents, index, blocks, links

    agents, index, blocks, links = await node.store.transact(stored)
    assert agents == index and created <= agents
    assert {block for block, _ in links} == blocks, "an orphan block, or a link to nothing"
    assert {agent for _, agent in links} == agents
    assert len(blocks) == 2 * len(agents)
    return statuses


def test_dst_api_agent_creation_is_all_or_nothing_under_storage_faults() -> None:
    totals: dict[str, int] = {}

    def one(seed: int) -> None:
        for status, count in SimWorld(seed, FAULTS).run(agents_under_faults).items():
            totals[status] = totals.get(status, 0) + count

    run_seeds(one, 20)
    assert totals.get("200", 0) > 0 and totals.get("503", 0) > 0
