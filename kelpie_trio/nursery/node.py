"""One node's whole life in one screen: the root nursery and its children.

    kelpie-trio serve
      root nursery
        store            SQLite writer / FDB network bridge        nursery.start
        indexer          drains the search outbox into the index   nursery.start
        dispatcher       supervisor nursery -> one task per agent,  nursery.start
                         lease keeper (renews leases in batches)
        HTTP server      hypercorn.trio.serve                        nursery.start
      on SIGINT/SIGTERM: stop HTTP intake (in-flight requests finish), drain
      the actors' mailboxes within the grace period and release their leases
      (another node takes over at once), then stop the rest.

Each child is started with `nursery.start`, so readiness is explicit.
"""

from __future__ import annotations

import functools
import logging
import signal
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio

from kelpie_trio.agent.actor import AgentActor
from kelpie_trio.agent.llms import llm_factory
from kelpie_trio.api.app import create_app
from kelpie_trio.config import ServerConfig
from kelpie_trio.env import Env, RealEnv
from kelpie_trio.llm.catalog import ModelCatalog
from kelpie_trio.llm.config import CatalogConfig
from kelpie_trio.llm.discovery import discover, keep_catalog_fresh
from kelpie_trio.nursery.actor import Actor, ActorContext, ActorFactory
from kelpie_trio.nursery.dispatcher import Dispatcher, RuntimeConfig
from kelpie_trio.nursery.metrics import RuntimeMetrics
from kelpie_trio.nursery.transport import HttpTransport
from kelpie_trio.search.open import open_search
from kelpie_trio.service import AgentService
from kelpie_trio.storage import MemoryStore, Store
from kelpie_trio.tools.isolation import SandboxStatus, prepare, refused

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
    actor_factory: ActorFactory | None = None,
    runtime: RuntimeConfig | None = None,
    shutdown: trio.Event | None = None,
    handle_signals: bool = True,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT/SIGTERM (or `shutdown` is set), then stop cleanly.

    `task_status.started` gets the node's dispatcher once it serves.
    """
    env = env or RealEnv()
    sandbox_status: SandboxStatus | None = None
    if shutdown is None:
        shutdown = trio.Event()
    store = open_store(config, env)
    metrics = RuntimeMetrics()
    transport = HttpTransport(token=config.cluster_token or config.password)
    # The models each provider has, asked at start (and every KELPIE_MODELS_REFRESH seconds);
    # a provider that does not answer offers its fixed set.
    catalog_config = CatalogConfig.from_env()
    found = await discover(catalog_config)
    service = AgentService(store, env, ModelCatalog.from_config(catalog_config, found))
    service.search_layer = open_search(config, store, env)
    if actor_factory is None:
        llm_for = llm_factory(
            env,
            catalog_config=catalog_config,
            sim_latency=(config.sim_latency, config.sim_latency),
        )
        # Asked once, before serving: can this host isolate custom tools? (isolation.py)
        hidden = (str(config.data_dir), str(config.db_path))
        sandbox, sandbox_status = await prepare(config.tools, hidden, config.data_dir / "tool-envs")
        if sandbox_status.custom_tools == "isolated":
            log.info("%s", sandbox_status.message())
        else:
            log.warning("%s", sandbox_status.message())

        async def run_tool(
            tool: Any, arguments: dict[str, Any], *, env_vars: dict[str, str] | None = None
        ) -> Any:
            if sandbox is None:
                return refused(sandbox_status)
            return await sandbox.run(
                tool.source_code or "",
                tool.name,
                arguments,
                env_vars=env_vars,
                pip_requirements=tool.pip_requirements,
            )

        def actor_factory(ctx: ActorContext) -> Actor:
            return AgentActor(ctx, service, llm_for, run_tool)

    dispatcher = Dispatcher(
        node_id=env.new_id("node"),
        address=config.advertise_url or f"http://{config.host}:{config.port}",
        env=env,
        store=store,
        factory=actor_factory,
        transport=transport,
        config=runtime
        or RuntimeConfig(
            idle_timeout=config.idle_timeout,
            lease_ttl=config.lease_ttl,
            renew_interval=config.lease_ttl / 3,
        ),
        observer=metrics,
    )
    app = create_app(
        store,
        dispatcher,
        metrics,
        env=env,
        cluster_token=config.cluster_token,
        password=config.password,
        service=service,
        sandbox_status=sandbox_status,
    )
    serve = functools.partial(
        hypercorn.trio.serve, app, _hypercorn_config(config), shutdown_trigger=shutdown.wait
    )
    try:
        async with trio.open_nursery() as root:
            await root.start(store.run)
            await root.start(service.search_layer.run)  # the indexer drains the search outbox
            await root.start(dispatcher.run)
            service.background = root  # turns that outlive their request
            if handle_signals:
                root.start_soon(_shutdown_on_signal, shutdown)
            if (every := catalog_config.refresh_seconds) is not None:

                def publish(catalog: ModelCatalog) -> None:
                    service.catalog = catalog  # read afresh by every request

                root.start_soon(
                    functools.partial(
                        keep_catalog_fresh, catalog_config, every, publish, found=found
                    )
                )
            # The HTTP server gets a nursery of its own: it returns once `shutdown`
            # is set and in-flight requests are done (hypercorn's graceful_timeout).
            async with trio.open_nursery() as http:
                binds = await http.start(serve)
                if config.advertise_url is None:
                    dispatcher.address = binds[0]  # the port, if it was 0, is known now
                    await store.transact(dispatcher.heartbeat)
                log.info("kelpie-trio serving on %s (store: %s)", binds, config.store)
                root.start_soon(service.keep_runs_going, config.lease_ttl)
                task_status.started(dispatcher)
            await dispatcher.shutdown(config.graceful_timeout)
            root.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await transport.aclose()
            await store.aclose()


async def _shutdown_on_signal(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            shutdown.set()
            return
