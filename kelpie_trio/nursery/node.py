"""One node's whole life in one screen: the root nursery and its children.

    kelpie-trio serve
      root nursery
        store            SQLite writer / FDB network bridge        nursery.start
        indexer          drains the search outbox into the index   nursery.start
        MCP sessions     one task per MCP server in use (mcp/)      nursery.start
        file worker      parses, chunks, indexes uploaded files     nursery.start
        dispatcher       supervisor nursery -> one task per agent,  nursery.start
                         heartbeat keeper (one record per node)
        HTTP server      hypercorn.trio.serve                        nursery.start
        schedule firer   sends scheduled messages as they fall due  nursery.start
      on SIGINT/SIGTERM: stop HTTP intake (in-flight requests finish), drain
      the actors' mailboxes within the grace period and release their leases
      (another node takes over at once), then stop the rest.

Each child is started with `nursery.start`, so readiness is explicit.
"""

from __future__ import annotations

import functools
import logging
import signal
from pathlib import Path
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio

from kelpie_trio import __version__
from kelpie_trio.agent.actor import AgentActor
from kelpie_trio.agent.llms import llm_factory
from kelpie_trio.api.app import create_app
from kelpie_trio.config import ServerConfig, StartupError
from kelpie_trio.env import Env, RealEnv
from kelpie_trio.llm.catalog import ModelCatalog
from kelpie_trio.llm.config import CatalogConfig
from kelpie_trio.llm.discovery import discover, keep_catalog_fresh
from kelpie_trio.mcp import McpSessions, McpSettings
from kelpie_trio.mcp.client import SdkMcpConnector
from kelpie_trio.nursery.actor import Actor, ActorContext, ActorFactory
from kelpie_trio.nursery.dispatcher import Dispatcher, RuntimeConfig
from kelpie_trio.nursery.metrics import RuntimeMetrics
from kelpie_trio.nursery.transport import HttpTransport
from kelpie_trio.search.open import open_search
from kelpie_trio.service import AgentService
from kelpie_trio.service.file_worker import FileSettings, threaded_parser
from kelpie_trio.service.schedules import ScheduleSettings
from kelpie_trio.storage import MemoryStore, Store, StoreError
from kelpie_trio.tools.isolation import SandboxStatus, prepare, refused
from kelpie_trio.tools.web import HttpxWeb, WebTools

__all__ = ["open_store", "run_node"]

log = logging.getLogger("kelpie_trio.node")


def open_store(config: ServerConfig, env: Env) -> Store:
    if config.store == "memory":
        return MemoryStore(env)
    if config.store == "fdb":
        from kelpie_trio.storage.foundationdb import FdbStore

        # Whether libfdb_c loads (and serves the binding) is found out when the store
        # starts, off the trio thread: loading it can block (the binding may run
        # ldconfig). A failure is one line naming what to install, as a StartupError.
        return FdbStore(config.fdb_cluster_file, env)
    from kelpie_trio.storage.sqlite import SqliteStore

    _make_directory(config.db_path.parent, "--data-dir" if config.db is None else "--db's folder")
    return SqliteStore(config.db_path, env)


