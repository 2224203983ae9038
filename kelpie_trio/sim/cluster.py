"""SimAgentEnv: N simulated nodes running the real actor runtime, and the invariants.

Each node runs a real `Dispatcher` (supervisor, lease keeper, ActorHosts) on
its own `SimStore` handle, and forwards to the others over a `SimNetwork`.
The agents are `JournalActor`s: each message appends an entry (message id,
epoch, node) to the agent's log in the store, idempotently by message id,
through the runtime's fenced transactions. The checkers run as the runtime
reports activations (continuously) and over the stored logs at the end:

- SingleActivation: one node never hosts two activations of one agent;
- LeaseUniqueness: an epoch of an agent is activated by one node only;
- FencingTokenMonotonic: a new activation's epoch exceeds every earlier one,
  and the stored log's epochs never go down (no write from a lost owner after
  the new owner wrote);
- NoAckedMessageLost: every acknowledged message is in the log, at the
  position its reply gave, exactly once; the log has no gaps;
- EveryRequestAnswered: every request was answered or failed cleanly (the
  world's virtual-time limit fails a hang at once).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import attrs
import trio

from kelpie_trio.nursery import lease as leases
from kelpie_trio.nursery.actor import ActorContext
from kelpie_trio.nursery.dispatcher import Dispatcher, RuntimeConfig
from kelpie_trio.nursery.errors import RuntimeFailure
from kelpie_trio.nursery.observer import RuntimeObserver
from kelpie_trio.nursery.transport import SimTransport
from kelpie_trio.sim.faults import (
    CRASH_FAULTS,
    NETWORK_FAULTS,
    STORAGE_FAULTS,
    FaultConfig,
    FaultType,
)
from kelpie_trio.sim.invariants import InvariantViolation
from kelpie_trio.sim.network import SimNetwork
from kelpie_trio.sim.world import SimNode, SimWorld
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.errors import StoreError

__all__ = [
    "STORM_CONFIG",
    "STORM_FAULTS",
    "InvariantChecker",
    "JournalActor",
    "Outcome",
    "SimAgentEnv",
    "StormReport",
    "runtime_storm",
    "storm",
]

JOURNAL = keys.MESSAGES  # (agent_id, seq) -> (message id, epoch, node id)


class JournalActor:
    """The simulation's agent: an append-only, idempotent log of the messages it got."""

    def __init__(self, ctx: ActorContext, world: SimWorld) -> None:
        self.ctx = ctx
        self.world = world
        self.seq = 0
        self.positions: dict[str, int] = {}

    async def on_activate(self) -> None:
        agent = self.ctx.agent_id

        async def load(tr: Transaction) -> list[tuple[bytes, bytes]]:
            return await tr.get_prefix(JOURNAL.pack((agent,)))

        entries = await self.ctx.transact(load)
        self.positions = {keys.unpack(v)[0]: JOURNAL.unpack(k)[1] for k, v in entries}
        self.seq = len(entries)

    async def handle(self, message: dict[str, Any]) -> int:
        if self.world.faults.fires(FaultType.AGENT_LOOP_PANIC, "actor.handle"):
            self.world.trace.record(f"fault AgentLoopPanic agent={self.ctx.agent_id}")
            raise RuntimeError("injected agent loop panic")
        mid = message["id"]
        if mid in self.positions:
            return self.positions[mid]  # a retried message: answered, not appended again
        seq, ctx = self.seq, self.ctx
        entry = keys.pack((mid, ctx.lease.epoch, ctx.node_id))

        async def append(tr: Transaction) -> None:
            tr.set(JOURNAL.pack((ctx.agent_id, seq)), entry)

        await ctx.transact(append)
        self.seq += 1
        self.positions[mid] = seq
        return seq

    async def on_deactivate(self) -> None:
        pass  # every message is stored as it is handled


