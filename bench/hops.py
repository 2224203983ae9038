"""The store's round trips of one message, exactly: `python -m bench.hops`.

One node in process on a fresh SQLite file (the offline `sim/agent` model, no HTTP, no
indexer, no other client), so every SQLite thread hop and every transaction counted
around a message is that message's own. Sends `--messages` messages in a row to one new
agent and prints, for each, the store's batches (`SqliteStats.batches`) and of them the
thread hops (`SqliteStats.hops`: the others ran on the trio thread), commits, read-only
transactions and reads (`Store.counts`), and the read transactions the trio thread's
reader began for those reads (`InlineReader.snapshots`), and of them those on the writer's
connection (`InlineReader.on_writer`: its page cache warm). The first message includes the
activation.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from kelpie_trio.agent.actor import AgentActor
from kelpie_trio.agent.llms import llm_factory
from kelpie_trio.env import RealEnv
from kelpie_trio.llm.catalog import ModelCatalog
from kelpie_trio.llm.config import CatalogConfig
from kelpie_trio.nursery.dispatcher import Dispatcher
from kelpie_trio.nursery.transport import HttpTransport
from kelpie_trio.service import AgentService
from kelpie_trio.storage.sqlite import SqliteStore


@contextlib.asynccontextmanager
async def node_in_process(
    store: SqliteStore, env: RealEnv, *, catalog_config: CatalogConfig | None = None
) -> AsyncIterator[AgentService]:
    """One node on `store`, its service with a dispatcher that never forwards, until the
    block ends (bench.history_growth uses it too)."""
    catalog = ModelCatalog.from_config(catalog_config) if catalog_config is not None else None
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        service = AgentService(store, env, catalog)
        service.background = nursery
        llm_for = llm_factory(env, catalog_config=catalog_config)
        service.dispatcher = Dispatcher(
            node_id="in-process",
            address="http://127.0.0.1:9",  # one node: never forwards
            env=env,
            store=store,
            factory=lambda ctx: AgentActor(ctx, service, llm_for),
            transport=HttpTransport(),
        )
        await nursery.start(service.dispatcher.run)
        yield service
        nursery.cancel_scope.cancel()


async def count(messages: int) -> list[dict[str, int]]:
    env = RealEnv()
    rows: list[dict[str, int]] = []
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "kelpie.db")
        async with node_in_process(store, env) as service:
            body = {"model": "sim/agent", "memory_blocks": [{"label": "human", "value": "Ada"}]}
            agent = (await service.create_agent(body)).agent.id
            reader = store._reader
            assert reader is not None
            for i in range(messages):
                batches, hops, counts = store.stats.batches, store.stats.hops, dict(store.counts)
                snapshots, on_writer = reader.snapshots, reader.on_writer
                sent = {"messages": [{"role": "user", "content": f"message {i}"}]}
                await service.send_message(agent, sent)
                now = store.counts
                row = {
                    "batches": store.stats.batches - batches,
                    "hops": store.stats.hops - hops,
                    "snapshots": reader.snapshots - snapshots,
                    "on_writer": reader.on_writer - on_writer,
                }
                for key in ("commit", "read_only", "reads"):
                    row[key] = now[key] - counts.get(key, 0)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    for i, row in enumerate(trio.run(count, args.messages)):
        print(f"message {i}: {row['batches']} batches ({row['hops']} thread hops), "
              f"{row['commit']} commits, "
              f"{row['read_only']} read-only, {row['reads']} reads "
              f"in {row['snapshots']} SQLite read snapshots "
              f"({row['on_writer']} on the writer's connection)")  # fmt: skip


if __name__ == "__main__":
    main()
