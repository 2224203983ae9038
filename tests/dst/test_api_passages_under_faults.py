"""Archival memory in the simulator: concurrent inserts and deletes under storage faults.

Every request either succeeds whole or fails with a clean 503. Afterwards the
store holds exactly the acknowledged inserts minus the acknowledged deletes;
a request that failed may or may not have landed, but never as half of one:
each record has its index entry (at its creation time) and the reverse, no
insert landed twice, and list and search see exactly what is stored.
"""

from __future__ import annotations

import trio

from kelpie_trio.api.app import create_app
from kelpie_trio.models import convert
from kelpie_trio.models.passages import Passage
from kelpie_trio.service import PASSAGE_INDEX
from kelpie_trio.service.common import micros
from kelpie_trio.sim import FaultConfig, SimWorld
from kelpie_trio.sim.faults import STORAGE_FAULTS
from kelpie_trio.sim.seeds import run_seeds
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

FAULTS = FaultConfig(dict.fromkeys(STORAGE_FAULTS, 0.15))
INSERTS = 30


async def passages_under_faults(world: SimWorld) -> dict[str, int]:
    node = world.new_node("api")
    node.store.max_attempts = 4  # give up sooner than production would: more 503s to see
    app = create_app(node.store, env=node.env)
    statuses: dict[str, int] = {}
    inserted: dict[str, str] = {}  # text -> passage id, for each acknowledged insert
    deleted: set[str] = set()  # acknowledged deletes
    delete_failed: set[str] = set()  # deletes that answered 503: either outcome is fine

    def count(status: int) -> None:
        statuses[str(status)] = statuses.get(str(status), 0) + 1

    async with app.test_app() as test_app:
        client = test_app.test_client()
        world.faults.enabled = False
        response = await client.post("/v1/agents/", json={"name": "archivist"})
        assert response.status_code == 200
        agent_id = (await response.get_json())["id"]
        other = await client.post("/v1/agents/", json={"name": "bystander"})
        other_id = (await other.get_json())["id"]
        await client.post(f"/v1/agents/{other_id}/archival-memory", json={"text": "passage x"})
        world.faults.enabled = True
        base = f"/v1/agents/{agent_id}/archival-memory"

        async def one(i: int) -> None:
            text = f"passage {i}"
            response = await client.post(base, json={"text": text, "tags": [f"t{i % 3}"]})
            body = await response.get_json()
            count(response.status_code)
            if response.status_code != 200:
                assert response.status_code == 503, body
                assert response.headers["Retry-After"] and "detail" in body
                return
            assert [p["text"] for p in body] == [text]
            passage_id = body[0]["id"]
            inserted[text] = passage_id
            if i % 2:
                return
            response = await client.delete(f"{base}/{passage_id}")
            count(response.status_code)
            if response.status_code == 200:
                deleted.add(passage_id)
            else:
                assert response.status_code == 503, await response.get_json()
                delete_failed.add(passage_id)

        async with trio.open_nursery() as nursery:
            for i in range(INSERTS):
                nursery.start_soon(one, i)

        world.faults.enabled = False
        await trio.sleep(1)  # commits still in flight (unknown results) land or fail by now
        listed = {p["id"] for p in await (await client.get(f"{base}?limit=1000")).get_json()}
        found = await (await client.get(f"{base}/search?query=passage&top_k=1000")).get_json()
        searched = {r["id"] for r in found["results"]}

    async def stored(tr: Transaction) -> tuple[list[Passage], set[tuple]]:
        parts: dict[str, list[bytes]] = {}
        for key, value in await tr.get_prefix(keys.PASSAGES.pack((agent_id,))):
            parts.setdefault(keys.PASSAGES.unpack(key)[1], []).append(value)
        records = [convert.decode_record(b"".join(v), Passage) for v in parts.values()]
        index = {
            PASSAGE_INDEX.unpack(k)[1:]
            for k, _ in await tr.get_prefix(PASSAGE_INDEX.pack((agent_id,)))
        }
        return records, index

    records, index = await node.store.transact(stored)
    by_id = {p.id: p for p in records}
    assert index == {(micros(p.created_at), p.id) for p in records}, "record and index disagree"
    texts = [p.text for p in records]
    assert len(texts) == len(set(texts)), "an insert landed twice"
    assert set(texts) <= {f"passage {i}" for i in range(INSERTS)}
    for text, passage_id in inserted.items():
        if passage_id in deleted:
            assert passage_id not in by_id, "an acknowledged delete is still stored"
        elif passage_id not in delete_failed:
            assert by_id.get(passage_id) is not None, "an acknowledged insert is missing"
            assert by_id[passage_id].text == text
    assert listed == set(by_id) == searched, "list or search disagrees with the store"
    return statuses


def test_dst_passage_inserts_and_deletes_are_whole_under_storage_faults() -> None:
    totals: dict[str, int] = {}

    def one(seed: int) -> None:
        for status, n in SimWorld(seed, FAULTS).run(passages_under_faults).items():
            totals[status] = totals.get(status, 0) + n

    run_seeds(one, 20)
    assert totals.get("200", 0) > 0 and totals.get("503", 0) > 0  # both paths really ran