class InvariantChecker(RuntimeObserver):
    """Checks activations as every node's runtime reports them (`Dispatcher(observer=)`).

    `to_world`: report violations to the world (`SimWorld.violate`), which fails the run
    at its end whatever the scenario does; otherwise they are kept here for `check()`.
    """

    def __init__(self, world: SimWorld, *, to_world: bool = False) -> None:
        self.world = world
        self.to_world = to_world
        self.violations: list[str] = []
        self.hosts: dict[str, dict[str, int]] = defaultdict(dict)  # agent -> node -> epoch
        self.epoch_owner: dict[tuple[str, int], str] = {}
        self.max_epoch: dict[str, int] = defaultdict(int)
        self.activations = 0
        self.superseded = 0  # activations reported after another node took their lease
        self.forwards = 0
        self.restarts = 0

    def _violate(self, what: str) -> None:
        self.violations.append(what)
        if self.to_world:
            self.world.violate(what)
        else:
            self.world.trace.record(f"VIOLATION {what}")

    def activated(self, node_id: str, agent_id: str, epoch: int) -> None:
        self.activations += 1
        self.world.trace.record(f"activate agent={agent_id} node={node_id} epoch={epoch}")
        if node_id in self.hosts[agent_id]:
            self._violate(f"SingleActivation: {agent_id} activated twice on {node_id}")
        owner = self.epoch_owner.setdefault((agent_id, epoch), node_id)
        if owner != node_id:
            self._violate(f"LeaseUniqueness: {agent_id} epoch {epoch} on {owner} and {node_id}")
        if epoch <= self.max_epoch[agent_id]:
            stored = self._stored_epoch(agent_id)
            if stored is not None and stored > epoch:
                # Taken over between its lease's commit and this report (a clock skewed
                # past the lease margin makes its heartbeat look expired to another node):
                # a superseded activation, whose writes the fence refuses (FencedWrites),
                # not epochs going back. Epochs going back leave the store's lease at the
                # lower epoch, and fail here.
                self.superseded += 1
                self.world.trace.record(f"superseded agent={agent_id} node={node_id} "
                                        f"epoch={epoch} stored={stored}")  # fmt: skip
            else:
                self._violate(
                    f"FencingTokenMonotonic: {agent_id} epoch {epoch} after "
                    f"{self.max_epoch[agent_id]} (the store's lease: epoch {stored})"
                )
        self.max_epoch[agent_id] = max(self.max_epoch[agent_id], epoch)
        self.hosts[agent_id][node_id] = epoch

    def _stored_epoch(self, agent_id: str) -> int | None:
        """The epoch of the agent's lease in the store now (read outside any transaction:
        the checker sees what is committed, as no node can)."""
        engine = self.world.engine
        raw = engine.get(leases.lease_key(agent_id), engine.read_version())
        return None if raw is None else leases.Lease.decode(agent_id, raw).epoch

    def deactivated(self, node_id: str, agent_id: str, epoch: int) -> None:
        self.world.trace.record(f"deactivate agent={agent_id} node={node_id} epoch={epoch}")
        if self.hosts[agent_id].get(node_id) == epoch:
            del self.hosts[agent_id][node_id]

    def forwarded(self, from_node: str, to_node: str, agent_id: str) -> None:
        self.forwards += 1

    def restarted(self, node_id: str, agent_id: str) -> None:
        self.restarts += 1


@attrs.frozen
class Outcome:
    """What a client got back: a reply (acknowledged) or a clean error."""

    message_id: str
    agent_id: str
    reply: Any = None
    error: str | None = None

    @property
    def acked(self) -> bool:
        return self.error is None


