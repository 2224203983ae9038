"""Identities in the simulator: created, upserted, attached, detached and deleted concurrently
under storage faults.

An identifier_key names one identity even when many requests race for it and commits come
back with unknown results (a retry must not answer 409 to its own success, nor an upsert
make a second identity); an identity never exists without its index and key entries, nor a
key entry without its identity; an identity only ever holds agents that existed.
"""

from __future__ import annotations

from collections import Counter

import orjson
import trio
from quart.testing import QuartClient

from kelpie_trio.service.identities import IDENTITY_INDEX, IDENTITY_KEYS
from kelpie_trio.sim import SimWorld
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from tests.dst.test_api_under_faults import api_on_a_sim_node, run_over_seeds

KEYS = [f"user-{i}" for i in range(4)]


async def send(
    client: QuartClient, method: str, path: str, statuses: Counter[int], body: dict | None = None
) -> dict | None:
    """The answer of a 200, else None; anything else must be a clean refusal (409: the key
    is taken; 404: deleted meanwhile; 503: the store gave up, with Retry-After)."""
    response = await client.open(path, method=method, json=body)
    answer = await response.get_json()
    statuses[response.status_code] += 1
    if response.status_code == 503:
        assert response.headers["Retry-After"] and "detail" in answer
    else:
        assert response.status_code in (200, 404, 409), (response.status_code, answer)
    return answer if response.status_code == 200 else None


async def identities_under_faults(world: SimWorld, statuses: Counter[int]) -> None:
    node, app = api_on_a_sim_node(world)
    created: dict[str, str] = {}  # id -> identifier_key, of every 200 to a create or upsert
    async with app.test_app() as test_app:
        client = test_app.test_client()
        agents: list[str] = []
        while len(agents) < 3:  # the agents themselves, made despite the faults
            made = await send(client, "POST", "/v1/agents/", statuses, {"name": "a"})
            if made is not None:
                agents.append(made["id"])

        async def create(i: int) -> None:
            key = KEYS[i % len(KEYS)]
            method = "PUT" if i % 3 == 0 else "POST"
            body = {"identifier_key": key, "name": f"n{i}", "identity_type": "user",
                    "agent_ids": [agents[i % len(agents)]]}  # fmt: skip
            answer = await send(client, method, "/v1/identities/", statuses, body)
            if answer is not None:
                created[answer["id"]] = answer["identifier_key"]

        async with trio.open_nursery() as nursery:
            for i in range(24):
                nursery.start_soon(create, i)
        by_key: dict[str, set[str]] = {}
        for ident, key in created.items():
            by_key.setdefault(key, set()).add(ident)
        assert all(len(ids) == 1 for ids in by_key.values()), "two identities for one key"

        doomed = sorted(created)[::2]

        async def attach(i: int, ident: str) -> None:
            verb = "attach" if i % 2 else "detach"
            path = f"/v1/agents/{agents[i % len(agents)]}/identities/{verb}/{ident}"
            await send(client, "PATCH", path, statuses)

        async def delete(path: str) -> None:
            await send(client, "DELETE", path, statuses)

        async with trio.open_nursery() as nursery:
            for i, ident in enumerate(sorted(created) * 3):
                nursery.start_soon(attach, i, ident)
            for ident in doomed:
                nursery.start_soon(delete, f"/v1/identities/{ident}")
            nursery.start_soon(delete, f"/v1/agents/{agents[0]}")
        world.faults.enabled = False
        await trio.sleep(1)  # commits still in flight land or fail by now
        shown = {}
        for ident in created:
            response = await client.get(f"/v1/identities/{ident}")
            if response.status_code == 200:
                shown[ident] = (await response.get_json())["agent_ids"]

    async def stored(tr: Transaction) -> tuple:
        records = {}
        for key, value in await tr.get_prefix(keys.IDENTITIES.key()):
            records[keys.IDENTITIES.unpack(key)[0]] = orjson.loads(value)
        index = {IDENTITY_INDEX.unpack(k)[1] for k, _ in await tr.get_prefix(IDENTITY_INDEX.key())}
        names = {
            IDENTITY_KEYS.unpack(k): v.decode() for k, v in await tr.get_prefix(IDENTITY_KEYS.key())
        }
        live = {keys.AGENTS.unpack(k)[0] for k, _ in await tr.get_prefix(keys.AGENTS.key())}
        return records, index, names, live

    records, index, names, live = await node.store.transact(stored)
    assert set(records) == index, "an identity without its index entry, or the reverse"
    assert set(names.values()) == set(records), "a key claimed by nothing, or the reverse"
    for ident, record in records.items():
        assert names[(record["project_id"] or "", record["identifier_key"])] == ident
        assert set(record["agent_ids"]) <= set(agents), "an identity holds an unknown agent"
    assert set(created) - set(doomed) <= set(records), "an identity answered 200 is gone"
    assert set(shown) == set(records)
    for agent_ids in shown.values():
        assert set(agent_ids) <= live, "a deleted agent shown in an identity"


def test_dst_identity_keys_stay_unique_and_records_whole_under_storage_faults() -> None:
    run_over_seeds(identities_under_faults)
