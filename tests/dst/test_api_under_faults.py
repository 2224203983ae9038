"""The API in the simulator: the Quart app on a SimStore, driven by its test client.

Under storage faults every request either succeeds whole or fails with a clean
JSON error (503 + Retry-After when the store gives up), and the store never
holds half a request: no record without its index entry, none without a 200.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import trio
from quart.testing import QuartClient
from quart_trio import QuartTrio

from kelpie_trio.api.app import create_app
from kelpie_trio.service import AGENT_INDEX, BLOCK_AGENTS, BLOCK_INDEX
from kelpie_trio.sim import FaultConfig, SimNode, SimWorld
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.seeds import across_seeds, run_seeds
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

FAULTS = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.15))


def api_on_a_sim_node(world: SimWorld) -> tuple[SimNode, QuartTrio]:
    node = world.new_node("api")
    node.store.max_attempts = 4  # give up sooner than production would: more 503s to see
    return node, create_app(node.store, env=node.env)


async def post_concurrently(
    client: QuartClient, path: str, bodies: list[dict], statuses: Counter[int]
) -> set[str]:
    """POST every body at once; the ids of those answered 200. Others must be clean 503s."""
    created: set[str] = set()

    async def one(body: dict) -> None:
        response = await client.post(path, json=body)
        answer = await response.get_json()
        statuses[response.status_code] += 1
        if response.status_code == 200:
            created.add(answer["id"])
        else:
            assert response.status_code == 503, answer
            assert response.headers["Retry-After"] and "detail" in answer

    async with trio.open_nursery() as nursery:
        for body in bodies:
            nursery.start_soon(one, body)
    return created


def run_over_seeds(scenario: Callable[[SimWorld, Counter[int]], Awaitable[None]]) -> None:
    statuses: Counter[int] = Counter()
    ran = run_seeds(lambda seed: SimWorld(seed, FAULTS).run(lambda w: scenario(w, statuses)), 20)
    if across_seeds(ran, 20):
        assert statuses[200] > 0 and statuses[503] > 0  # both paths really ran


async def blocks_under_faults(world: SimWorld, statuses: Counter[int]) -> None:
    node, app = api_on_a_sim_node(world)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        bodies = [{"label": "l", "value": f"v{i}"} for i in range(40)]
        created = await post_concurrently(client, "/v1/blocks/", bodies, statuses)
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


def test_dst_api_requests_succeed_whole_or_fail_cleanly_under_storage_faults() -> None:
    run_over_seeds(blocks_under_faults)


async def agents_under_faults(world: SimWorld, statuses: Counter[int]) -> None:
    node, app = api_on_a_sim_node(world)
    bodies = [
        {
            "name": f"a{i}",
            "tags": [f"t{i % 3}"],
            "memory_blocks": [
                {"label": "human", "value": f"h{i}"},
                {"label": "persona", "value": f"p{i}"},
            ],
        }
        for i in range(30)
    ]
    async with app.test_app() as test_app:
        created = await post_concurrently(test_app.test_client(), "/v1/agents/", bodies, statuses)
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


def test_dst_api_agent_creation_is_all_or_nothing_under_storage_faults() -> None:
    run_over_seeds(agents_under_faults)