class SimAgentEnv:
    """Nodes, clients and checkers of one simulated cluster; use inside `SimWorld.run`."""

    def __init__(
        self,
        world: SimWorld,
        *,
        nodes: int = 3,
        config: RuntimeConfig | None = None,
        actor: Callable[[ActorContext, SimWorld], Any] = JournalActor,
    ) -> None:
        self.world = world
        self.names = [f"node{i}" for i in range(nodes)]
        self.config = config or RuntimeConfig(lease_ttl=5.0, renew_interval=1.0)
        self.actor = actor
        self.network = SimNetwork(world)
        self.checker = InvariantChecker(world)
        self.dispatchers: dict[str, Dispatcher] = {}
        self.nodes: dict[str, SimNode] = {}
        self.outcomes: list[Outcome] = []
        self._nursery: trio.Nursery | None = None
        self._rng = world.rng("clients")

    # -- nodes -------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        for name in self.names:
            await self.start_node(name)

    async def start_node(self, name: str) -> SimNode:
        """Start (or restart, as a new incarnation) the node `name`; returns once it serves."""
        assert self._nursery is not None, "call start() first"
        node = self.world.new_node(name)
        self.nodes[name] = node
        self.dispatchers.pop(name, None)
        ready = trio.Event()

        async def life(node: SimNode) -> None:
            try:
                await self._life(node, ready)
            finally:
                ready.set()  # also when it crashed while starting: the caller goes on

        async def run(node: SimNode) -> None:
            try:
                await self.world.run_node(node, life)
            except* StoreError as refused:
                if node.name in self.dispatchers:
                    raise
                # It could not start (its registration refused: a full disk), so the
                # process exits, as the agent harness's nodes do; it may be started again.
                node.crash(f"start failed: {refused.exceptions[0]!r}")

        self._nursery.start_soon(run, node)
        await ready.wait()
        return node

    async def _life(self, node: SimNode, ready: trio.Event) -> None:
        transport = SimTransport(self.network, node.id)
        dispatcher = Dispatcher(
            node_id=node.id,
            address=node.id,
            env=node.env,
            store=node.store,
            factory=lambda ctx: self.actor(ctx, self.world),
            transport=transport,
            config=self.config,
            observer=self.checker,
        )
        dispatcher.put_polls_on_the_beat()  # as a served node's (nursery/node.py)
        async with trio.open_nursery() as nursery:
            await nursery.start(dispatcher.run)
            await nursery.start(transport.serve, dispatcher)
            self.dispatchers[node.name] = dispatcher
            ready.set()
            await trio.sleep_forever()

    def crash(self, name: str) -> None:
        self.nodes[name].crash("test")

    async def shutdown(self, name: str, grace: float = 10.0) -> None:
        await self.dispatchers[name].shutdown(grace)

    # -- clients -------------------------------------------------------------------

    async def send(self, agent_id: str, message_id: str, via: str | None = None) -> Outcome:
        """Send one message through a node (random if not given); record what came back."""
        name = via or self._rng.choice(self.names)
        if self.nodes[name].crashed or name not in self.dispatchers:  # "connection refused"
            outcome = Outcome(message_id, agent_id, error=f"NodeDown: {name} is down")
        else:
            try:
                reply = await self.dispatchers[name].invoke(agent_id, {"id": message_id})
                outcome = Outcome(message_id, agent_id, reply=reply)
            except (RuntimeFailure, StoreError) as error:  # a full disk is told at once
                outcome = Outcome(message_id, agent_id, error=f"{type(error).__name__}: {error}")
        self.outcomes.append(outcome)
        self.world.trace.record(
            f"client {message_id} via={name} "
            + (f"ack={outcome.reply}" if outcome.acked else f"error={outcome.error[:40]}")
        )
        return outcome

    # -- the end ---------------------------------------------------------------------

    async def journal(self, agent_id: str) -> list[tuple[str, int, str]]:
        """The stored log of an agent: (message id, epoch, node) in order."""
        reader = self.world.new_node("checker")

        async def load(tr: Transaction) -> list[tuple[bytes, bytes]]:
            return await tr.get_prefix(JOURNAL.pack((agent_id,)))

        entries = await reader.store.transact(load)
        seqs = [JOURNAL.unpack(k)[1] for k, _ in entries]
        if seqs != list(range(len(seqs))):
            self.checker._violate(f"NoAckedMessageLost: {agent_id} log has gaps: {seqs[:20]}")
        return [keys.unpack(v) for _, v in entries]

    async def check(self) -> None:
        """Every invariant, over what happened and what is stored; raise on any violation."""
        self.world.faults.enabled = False
        by_agent: dict[str, list[Outcome]] = defaultdict(list)
        for outcome in self.outcomes:
            by_agent[outcome.agent_id].append(outcome)
        for agent_id, outcomes in sorted(by_agent.items()):
            log = await self.journal(agent_id)
            ids = [mid for mid, _, _ in log]
            if len(ids) != len(set(ids)):
                self.checker._violate(f"NoAckedMessageLost: {agent_id} has a message twice")
            epochs = [epoch for _, epoch, _ in log]
            if epochs != sorted(epochs):
                self.checker._violate(
                    f"FencingTokenMonotonic: {agent_id} log epochs go down: {epochs[:30]}"
                )
            for outcome in outcomes:
                if outcome.acked and (
                    outcome.reply >= len(ids) or ids[outcome.reply] != outcome.message_id
                ):
                    self.checker._violate(
                        f"NoAckedMessageLost: {outcome.message_id} acked at "
                        f"{outcome.reply}, not in {agent_id}'s log there"
                    )
        if self.checker.violations:
            raise InvariantViolation(
                f"seed {self.world.seed}: " + "; ".join(self.checker.violations[:10])
            )


