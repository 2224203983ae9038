"""The agent server in the simulator: N nodes, each with the real service, dispatcher,
AgentActor and store handle, a shared seeded SimLlmClient behind production's retry
wrapper, SimToolRunner for custom tools, and SimNetwork between the nodes.

`simulate(seed, scenario)` runs a one-node world and calls `scenario(service, llm,
world)`; `simulate_cluster(seed, scenario, nodes=n)` gives the scenario the whole
`AgentCluster` (crash and restart nodes, pick a node's service).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from kelpie_trio.agent.actor import AgentActor
from kelpie_trio.agent.history import read_history
from kelpie_trio.llm.catalog import CatalogConfig, ModelCatalog
from kelpie_trio.llm.retry import RetryingLlmClient
from kelpie_trio.nursery.dispatcher import Dispatcher, RuntimeConfig
from kelpie_trio.nursery.transport import SimTransport
from kelpie_trio.service import AgentService, Page
from kelpie_trio.sim import FaultConfig, FaultType, SimNode, SimWorld
from kelpie_trio.sim.llm import SimLlmClient
from kelpie_trio.sim.network import SimNetwork
from kelpie_trio.sim.tools import SimToolRunner
from kelpie_trio.storage import StoreError
from kelpie_trio.storage.base import Transaction

__all__ = ["AgentCluster", "history_of", "kinds", "new_agent", "page", "simulate", "wait_until"]

ToolFn = Callable[[Any, dict], Any]


class Panicky:
    """An actor that the fault table's AgentLoopPanic makes raise before a message:
    the runtime restarts it from stored state and tries the message again."""

    def __init__(self, actor: AgentActor, world: SimWorld) -> None:
        self.actor = actor
        self.world = world

    async def on_activate(self) -> None:
        await self.actor.on_activate()

    async def on_deactivate(self) -> None:
        await self.actor.on_deactivate()

    async def handle(self, message: Any) -> Any:
        if self.world.faults.fires(FaultType.AGENT_LOOP_PANIC, "actor.handle"):
            self.world.trace.record(f"fault AgentLoopPanic agent={self.actor.ctx.agent_id}")
            raise RuntimeError("injected agent loop panic")
        return await self.actor.handle(message)


class AgentCluster:
    def __init__(
        self,
        world: SimWorld,
        *,
        nodes: int = 1,
        script: list | None = None,
        tools: ToolFn = lambda tool, args: None,
        config: RuntimeConfig | None = None,
        resume_interval: float | None = None,
    ) -> None:
        self.world = world
        self.names = [f"n{i}" for i in range(nodes)]
        self.llm = SimLlmClient.for_world(world, script=script, latency=(0.01, 0.1), timeout=5.0)
        self.tools = SimToolRunner(world, tools, timeout=5.0)
        self.network = SimNetwork(world)
        self.config = config or RuntimeConfig()
        self.resume_interval = resume_interval  # None: no sweep for unfinished runs
        self.catalog = ModelCatalog.from_config(CatalogConfig())
        self.nodes: dict[str, SimNode] = {}
        self.services: dict[str, AgentService] = {}
        self._nursery: trio.Nursery | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        for name in self.names:
            await self.start_node(name)

    async def start_node(self, name: str) -> AgentService:
        """Start (or restart, as a new incarnation) node `name`; returns its service."""
        assert self._nursery is not None
        node = self.world.new_node(name)
        self.nodes[name] = node
        ready = trio.Event()

        async def life(node: SimNode) -> None:
            service = AgentService(node.store, node.env, self.catalog)
            retrying = RetryingLlmClient(self.llm, node.env)  # faults take production's path
            transport = SimTransport(self.network, node.id)
            dispatcher = Dispatcher(
                node_id=node.id,
                address=node.id,
                env=node.env,
                store=node.store,
                factory=lambda ctx: Panicky(
                    AgentActor(ctx, service, lambda agent: retrying, self.tools), self.world
                ),
                transport=transport,
                config=self.config,
            )
            service.dispatcher = dispatcher
            async with trio.open_nursery() as nursery:
                await nursery.start(dispatcher.run)
                await nursery.start(transport.serve, dispatcher)
                service.background = nursery
                if self.resume_interval is not None:
                    nursery.start_soon(service.keep_runs_going, self.resume_interval)
                self.services[name] = service
                ready.set()
                await trio.sleep_forever()

        async def run(node: SimNode) -> None:
            try:
                await self.world.run_node(node, life)
            except* StoreError as refused:
                if ready.is_set():
                    raise
                # It could not start (its registration refused: a full disk), so the
                # process exits; a process manager may start it again later.
                node.crash(f"start failed: {refused.exceptions[0]!r}")
            finally:
                ready.set()

        self._nursery.start_soon(run, node)
        await ready.wait()
        return self.services[name]

    def service(self, name: str | None = None) -> AgentService:
        return self.services[name or self.names[0]]

    def crash(self, name: str) -> None:
        self.nodes[name].crash("test")


def simulate_cluster(
    seed: int,
    scenario: Callable[[AgentCluster], Awaitable[Any]],
    faults: FaultConfig | str = "none",
    *,
    quiet_start: bool = False,
    **cluster: Any,
) -> Any:
    """`quiet_start`: the faults wait until the scenario turns them on."""

    async def main(world: SimWorld) -> Any:
        sim = AgentCluster(world, **cluster)
        world.faults.enabled = not quiet_start
        async with trio.open_nursery() as nursery:
            await sim.start(nursery)
            result = await scenario(sim)
            nursery.cancel_scope.cancel()
        return result

    return SimWorld(seed, faults).run(main)


def simulate(
    seed: int,
    scenario: Callable[[AgentService, SimLlmClient, SimWorld], Awaitable[Any]],
    faults: FaultConfig | str = "none",
    script: list | None = None,
    tools: ToolFn = lambda tool, args: None,
) -> Any:
    async def one_node(sim: AgentCluster) -> Any:
        return await scenario(sim.service(), sim.llm, sim.world)

    return simulate_cluster(seed, one_node, faults, script=script, tools=tools)


async def new_agent(service: AgentService, **fields: Any) -> str:
    body = {"memory_blocks": [{"label": "human", "value": "Name: Ada"}], **fields}
    return (await service.create_agent(body)).agent.id


def kinds(response: dict) -> list[str]:
    return [m["message_type"] for m in response["messages"]]


def page() -> Page:
    return Page(limit=1000)


async def wait_until(check: Callable[[], Awaitable[bool]], every: float = 0.01) -> None:
    """Poll `check` in virtual time: what a client watching a run's status does."""
    while not await check():  # noqa: ASYNC110 - a client polls; no event reaches it
        await trio.sleep(every)


async def history_of(service: AgentService, agent_id: str) -> list[Any]:
    async def read(tr: Transaction) -> list[Any]:
        return await read_history(tr, agent_id)

    return await service.store.transact(read)
