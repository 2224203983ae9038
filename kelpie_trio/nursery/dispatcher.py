"""The dispatcher: `await dispatcher.invoke(agent_id, message)`, wherever the agent lives.

    Dispatcher.run
      supervisor nursery
        heartbeat keeper      renews this node's one heartbeat record; stops all on loss
        ActorHost per agent   (actor.py): one trio task per active agent, started by
                              a short helper task spawned from an empty context

A message for an agent active here goes to its mailbox. Otherwise the
dispatcher activates it under the supervisor if its lease is free, expired, or this
node's (taken at once, or by the activation's first write: actor.py), or, if another
live node holds the lease, forwards the message there through the transport and relays
the reply. A
message that meets an activation as it ends is routed again; a node that
cannot be reached is retried until the owner's lease expires, and then this
node takes over. Callers never need to know where an agent lives.

Liveness is per node (membership.py): an agent's lease names this node's incarnation and
lives as long as the node's heartbeat does, so keeping a thousand agents active costs the
same one write per renewal period as keeping none.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

import attrs
import trio

from kelpie_trio.env import Env, Ticks
from kelpie_trio.nursery import lease as leases
from kelpie_trio.nursery import membership as members
from kelpie_trio.nursery.actor import ActorFactory, ActorHost, HeldElsewhere, Reroute
from kelpie_trio.nursery.errors import (
    AgentUnavailable,
    LeaseLost,
    NodeShuttingDown,
    NotOwner,
    RuntimeFailure,
)
from kelpie_trio.nursery.membership import Membership, NodeInfo
from kelpie_trio.nursery.observer import RuntimeObserver
from kelpie_trio.nursery.recent import RecentEvents
from kelpie_trio.nursery.transport import Transport, TransportError
from kelpie_trio.storage.base import Store, Transaction
from kelpie_trio.storage.errors import StoreError, refused_for_good

__all__ = ["Dispatcher", "NodeInfo", "RuntimeConfig"]

log = logging.getLogger("kelpie_trio.dispatcher")


@attrs.define
class _Activation:
    """One activation in progress: its host, and how starting it went once `done`."""

    host: ActorHost
    done: trio.Event = attrs.Factory(trio.Event)
    error: BaseException | None = None


@attrs.frozen
class RuntimeConfig:
    mailbox_size: int = 64
    idle_timeout: float = 300.0  # deactivate after this long without a message
    lease_ttl: float = 10.0
    renew_interval: float = 3.0  # the heartbeat's; well under the ttl: two may fail in a row
    max_failures: int = 3  # tries per message (and per activation) before giving up
    restart_backoff: float = 0.1  # doubles per failure
    max_backoff: float = 5.0
    route_attempts: int = 8  # routing retries (activation, forwarding) per message
    store_attempts: int = 5  # per routing transaction: fail fast, the router retries
    forward_timeout: float = 30.0
    retry_after: float = 1.0  # what a full mailbox tells the caller
    recent_events: int = 100  # transfers, recoveries and restarts kept for the console


class Dispatcher:
    def __init__(
        self,
        *,
        node_id: str,
        address: str,
        env: Env,
        store: Store,
        factory: ActorFactory,
        transport: Transport,
        config: RuntimeConfig | None = None,
        observer: RuntimeObserver | None = None,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.env = env
        self.store = store
        self.factory = factory
        self.transport = transport
        self.config = config or RuntimeConfig()
        self.observer = observer or RuntimeObserver()
        self.recent = RecentEvents(env.now, self.config.recent_events)
        self._active: dict[str, ActorHost] = {}
        self._running: set[ActorHost] = set()  # registered and not yet finished (lease released)
        self._activating: dict[str, trio.Event] = {}
        self._supervisor: trio.Nursery | None = None
        self._stopped = False
        self._closing = False
        self._drained = trio.Event()  # closing, and no activation left or starting
        # This node's own copy of its heartbeat record (exact: only this node writes it);
        # None until it has joined. Every fence checks it.
        self.membership: Membership | None = None
        self._renewing = trio.Lock()  # one renewal at a time: each record after the last

    # -- life ------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Join (a new incarnation), then supervise actors and keep the heartbeat until
        cancelled."""
        await self.join()
        async with trio.open_nursery() as supervisor:
            self._supervisor = supervisor
            supervisor.start_soon(self._keep_heartbeat)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                # Cancelled (a crash, a stop): the supervisor takes no new actor from now
                # on, while it waits for the ones it has.
                self._stopped = True

    async def shutdown(self, grace: float) -> None:
        """Stop intake; let queued messages finish within `grace`; leases are released."""
        self._closing = True
        for host in list(self._active.values()):
            host.close_mailbox()
        self._check_drained()
        with trio.move_on_after(grace):
            await self._drained.wait()
        if self._supervisor is not None:
            self._supervisor.cancel_scope.cancel()

    @property
    def active_agents(self) -> list[str]:
        return list(self._active)

    def is_active(self, agent_id: str) -> bool:
        """Whether the agent has an activation on this node now (it may end at any time:
        a message sent to it then is routed again)."""
        return agent_id in self._active

    @property
    def actors(self) -> list[ActorHost]:
        """The activations on this node now (the runtime view reads their leases, mailboxes)."""
        return list(self._active.values())

    def _register(self, host: ActorHost) -> None:
        self._active[host.agent_id] = host
        self._running.add(host)
        if self._closing:  # activated while the node began to stop: take nothing new
            host.close_mailbox()

    def _unregister(self, host: ActorHost) -> None:
        if self._active.get(host.agent_id) is host:
            del self._active[host.agent_id]

    def _finished(self, host: ActorHost) -> None:
        """The host's task is over, its lease released: shutdown may count it done."""
        self._unregister(host)
        self._running.discard(host)
        self._check_drained()

    def _check_drained(self) -> None:
        if self._closing and not self._running and not self._activating:
            self._drained.set()

    # -- routing ---------------------------------------------------------------

    async def invoke(self, agent_id: str, message: Any, *, forwarded: bool = False) -> Any:
        """Deliver `message` to the agent's one activation and return its reply.

        `forwarded` marks a message another node sent here because this node
        holds the lease: if it no longer does, say NotOwner rather than
        forward it a second time.

        Delivery is at least once: a message cut short by the loss of the
        lease (or a crash) is routed again, so handlers keep their writes
        idempotent (keyed by message id).
        """
        last: BaseException | None = None
        for attempt in range(1, self.config.route_attempts + 1):
            if self._closing:
                raise NodeShuttingDown(f"node {self.node_id} is shutting down")
            host = self._active.get(agent_id)
            if host is None:
                try:
                    located = await self._activate(agent_id)
                except (StoreError, LeaseLost, RuntimeFailure) as error:
                    if refused_for_good(error):
                        raise  # a full disk: routing again cannot help
                    last = error
                    await self._route_backoff(attempt)
                    continue
                if isinstance(located, leases.HeldElsewhere):
                    if forwarded:
                        raise NotOwner(f"node {self.node_id} does not own agent {agent_id}")
                    try:
                        return await self._forward(located, agent_id, message)
                    except (
                        TransportError,
                        NotOwner,
                        AgentUnavailable,
                        NodeShuttingDown,  # the owner is stopping: its lease is about to free
                        StoreError,
                    ) as error:
                        if refused_for_good(error):
                            raise
                        last = error
                        await self._route_backoff(attempt)
                        continue
                if located is None:
                    continue  # another task's activation here ended: look again
                host = located
            try:
                return await host.ask(message).result()
            except Reroute as error:
                last = error  # that activation ended before it ran the message: route again
        raise AgentUnavailable(
            f"agent {agent_id} could not be reached after {self.config.route_attempts} "
            f"attempts; last error: {last!r}"
        ) from last

    async def _route_backoff(self, attempt: int) -> None:
        delay = min(self.config.max_backoff, self.config.restart_backoff * 2 ** (attempt - 1))
        await trio.sleep(delay * self.env.jitter(0.5, 1.0))

    async def _activate(self, agent_id: str) -> ActorHost | leases.HeldElsewhere | None:
        """Activate here (the host), or the live lease of the node that owns the agent.

        One activation at a time per agent on this node: a second caller waits
        for the first and then looks again (None).
        """
        pending = self._activating.get(agent_id)
        if pending is not None:
            await pending.wait()
            return self._active.get(agent_id)
        if self._stopped:
            # Its supervisor is gone (the node crashed or stopped while this caller was
            # routing): as a store fenced off would have said, this node cannot activate.
            raise NodeShuttingDown(f"node {self.node_id} has stopped")
        if self._supervisor is None:
            raise RuntimeError("Dispatcher.run is not running: start it in the node's nursery")
        activation = _Activation(ActorHost(self, agent_id))
        self._activating[agent_id] = activation.done
        # Spawned from an empty context: trio gives a task a copy of its spawner's context
        # variables, and a caller is often a request handler, whose copy (Quart's request
        # context: the request with its headers and body) an actor would keep for its life.
        empty = contextvars.Context()
        try:
            empty.run(self._supervisor.start_soon, self._start_host, activation)
        except BaseException:
            self._activation_over(activation)
            raise
        # The activation is the helper's, not this caller's: a caller cancelled here leaves
        # it to finish, and the agent stays "activating" until it has.
        await activation.done.wait()
        if isinstance(activation.error, HeldElsewhere):
            return activation.error.decision
        if activation.error is not None:
            raise activation.error
        return activation.host

    async def _start_host(self, activation: _Activation) -> None:
        """Start an activation's host (from the empty context `_activate` spawned this
        in), and say how it went."""
        try:
            # The host's first transaction decides the lease and loads the actor's state
            # together (ActorContext.transact): one transaction for an activation.
            await self._supervisor.start(activation.host.run)  # type: ignore[union-attr]
        except trio.Cancelled:
            activation.error = NodeShuttingDown(f"node {self.node_id} is stopping")
            raise
        except BaseException as error:  # for the caller: as `start` would have raised it
            activation.error = error
        finally:
            self._activation_over(activation)

    def _activation_over(self, activation: _Activation) -> None:
        del self._activating[activation.host.agent_id]
        activation.done.set()
        self._check_drained()

    async def _forward(self, owner: leases.HeldElsewhere, agent_id: str, message: Any) -> Any:
        address = owner.address  # read with the lease, from the owner's heartbeat record
        owner_id = owner.lease.node_id
        self.observer.forwarded(self.node_id, owner_id, agent_id)
        with trio.move_on_after(self.config.forward_timeout):
            return await self.transport.invoke(address, agent_id, message)
        # Like a transport that gave up: the message may or may not have run there, and
        # routing again is safe (every message an actor takes is keyed: a run's id, a call id).
        raise TransportError(
            f"node {owner_id} at {address} did not answer within {self.config.forward_timeout:g} s"
        )

    # -- the heartbeat -------------------------------------------------------------

    async def join(self) -> None:
        """Write this node's record as a new incarnation (after any it had), live for a ttl."""
        now, ttl = self.env.now(), self.config.lease_ttl

        async def join(tr: Transaction) -> NodeInfo:
            current = await members.read_node(tr, self.node_id)
            record = members.decide_join(current, self.node_id, self.address, now, ttl)
            tr.set(members.node_key(self.node_id), record.encode())
            return record

        record = await self.store.transact(join)
        self.membership = Membership(self.node_id, record.incarnation, record.expires_at)

    async def _keep_heartbeat(self) -> None:
        while True:
            await trio.sleep_until(self._next_beat())
            await self.renew_heartbeat()

    def put_polls_on_the_beat(self) -> None:
        """Give the node's env a timer grid (env.Ticks) whose period is this heartbeat's
        interval, at a phase the node draws, unless it has one: its polls then end on the
        heartbeat's ticks. Called where the node is wired, before its loops start."""
        if self.env.ticks is None:
            beat = self.config.renew_interval
            self.env.ticks = Ticks(beat, phase=self.env.rng.uniform(0.0, beat))

    def _next_beat(self) -> float:
        """When the next renewal starts: `renew_interval` from now, or on the node's
        timer grid (env.Ticks) if it beats at least that often: the node's polls end on
        the same ticks, so an idle node wakes once a beat for all of them."""
        now, ticks = trio.current_time(), self.env.ticks
        if ticks is None or ticks.period > self.config.renew_interval:
            return now + self.config.renew_interval
        return ticks.after(now)

    async def renew_heartbeat(self) -> None:
        """Renew this node's heartbeat: one write, whatever the number of active agents.

        Renewed: every lease of this incarnation lives on. Found expired (by this node's
        own copy, exact since only it writes its record): this incarnation is over
        (another node may own any of its agents now); its actors stop and the node joins
        again as a new one. Not reachable: once the heartbeat runs out by this node's
        clock, its actors stop (their fences would refuse every write anyway); the next
        renewal finds it expired.
        """
        async with self._renewing:  # the keeper and the node's address announcement
            await self._renew_heartbeat()

    async def _renew_heartbeat(self) -> None:
        mine = self.membership
        if mine is None:
            await self._rejoin()
            return
        started = trio.current_time()
        record = members.decide_renew(mine, self.address, self.env.now(), self.config.lease_ttl)
        if record is None:
            self._stop_all(f"{self.node_id} incarnation {mine.incarnation} expired")
            await self._rejoin()
            return

        async def renew(tr: Transaction) -> NodeInfo:
            key = members.node_key(self.node_id)
            # A blind write, but an attempt of an earlier renewal that lands late (its
            # outcome was unknown) conflicts with this one rather than shorten the record.
            tr.add_read_conflict_key(key)
            tr.set(key, record.encode())
            return record

        renewed: NodeInfo | None = None
        try:
            # Bounded: a node cut off from the store must notice in time that its
            # heartbeat is running out, not retry for a minute.
            with trio.move_on_after(self.config.renew_interval):
                # Idempotent: the record is decided before the transaction, so writing
                # it again after an unknown result is the same write (no marker needed).
                # Not durable: on a store local to the machine (SQLite) a renewal lost
                # in a power cut is lost with every node that could have read it.
                renewed = await self.store.transact(
                    renew, max_attempts=3, idempotent=True, durable=False
                )
        except StoreError as error:
            log.warning("heartbeat renewal failed: %r", error)
        if renewed is not None:
            self.membership = attrs.evolve(mine, live_until=renewed.expires_at)
        elif not mine.live(self.env.now()):
            self._stop_all(f"{self.node_id} could not renew its heartbeat in time")
        self.observer.leases_renewed(self.node_id, len(self._active), trio.current_time() - started)

    async def _rejoin(self) -> None:
        self.membership = None  # no activation, no fenced write until joined again
        try:
            with trio.move_on_after(self.config.renew_interval):
                await self.join()
        except StoreError as error:
            log.warning("joining again failed (tried at the next renewal): %r", error)

    def _stop_all(self, why: str) -> None:
        """This incarnation's heartbeat is gone: every activation of it must stop."""
        if self._active:  # an operator's first question when a node's agents all went
            log.warning("%s: stopping its %d active agent(s)", why, len(self._active))
        for host in list(self._active.values()):
            host.stop(LeaseLost(f"{why}: {host.agent_id} stops"))