# -- the runtime storm: many agents, every node, crashes and store partitions -----------

STORM_FAULTS = FaultConfig(
    {
        **dict.fromkeys(STORAGE_FAULTS, 0.02),
        **dict.fromkeys(CRASH_FAULTS, 0.002),
        **dict.fromkeys(NETWORK_FAULTS, 0.02),
        FaultType.CLOCK_SKEW: 0.3,
        FaultType.AGENT_LOOP_PANIC: 0.01,
    }
)
STORM_CONFIG = RuntimeConfig(lease_ttl=10.0, renew_interval=3.0, idle_timeout=5.0)


async def storm(env: SimAgentEnv, *, agents: int = 1000, messages: int = 1500) -> None:
    """Random messages to many agents through every node; now and then a node is cut
    off from the store for a while; crashed nodes come back as new incarnations."""
    rng = env.world.rng("storm")

    async def client(c: int, count: int) -> None:
        for i in range(count):
            await env.send(f"agent-{rng.randrange(agents)}", f"c{c}-{i}")

    async def chaos_monkey() -> None:
        while True:
            await trio.sleep(1)
            for name in env.names:
                if env.nodes[name].crashed:
                    await env.start_node(name)
            if rng.random() < 0.03:
                env.nodes[rng.choice(env.names)].cut_off_store(rng.uniform(2, 15))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(chaos_monkey)
        async with trio.open_nursery() as clients:
            for c in range(20):
                clients.start_soon(client, c, messages // 20)
        nursery.cancel_scope.cancel()


@attrs.frozen
class StormReport:
    acked: int
    failed: int
    activations: int
    forwards: int
    restarts: int

    def summary(self) -> str:
        return (
            f"runtime storm: {self.acked} messages acknowledged, {self.failed} failed "
            f"cleanly; {self.activations} activations, {self.forwards} forwards, "
            f"{self.restarts} actor restarts"
        )


async def runtime_storm(
    world: SimWorld, *, agents: int = 1000, messages: int = 1500
) -> StormReport:
    """The `storm` scenario on three nodes of JournalActors, then every check."""
    env = SimAgentEnv(world, config=STORM_CONFIG)
    async with trio.open_nursery() as nursery:
        await env.start(nursery)
        await storm(env, agents=agents, messages=messages)
        nursery.cancel_scope.cancel()
    await env.check()
    acked = sum(o.acked for o in env.outcomes)
    checker = env.checker
    return StormReport(acked, len(env.outcomes) - acked, checker.activations,
                       checker.forwards, checker.restarts)  # fmt: skip
