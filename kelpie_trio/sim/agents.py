"""The agent server in the simulator: N nodes, each with the real service, dispatcher,
AgentActor and store handle, a shared seeded SimLlmClient behind production's retry
wrapper, SimToolRunner for custom tools, and SimNetwork between the nodes.

`simulate(seed, scenario)` runs a one-node world and calls `scenario(service, llm,
world)`; `simulate_cluster(seed, scenario, nodes=n)` gives the scenario the whole
`AgentCluster` (crash and restart nodes, pick a node's service).

What every run checks, whatever its scenario asserts (violations go to the world's
list, which fails the run at its end):

- every node's runtime reports its activations to one `InvariantChecker`
  (SingleActivation on a node, LeaseUniqueness, FencingTokenMonotonic per agent);
  SingleActivation across nodes and FencedWrites are checked by the SimStore on
  every commit (sim/invariants.py);
- EveryRequestAnswered: a request sent through `AgentCluster.send` (or `call`) that
  gets neither an answer nor an error within `answer_bound` seconds of virtual time
  is a violation, reported as a hang ("pending for N s") rather than retried away.
  The default bound, 300 s, sits above what the runtime's own budgets add up to
  (8 routing attempts of at most a 10 s network timeout and a 5 s backoff each, then a
  turn of a few steps whose LLM calls time out at 5 s and are retried): the slowest
  answers seen in 130 chaos seeds took 42 s, the slowest clean error 71 s.

A request's server side runs in its caller's task here (no sockets), so `send` runs it
under a watch on its node: when the node crashes, the caller gets NodeDown at once, as
a reset connection would tell it, instead of waiting on a process that is gone.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import outcome
import trio

from kelpie_trio.agent.actor import AgentActor
from kelpie_trio.agent.history import read_history
from kelpie_trio.errors import ServiceError
from kelpie_trio.llm.catalog import CatalogConfig, ModelCatalog
from kelpie_trio.llm.retry import RetryingLlmClient
from kelpie_trio.nursery.dispatcher import Dispatcher, RuntimeConfig
from kelpie_trio.nursery.errors import RuntimeFailure
from kelpie_trio.nursery.transport import SimTransport
from kelpie_trio.service import AgentService, Page
from kelpie_trio.service.schedules import ScheduleSettings
from kelpie_trio.sim.cluster import InvariantChecker
from kelpie_trio.sim.faults import FaultConfig, FaultType
from kelpie_trio.sim.llm import SimLlmClient
from kelpie_trio.sim.network import SimNetwork
from kelpie_trio.sim.tools import SimToolRunner
from kelpie_trio.sim.world import SimNode, SimWorld
from kelpie_trio.storage import StoreError
from kelpie_trio.storage.base import Transaction

__all__ = [
    "CLEAN",
    "AgentCluster",
    "NodeDown",
    "Panicky",
    "Request",
    "RequestLog",
    "Unanswered",
    "cluster_main",
    "history_of",
    "kinds",
    "live_service",
    "new_agent",
    "page",
    "restart_crashed",
    "send_anywhere",
    "simulate",
    "simulate_cluster",
    "wait_until",
]

T = TypeVar("T")
ToolFn = Callable[[Any, dict], Any]


class NodeDown(Exception):
    """The node a request went to crashed under it: the client's connection is reset."""


# What a client may be told instead of an answer: a clean failure, never a hang.
CLEAN = (StoreError, ServiceError, RuntimeFailure, NodeDown)


class Unanswered(AssertionError):
    """A request got no answer and no error within the bound: the server hung."""


@attrs.define
class Request:
    what: str
    started: float
    ended: float | None = None
    outcome: str = "pending"  # answered | error <Type> | abandoned | hung

    def pending_for(self, now: float) -> float:
        return (self.ended if self.ended is not None else now) - self.started


