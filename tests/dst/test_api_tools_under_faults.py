"""Tools in the simulator: created, attached and deleted concurrently under storage faults.

Names are unique even when many requests race for one name and commits come
back with unknown results (a retry must not answer 409 to its own success);
a tool never exists without its index and name entries; a deleted tool is
gone from every agent that held it.
"""

from __future__ import annotations

from collections import Counter

import orjson
import trio
from quart.testing import QuartClient

from kelpie_trio.service.tools import TOOL_AGENTS, TOOL_INDEX, TOOL_NAMES, TOOLS
from kelpie_trio.sim import SimWorld
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.tools.base import BASE_TOOLS_BY_ID
from tests.dst.test_api_under_faults import api_on_a_sim_node, run_over_seeds

NAMES = [f"tool_{i}" for i in range(6)]


def source(name: str, version: int) -> str:
    return f'def {name}(x: int) -> int:\n    """Version {version}."""\n    return x\n'


async def send(
    client: QuartClient, method: str, path: str, statuses: Counter[int], body: dict | None = None
) -> dict | None:
    """The answer of a 200, else None; anything else must be a clean refusal.

    409: the name is taken; 404: the tool was deleted meanwhile; 400: an agent
    names a tool that is gone (Letta's "Tools not found by name"); 503: the store gave up.
    """
    response = await client.open(path, method=method, json=body)
    answer = await response.get_json()
    statuses[response.status_code] += 1
    if response.status_code == 503:
        assert response.headers["Retry-After"] and "detail" in answer
    else:
        assert response.status_code in (200, 400, 404, 409), (response.status_code, answer)
    return answer if response.status_code == 200 else None


async def tools_under_faults(world: SimWorld, statuses: Counter[int]) -> None:
    node, app = api_on_a_sim_node(world)
    created: dict[str, str] = {}  # id -> name, of every 200 to a create
    async with app.test_app() as test_app:
        client = test_app.test_client()

        async def create(i: int) -> None:
            name = NAMES[i % len(NAMES)]
            answer = await send(
                client, "POST", "/v1/tools/", statuses, {"source_code": source(name, i)}
            )
            if answer is not None:
                created[answer["id"]] = answer["name"]

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(create, i)
        assert len(set(created.values())) == len(created), "two tools answered for one name"

        # Agents take the tools by name while some of the tools are deleted.
        doomed = sorted(created)[::2]

        async def agent(i: int) -> None:
            body = {"name": f"a{i}", "tools": [NAMES[i % len(NAMES)]]}
            await send(client, "POST", "/v1/agents/", statuses, body)

        async def delete(tool_id: str) -> None:
            await send(client, "DELETE", f"/v1/tools/{tool_id}", statuses)

        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(agent, i)
            for tool_id in doomed:
                nursery.start_soon(delete, tool_id)
        world.faults.enabled = False
        await trio.sleep(1)  # commits still in flight land or fail by now

    async def stored(tr: Transaction) -> tuple:
        records = {TOOLS.unpack(k)[0] for k, _ in await tr.get_prefix(TOOLS.key())}
        index = {TOOL_INDEX.unpack(k)[1] for k, _ in await tr.get_prefix(TOOL_INDEX.key())}
        names = {
            TOOL_NAMES.unpack(k)[0]: v.decode() for k, v in await tr.get_prefix(TOOL_NAMES.key())
        }
        links = {TOOL_AGENTS.unpack(k) for k, _ in await tr.get_prefix(TOOL_AGENTS.key())}
        agents: dict[str, list[str]] = {}
        for key, value in await tr.get_prefix(keys.AGENTS.key()):
            agents[keys.AGENTS.unpack(key)[0]] = orjson.loads(value)["tool_ids"]
        return records, index, names, links, agents

    records, index, names, links, agents = await node.store.transact(stored)
    assert records == index, "a tool without its index entry, or the reverse"
    assert set(names.values()) == records, "a name claimed by nothing, or a tool without one"
    assert len(names) == len(records) <= len(NAMES)
    assert set(created) - set(doomed) <= records
    held = {(t, a) for a, tool_ids in agents.items() for t in tool_ids}
    assert held == links, "an agent's tools and the (tool, agent) index disagree"
    custom_held = {t for t, _ in held if t not in BASE_TOOLS_BY_ID}
    assert custom_held <= records, "an agent holds a deleted tool"


def test_dst_tool_names_stay_unique_and_deletes_detach_under_storage_faults() -> None:
    run_over_seeds(tools_under_faults)
