"""Two real nodes on loopback sharing one SQLite file: forwarding over HTTP, one activation.

The nodes are `run_node` itself (store, dispatcher, Hypercorn) with a small
journal actor, so the path under test is production's: lease in SQLite,
HttpTransport to the owner's internal route, the reply relayed back.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import httpx
import trio

from kelpie_trio.config import ServerConfig
from kelpie_trio.nursery.actor import ActorContext
from kelpie_trio.nursery.dispatcher import Dispatcher, RuntimeConfig
from kelpie_trio.nursery.node import run_node
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

LOG = keys.MESSAGES


class Journal:
    """Appends each message id to the agent's log, with the node that wrote it."""

    def __init__(self, ctx: ActorContext) -> None:
        self.ctx = ctx
        self.seq = 0

    async def on_activate(self) -> None:
        agent = self.ctx.agent_id

        async def count(tr: Transaction) -> int:
            return len(await tr.get_prefix(LOG.pack((agent,))))

        self.seq = await self.ctx.transact(count)

    async def handle(self, message: dict[str, Any]) -> int:
        seq, ctx = self.seq, self.ctx

        async def append(tr: Transaction) -> None:
            tr.set(LOG.pack((ctx.agent_id, seq)), keys.pack((message["id"], ctx.node_id)))

        await ctx.transact(append)
        self.seq += 1
        return seq

    async def on_deactivate(self) -> None:
        pass


async def start_node(nursery: trio.Nursery, db: Path, token: str) -> tuple[Dispatcher, trio.Event]:
    config = ServerConfig(port=0, db=db, graceful_timeout=2, cluster_token=token)
    stop = trio.Event()
    dispatcher = await nursery.start(
        functools.partial(
            run_node,
            config,
            actor_factory=Journal,
            runtime=RuntimeConfig(lease_ttl=3.0, renew_interval=0.5),
            shutdown=stop,
            handle_signals=False,
        )
    )
    return dispatcher, stop


async def test_two_nodes_forward_over_http_and_hand_over_on_shutdown(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as node_a:
                a, stop_a = await start_node(node_a, db, "s3cret")
                b, stop_b = await start_node(nursery, db, "s3cret")
                replies = [
                    await (a if i % 2 == 0 else b).invoke("agent-1", {"id": f"m{i}"})
                    for i in range(6)
                ]
                assert replies == [0, 1, 2, 3, 4, 5]  # one history, in order
                assert a.active_agents == ["agent-1"] and b.active_agents == []

                async with httpx.AsyncClient() as client:
                    metrics = (await client.get(f"{b.address}/metrics")).text
                    assert "kelpie_forwards_total 3.0" in metrics
                    # The internal route is for the cluster only.
                    refused = await client.post(
                        f"{b.address}/internal/v1/agents/agent-1/invoke", json={"message": {}}
                    )
                    assert refused.status_code == 401
                stop_a.set()  # and wait, leaving this block, until node a has stopped

            # Graceful shutdown of the owner released its lease: b takes over at once.
            with trio.fail_after(2):  # well under the 3 s lease ttl
                assert await b.invoke("agent-1", {"id": "after"}) == 6
            assert b.active_agents == ["agent-1"]
            stop_b.set()

    from kelpie_trio.storage.sqlite import SqliteStore

    store = SqliteStore(db)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)

        async def read(tr: Transaction) -> list[tuple[bytes, bytes]]:
            return await tr.get_prefix(LOG.pack(("agent-1",)))

        log = [keys.unpack(v) for _, v in await store.transact(read)]
        await store.aclose()
    assert [mid for mid, _ in log] == ["m0", "m1", "m2", "m3", "m4", "m5", "after"]
    assert {node for _, node in log[:6]} == {a.node_id} and log[6][1] == b.node_id