class RequestLog:
    """Every request a simulated client made and what became of it (EveryRequestAnswered).

    A request is answered, fails cleanly (a CLEAN error), is abandoned (its caller's
    scope was cancelled: the client hung up), or hangs: no answer within `bound`
    seconds of virtual time. A hang is a violation, reported as one, and the caller
    gets `Unanswered` (not a CLEAN error, so a retry loop cannot swallow it).
    """

    def __init__(self, world: SimWorld, bound: float = 300.0) -> None:
        self.world = world
        self.bound = bound
        self.requests: list[Request] = []

    async def call(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        request = Request(what, trio.current_time())
        self.requests.append(request)
        try:
            with trio.move_on_after(self.bound):
                result = await fn(*args)
                request.outcome = "answered"
                return result
        except trio.Cancelled:
            request.outcome = "abandoned"  # the caller went away; not the server's doing
            raise
        except Exception as error:
            request.outcome = f"error {type(error).__name__}"
            raise
        finally:
            request.ended = trio.current_time()
        request.outcome = "hung"
        self.world.violate(f"EveryRequestAnswered: {what} pending for {self.bound:g} s")
        raise Unanswered(f"{what}: no answer and no error after {self.bound:g} s")

    def check(self) -> None:
        """At the end of a run: a request still pending past the bound is a hang too."""
        now = trio.current_time()
        for request in self.requests:
            waited = request.pending_for(now)
            if request.outcome == "pending" and waited >= self.bound:
                self.world.violate(f"EveryRequestAnswered: {request.what} pending for {waited:g} s")

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for request in self.requests:
            key = request.outcome.split(" ", 1)[0]
            counts[key] = counts.get(key, 0) + 1
        return counts


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
        answer_bound: float = 300.0,
        schedules: ScheduleSettings | None = None,
    ) -> None:
        self.world = world
        self.names = [f"n{i}" for i in range(nodes)]
        self.llm = SimLlmClient.for_world(world, script=script, latency=(0.01, 0.1), timeout=5.0)
        self.tools = SimToolRunner(world, tools, timeout=5.0)
        self.network = SimNetwork(world)
        self.config = config or RuntimeConfig()
        self.resume_interval = resume_interval  # None: no sweep for unfinished runs
        self.schedules = schedules  # None: no node fires scheduled messages
        self.catalog = ModelCatalog.from_config(CatalogConfig())
        self.checker = InvariantChecker(world, to_world=True)
        self.requests = RequestLog(world, answer_bound)
        self.nodes: dict[str, SimNode] = {}
        self.services: dict[str, AgentService] = {}
        self._nursery: trio.Nursery | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        for name in self.names:
            await self.start_node(name)

    def prepare_service(self, service: AgentService) -> None:
        """A subclass's hook: give a node's service what it needs (its web tools, say)
        before the node serves anything, so even a restarted node's first turn has it."""

    async def start_node(self, name: str) -> AgentService:
        """Start (or restart, as a new incarnation) node `name`; returns its service."""
        assert self._nursery is not None
        node = self.world.new_node(name)
        self.nodes[name] = node
        ready = trio.Event()

        async def life(node: SimNode) -> None:
            service = AgentService(node.store, node.env, self.catalog)
            self.prepare_service(service)
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
                observer=self.checker,
            )
            service.dispatcher = dispatcher
            dispatcher.put_polls_on_the_beat()  # as a served node's (nursery/node.py)
            async with trio.open_nursery() as nursery:
                await nursery.start(dispatcher.run)
                await nursery.start(transport.serve, dispatcher)
                service.background = nursery
                if self.resume_interval is not None:
                    nursery.start_soon(service.keep_runs_going, self.resume_interval)
                if self.schedules is not None:
                    await nursery.start(service.fire_schedules, self.schedules)
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

    # -- clients -----------------------------------------------------------------

    async def call(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Any client request, recorded for EveryRequestAnswered."""
        return await self.requests.call(what, fn, *args)

    async def send(self, name: str, agent: str, body: dict) -> dict:
        """`send_message` through node `name`, recorded: answered, a clean error (raised),
        or a hang (a violation, and `Unanswered` raised)."""
        service = self.services[name]
        what = f"send to {agent} via {name}"
        return await self.call(what, self.on_node, name, service.send_message, agent, body)

    async def on_node(self, name: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a request's server side (which runs in the caller's task) until the node
        crashes; then the caller gets NodeDown, as a reset connection would tell it."""
        node = self.nodes[name]
        if node.crashed:
            raise NodeDown(f"{node.id} is down: connection refused")
        result: list[outcome.Outcome] = []
        async with trio.open_nursery() as nursery:

            async def request() -> None:
                # Its error is kept, to come out as itself rather than in an ExceptionGroup;
                # a cancellation is left to trio (outcome.acapture would capture it too).
                try:
                    result.append(outcome.Value(await fn(*args)))
                except Exception as error:
                    result.append(outcome.Error(error))
                nursery.cancel_scope.cancel()

            async def reset() -> None:
                await node.down.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(request)
            nursery.start_soon(reset)
        if not result:
            raise NodeDown(f"{node.id} crashed while answering: connection reset")
        return result[0].unwrap()


def simulate_cluster(
    seed: int,
    scenario: Callable[[AgentCluster], Awaitable[Any]],
    faults: FaultConfig | str = "none",
    *,
    quiet_start: bool = False,
    **cluster: Any,
) -> Any:
    """`quiet_start`: the faults wait until the scenario turns them on."""
    return SimWorld(seed, faults).run(cluster_main(scenario, quiet_start=quiet_start, **cluster))


def cluster_main(
    scenario: Callable[[AgentCluster], Awaitable[T]], *, quiet_start: bool = False, **cluster: Any
) -> Callable[[SimWorld], Awaitable[T]]:
    """The `main` of a world that runs `scenario` on an AgentCluster, then checks that
    every request was answered."""

    async def main(world: SimWorld) -> T:
        sim = AgentCluster(world, **cluster)
        world.faults.enabled = not quiet_start
        async with trio.open_nursery() as nursery:
            await sim.start(nursery)
            result = await scenario(sim)
            sim.requests.check()
            nursery.cancel_scope.cancel()
        return result

    return main


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


# -- what scenarios share ------------------------------------------------------------


async def revived_service(sim: AgentCluster) -> AgentService:
    """`live_service` once the faults are off: if every node is down at that moment (the
    process manager was stopped between a crash and its restart), one is started again."""
    if not any(_serving(sim, name) for name in sim.names):
        await sim.start_node(sim.names[0])
    return live_service(sim)


def live_service(sim: AgentCluster) -> AgentService:
    """The service of the first node that is up: not crashed, and serving as its current
    incarnation (a restart cut short leaves the previous incarnation's service behind)."""
    return next(sim.services[n] for n in sim.names if _serving(sim, n))


def _serving(sim: AgentCluster, name: str) -> bool:
    """Up and serving as its current incarnation."""
    return not sim.nodes[name].crashed and sim.services[name].store is sim.nodes[name].store


async def restart_crashed(sim: AgentCluster, delay: float = 2.0) -> None:
    """A process manager: a crashed node comes back (a new incarnation) `delay` s later."""
    while True:
        await trio.sleep(0.5)
        for name in sim.names:
            if sim.nodes[name].crashed:
                await trio.sleep(delay)
                await sim.start_node(name)


async def send_anywhere(
    sim: AgentCluster, agent: str, body: dict, first: int = 0, tries: int = 100
) -> dict:
    """Through the nodes in turn, from the `first`-th on, until one answers. A clean
    error is retried (the client's part); a hang is not: it fails the run."""
    for attempt in itertools.count():
        assert attempt < tries, f"no answer after {tries} tries"
        name = sim.names[(first + attempt) % len(sim.names)]
        if sim.nodes[name].crashed:  # connection refused
            await trio.sleep(0.5)
            continue
        try:
            return await sim.send(name, agent, body)
        except CLEAN:
            pass
        await trio.sleep(0.5)
    raise AssertionError("unreachable")


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
