"""A disk that fills up (the fault table's StorageFull) under the agent server.

A full disk is not a transient conflict: a request that meets it is answered at once,
and honestly. A send answered with an error either stored nothing, or its answer says
what it stored (the user's message, in which run) and what became of that run; one
answered 2xx is stored whole. Sends carry otids, so each is found in the store.
CRUD through the API: a 200 is stored, a 507 (at once, "nothing was stored") is not.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import trio

from kelpie_trio.agent import runs
from kelpie_trio.api.app import create_app
from kelpie_trio.errors import InsufficientStorage
from kelpie_trio.nursery.dispatcher import RuntimeConfig
from kelpie_trio.sim import FaultConfig, FaultType, SimWorld
from kelpie_trio.sim.llm import text
from kelpie_trio.sim.seeds import run_seeds, seeds
from kelpie_trio.storage import StorageUnavailable, keys
from kelpie_trio.storage.base import Transaction
from tests.dst.agent_harness import AgentCluster, history_of, new_agent, simulate_cluster

FULL = FaultConfig({FaultType.STORAGE_FULL: 0.15})
SENDS = 8
STORED = re.compile(r"was stored \(run (\S+)\) but the agent could not finish its turn: (.*)")


def body(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"m{i}", "otid": f"otid-{i}"}]}


async def sends_on_a_filling_disk(sim: AgentCluster) -> Any:
    service = sim.service()
    agent = await new_agent(service)
    sim.world.faults.enabled = True
    outcomes: dict[int, Any] = {}
    for i in range(SENDS):
        started = trio.current_time()
        # Through either node: one of them forwards to the agent's, and the refusal
        # crosses between them as itself.
        via = sim.service(sim.names[i % len(sim.names)])
        try:
            outcomes[i] = await via.send_message(agent, body(i))
        except InsufficientStorage as refused:
            assert trio.current_time() - started < 1.0, "a full disk is answered at once"
            # What the run had stored when the client was answered (reads still work).
            said = STORED.search(str(refused))
            run_id = said.group(1) if said else None
            at_answer = {m.id for m in await history_of(service, agent) if m.run_id == run_id}
            outcomes[i] = (refused, at_answer)
    sim.world.faults.enabled = False
    await trio.sleep(30)  # the sweep resumes what was left open, if anything was

    async def stored_runs(tr: Transaction) -> dict[int, Any]:
        found = {}
        for i in range(SENDS):
            found[i] = await runs.find_by_key(tr, agent, f"otid:otid-{i}")
        return found

    return outcomes, await service.store.transact(stored_runs), await history_of(service, agent)


def check_honest_answers(seed: int) -> Counter[str]:
    outcomes, stored, history = simulate_cluster(
        seed,
        sends_on_a_filling_disk,
        FULL,
        quiet_start=True,
        script=[text(f"reply {i}") for i in range(4 * SENDS)],
        config=RuntimeConfig(lease_ttl=3.0, renew_interval=1.0),
        resume_interval=1.0,
        nodes=2,
    )
    by_otid = {m.otid: m for m in history if m.otid}
    kept = {m.id for m in history}
    kinds: Counter[str] = Counter()
    for i, outcome in outcomes.items():
        run = stored[i]
        if not isinstance(outcome, tuple):  # 2xx: stored whole
            kinds["answered"] += 1
            assert run is not None and run.finished
            assert f"otid-{i}" in by_otid
            assert {m["id"] for m in outcome["messages"]} <= kept
            continue
        detail, at_answer = str(outcome[0]), outcome[1]
        assert "storage is full" in detail
        if "nothing was stored" in detail:
            kinds["refused, nothing stored"] += 1
            assert run is None and f"otid-{i}" not in by_otid, "a refused send changed something"
            continue
        # It says what it stored, in which run, and what became of the run.
        said = STORED.search(detail)
        assert said, detail
        assert run is not None and run.id == said.group(1)
        assert f"otid-{i}" in by_otid and by_otid[f"otid-{i}"].run_id == run.id
        kinds["refused, said what it stored"] += 1
        if said.group(2).startswith("it ended"):  # so its turn did not run later
            assert run.finished and run.checkpoint.stop_reason == "error"
            assert {m.id for m in history if m.run_id == run.id} == at_answer
        else:  # it said the run stays open and goes on: the sweep finished it since
            assert said.group(2).startswith("it stays open"), detail
            assert run.finished
    return kinds


def test_dst_a_send_refused_by_a_full_disk_changed_nothing_or_says_what_it_stored() -> None:
    totals: Counter[str] = Counter()

    def one(seed: int) -> None:
        totals.update(check_honest_answers(seed))

    run_seeds(one, 8)
    if len(seeds(8)) == 8:  # every kind of answer really happened (one seed may not show all)
        assert len(totals) == 3, totals


async def blocks_on_a_filling_disk(world: SimWorld) -> tuple[Counter[int], set[str], set[str]]:
    node = world.new_node("api")
    app = create_app(node.store, env=node.env)
    statuses: Counter[int] = Counter()
    answered: set[str] = set()

    async def one(client: Any, i: int) -> None:
        started = trio.current_time()
        response = await client.post("/v1/blocks/", json={"label": "l", "value": f"v{i}"})
        answer = await response.get_json()
        statuses[response.status_code] += 1
        assert trio.current_time() - started < 1.0  # a full disk is no reason to wait
        if response.status_code == 200:
            answered.add(answer["id"])
            return
        assert response.status_code == 507, answer
        assert "storage is full" in answer["detail"] and "nothing was stored" in answer["detail"]
        assert response.headers["x-should-retry"] == "false"
        assert "Retry-After" not in response.headers

    async with app.test_app() as test_app:
        client = test_app.test_client()
        for i in range(40):
            await one(client, i)
            await trio.sleep(0.05)
    world.faults.enabled = False

    async def stored(tr: Transaction) -> set[str]:
        return {keys.BLOCKS.unpack(k)[0] for k, _ in await tr.get_prefix(keys.BLOCKS.key())}

    return statuses, answered, await node.store.transact(stored)


def test_dst_crud_on_a_filling_disk_is_200_and_stored_or_507_and_not_stored() -> None:
    totals: Counter[int] = Counter()

    def one(seed: int) -> None:
        statuses, answered, stored = SimWorld(seed, FULL).run(blocks_on_a_filling_disk)
        # Exactly: a full disk writes nothing, so no refused block may be there.
        assert stored == answered
        totals.update(statuses)

    run_seeds(one, 10)
    if len(seeds(10)) == 10:
        assert totals[200] > 0 and totals[507] > 0, totals


def test_a_refusal_whose_outcome_cannot_be_read_says_it_is_not_known() -> None:
    async def scenario(sim: AgentCluster) -> str:
        service = sim.service()
        agent = await new_agent(service)

        async def unreadable(wanted: Any) -> None:
            raise StorageUnavailable("reads fail too")

        service._find_wanted = unreadable  # type: ignore[method-assign]
        sim.world.faults.enabled = True
        try:
            await service.send_message(agent, body(0))
        except InsufficientStorage as refused:
            return str(refused)
        raise AssertionError("not refused")

    detail = simulate_cluster(
        5, scenario, FaultConfig({FaultType.STORAGE_FULL: 1.0}), quiet_start=True
    )
    assert "storage is full" in detail and "is not known" in detail
    assert "nothing was stored" not in detail
