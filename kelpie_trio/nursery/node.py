"""One node's whole life in one screen: the root nursery and its children.

    kelpie-trio serve
      root nursery
        store            (SQLite writer / FDB network bridge)   nursery.start
        HTTP server      (hypercorn.trio.serve)                 nursery.start
      on SIGINT/SIGTERM: stop HTTP intake (graceful), then the rest.

The lease keeper, the indexer and the supervisor of agent actors join this
tree in their own issues, each started with `nursery.start` so readiness is
explicit.
"""

from __future__ import annotations

import functools
import logging
import signal
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio

from kelpie_trio.api.app import create_app
from kelpie_trio.config import ServerConfig
from kelpie_trio.env import Env, RealEnv
from kelpie_trio.storage import MemoryStore, Store

__all__ = ["open_store", "run_node"]

log = logging.getLogger("kelpie_trio.node")


def open_store(config: ServerConfig, env: Env) -> Store:
    if config.store == "memory":
        return MemoryStore(env)
    if config.store == "fdb":
        from kelpie_trio.storage.foundationdb import FdbStore

        return FdbStore(config.fdb_cluster_file, env)
    from kelpie_trio.storage.sqlite import SqliteStore

    config.db_path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(config.db_path, env)


def _hypercorn_config(config: ServerConfig) -> hypercorn.config.Config:
    hc = hypercorn.config.Config()
    hc.bind = [f"{config.host}:{config.port}"]
    hc.graceful_timeout = config.graceful_timeout
    hc.accesslog = None  # one structured line per request comes with the API issue
    return hc


async def run_node(
    config: ServerConfig,
    *,
    env: Env | None = None,
    shutdown: trio.Event | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT/SIGTERM (or `shutdown` is set), then stop cleanly."""
    env = env or RealEnv()
    shutdown = shutdown or trio.Event()
    store = open_store(config, env)
    try:
        async with trio.open_nursery() as root:
            await root.start(store.run)
            root.start_soon(_shutdown_on_signal, shutdown)
            app = create_app(store)
            serve = functools.partial(
                hypercorn.trio.serve, app, _hypercorn_config(config), shutdown_trigger=shutdown.wait
            )
            # The HTTP server gets a nursery of its own: it returns once `shutdown`
            # is set and in-flight requests are done (hypercorn's graceful_timeout).
            async with trio.open_nursery() as http:
                binds = await http.start(serve)
                log.info("kelpie-trio serving on %s (store: %s)", binds, config.store)
                task_status.started(binds)
            root.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


async def _shutdown_on_signal(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            shutdown.set()
            return