def _make_directory(path: Path, what: str) -> None:
    if path.exists() and not path.is_dir():
        raise StartupError(f"{what} {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StartupError(f"cannot create {what} {path}: {error.strerror or error}") from None


def _hypercorn_config(config: ServerConfig) -> hypercorn.config.Config:
    hc = hypercorn.config.Config()
    hc.bind = [f"{config.host}:{config.port}"]
    hc.graceful_timeout = config.graceful_timeout
    hc.accesslog = None  # one structured line per request comes with the API issue
    # Hypercorn's messages go through our logging, and its own "Running on" line is left
    # out: the node says it is serving once, with what it serves from.
    error_log = logging.getLogger("hypercorn.error")
    error_log.setLevel(logging.WARNING)
    hc.errorlog = error_log
    return hc


def _first(error: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of `kinds` in `error`, looking inside exception groups."""
    if isinstance(error, kinds):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first(inner, kinds)
            if found is not None:
                return found
    return None


async def _start(nursery: trio.Nursery, what: str, fn: Any) -> Any:
    """`nursery.start(fn)`, with a failure to start told as a StartupError saying what."""
    try:
        return await nursery.start(fn)
    except (OSError, OverflowError, StoreError, BaseExceptionGroup) as error:
        cause = _first(error, (StartupError, OSError, OverflowError, StoreError))
        if cause is None or isinstance(cause, StartupError):
            raise
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else cause
        raise StartupError(f"cannot {what}: {reason}") from None


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
    metrics.watch_store(store)
    transport = HttpTransport(token=config.cluster_token or config.password)
    # The models each provider has, asked at start (and every KELPIE_MODELS_REFRESH seconds);
    # a provider that does not answer offers its fixed set.
    catalog_config = CatalogConfig.from_env()
    found = await discover(catalog_config)
    service = AgentService(store, env, ModelCatalog.from_config(catalog_config, found))
    service.search_layer = open_search(config, store, env, catalog_config)
    metrics.watch_indexer(service.search_layer.indexer)
    # MCP servers' sessions: supervised children of the root nursery (kelpie_trio/mcp/).
    try:
        mcp_settings = McpSettings.from_env()
    except ValueError as error:
        raise StartupError(str(error)) from None
    connector = SdkMcpConnector(allow_private=mcp_settings.allow_private)
    service.mcp = McpSessions(connector, mcp_settings, observer=metrics)
    try:
        schedule_settings = ScheduleSettings.from_env()
    except ValueError as error:
        raise StartupError(str(error)) from None
    try:
        file_settings = FileSettings.from_env()
    except ValueError as error:
        raise StartupError(str(error)) from None
    service.file_settings = file_settings  # uploads' size limit; the worker's settings
    # Parsing untrusted files is CPU work: off the trio thread, under a time limit.
    service.file_parser = threaded_parser(file_settings.parse_timeout)
    web = HttpxWeb(config.web)  # fetch_webpage and web_search (tools/web.py)
    service.web = WebTools(web, config.web)
    service.agent_wait_timeout = config.agent_wait_timeout  # agent/multi_agent.py
    if actor_factory is None:
        llm_for = llm_factory(
            env,
            catalog_config=catalog_config,
            sim_latency=(config.sim_latency, config.sim_latency),
        )
        # Asked once, before serving: can this host isolate custom tools? (isolation.py)
        hidden = (str(config.data_dir), str(config.db_path))
        sandbox, sandbox_status = await prepare(config.tools, hidden, config.data_dir / "tool-envs")

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
    dispatcher.put_polls_on_the_beat()  # an idle node wakes once a heartbeat
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
    grace = config.graceful_timeout
    firer = trio.CancelScope()  # stopped with HTTP intake: a stopping node starts no runs
    try:
        async with trio.open_nursery() as root:
            await _start(root, f"open the {_describe_store(config)}", store.run)
            await root.start(service.search_layer.run)  # the indexer drains the search outbox
            await root.start(service.mcp.run)
            await root.start(service.process_files)  # parses, chunks, indexes uploads
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
                binds = await _start(http, f"listen on {config.host}:{config.port}", serve)
                if config.advertise_url is None:
                    dispatcher.address = binds[0]  # the port, if it was 0, is known now
                    await dispatcher.renew_heartbeat()  # its record names the address now
                log.info(
                    "kelpie-trio %s serving on %s (%s)",
                    __version__,
                    ", ".join(binds),
                    _describe_store(config),
                )
                if sandbox_status is not None:  # told once serving: a refused start is one line
                    isolated = sandbox_status.custom_tools == "isolated"
                    (log.info if isolated else log.warning)("%s", sandbox_status.message())
                root.start_soon(service.keep_runs_going, config.lease_ttl)
                if schedule_settings.enabled:  # scheduled messages (service/schedules.py)
                    await root.start(_fire_schedules, service, schedule_settings, firer)
                root.start_soon(_say_when_stopping, shutdown, grace)
                task_status.started(dispatcher)
            firer.cancel()
            agents = len(dispatcher.active_agents)
            log.info(
                "HTTP stopped; waiting up to %g s for %d active agent(s) to finish their "
                "queued messages, then releasing their leases",
                grace,
                agents,
            )
            started = trio.current_time()
            await dispatcher.shutdown(grace)
            left = len(dispatcher.active_agents)
            if left:
                log.warning("grace period over: %d agent(s) cancelled mid-turn", left)
            log.info("agents stopped in %.1f s; closing the store", trio.current_time() - started)
            root.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await transport.aclose()
            await web.aclose()
            await store.aclose()
    log.info("kelpie-trio stopped")


def _describe_store(config: ServerConfig) -> str:
    if config.store == "sqlite":
        return f"sqlite store {config.db_path}"
    if config.store == "fdb":
        return f"fdb store {config.fdb_cluster_file or '(default cluster file)'}"
    return "memory store (nothing is kept after exit)"


async def _fire_schedules(
    service: AgentService,
    settings: ScheduleSettings,
    scope: trio.CancelScope,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    # A firing claimed but cut off here is sent by another node (or this one, restarted)
    # once its retry time passes: nothing is lost.
    with scope:
        await service.fire_schedules(settings, task_status=task_status)


async def _say_when_stopping(shutdown: trio.Event, grace: float) -> None:
    await shutdown.wait()
    log.info(
        "shutting down: no new connections; waiting up to %g s for open requests and streams",
        grace,
    )


async def _shutdown_on_signal(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            shutdown.set()
            return
