"""One active agent: its task, its mailbox, its supervision.

An `ActorHost` is the trio task that owns one activation of one agent under
the dispatcher's supervisor nursery. It decides the agent's lease and loads the agent in
one transaction (`Actor.on_activate`'s first, see `ActorContext`; a lease nobody holds
is written by the first write, in the same commit), then takes messages from its
bounded mailbox one at a time, in arrival order.
A handler that raises is restarted from stored state with backoff, and the
message is tried again; after `max_failures` tries the caller gets
ActorFailed and the next message goes on. A store refusal no retry can cure
(a size over the store's limits, a full disk) goes to the caller at once.
An idle actor deactivates; a closed mailbox (node shutdown) is drained first.
Whatever ends the activation, the host leaves the dispatcher's table, fails
what it could not deliver with a reroute (the dispatcher tries again, here or
on another node) and releases its lease so another node can take over at once.

What an agent *is* comes from the `Actor` the factory builds; the runtime
knows only these three hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs
import trio

from kelpie_trio.nursery import lease as leases
from kelpie_trio.nursery.errors import ActorFailed, LeaseLost, MailboxFull
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.errors import StoreError, refused_for_good

if TYPE_CHECKING:
    from kelpie_trio.nursery.dispatcher import Dispatcher

__all__ = ["Actor", "ActorContext", "ActorFactory", "ActorHost", "HeldElsewhere", "Reroute"]

log = logging.getLogger("kelpie_trio.actor")
T = TypeVar("T")


class Reroute(Exception):
    """Internal: this activation ended before the message ran; route it again."""


class Actor(Protocol):
    async def on_activate(self) -> None:
        """Load state from the store: its first `ctx.transact` also decides the lease (one
        transaction). Raising fails the activation (the caller retries); raising in that
        first transaction writes nothing, the lease neither."""

    async def handle(self, message: Any) -> Any:
        """Handle one message; the return value is the caller's reply."""

    async def on_deactivate(self) -> None:
        """Last words before the activation ends (state is already stored per message)."""


class HeldElsewhere(Exception):
    """Internal: the activation found the agent's lease live on another node."""

    def __init__(self, decision: leases.HeldElsewhere) -> None:
        super().__init__(decision.lease.node_id)
        self.decision = decision


@attrs.define
class ActorContext:
    """What an actor may use: its identity, the node's env, and fenced transactions.

    The activation's first transaction (the first `transact` of `on_activate`) decides
    the lease and reads the actor's state in one snapshot. A lease still held (this
    node's, an ended incarnation's) is taken there; a lease nobody holds is taken by the
    activation's first write, in its commit (lease.take_at_first_write): a cold message
    then costs one commit, not two. Every later write is fenced by the lease."""

    agent_id: str
    node_id: str
    dispatcher: Dispatcher
    taken: leases.Lease | None = None  # decided by the activation's first transaction
    seen: leases.Lease | None = None  # the stored record `taken` was decided on
    deferred: bool = False  # `taken` is not written yet: the first write takes it
    tried: bool = False  # a write that takes it was sent (its outcome may be unknown)

    @property
    def lease(self) -> leases.Lease:
        assert self.taken is not None, "the activation has not decided its lease yet"
        return self.taken

    @property
    def holds(self) -> bool:
        """Whether this activation's lease is written (it may still have been lost since)."""
        return self.taken is not None and not self.deferred

    @property
    def env(self) -> Any:
        return self.dispatcher.env

    async def transact(self, fn: Callable[[Transaction], Awaitable[T]]) -> T:
        """A store transaction that commits only while this activation holds the lease
        (and its node's heartbeat is live: checked again at every attempt). The first
        one of an activation decides the lease in the same transaction instead; the
        first one that writes takes it, if that was left to it.

        The lease is read (the fence) only by a transaction that writes: one that writes
        nothing commits nothing a takeover could conflict with, and what it read is a
        consistent snapshot whoever reads it, so a stale activation may read but never
        write. The heartbeat is checked on every transaction (it costs no read), so an
        activation of a node whose heartbeat lapsed stops at its next transaction."""
        if self.taken is None:
            return await self._take_lease(fn)
        mine, dispatcher = self.taken, self.dispatcher
        deferred, took = self.deferred, False

        async def fenced(tr: Transaction) -> T:
            nonlocal took
            took = False
            leases.check_heartbeat(mine, dispatcher.membership, dispatcher.env.now())
            # Whether `fn` writes is known only after it; the lease's read is started now
            # so that, if it does, the fence costs no round trip after `fn`'s last read.
            tr.prefetch(leases.lease_key(mine.agent_id))
            result = await fn(tr)
            if tr.has_writes:
                if deferred:
                    # Taken by this commit, or found taken by an earlier one of this
                    # activation (whose outcome was unknown, say): held once it commits.
                    await self._take_deferred(tr)
                    took = True
                else:
                    await leases.fence(tr, mine, dispatcher.membership, dispatcher.env.now())
            return result

        result = await dispatcher.store.transact(fenced)
        if took:
            self._held()
        return result

    async def _take_lease(self, fn: Callable[[Transaction], Awaitable[T]]) -> T:
        """Decide the agent's lease (free, released, this node's, or held by a node no
        longer live) and run `fn` in the same transaction: what `fn` reads is the state
        as of the lease's new epoch, since any write after it takes the lease first,
        which this activation's first write checks (or this transaction, if it takes the
        lease now). If `fn` raises, nothing is written, the lease neither; if another
        live node holds the lease, HeldElsewhere (the message goes there)."""
        dispatcher = self.dispatcher

        async def take(tr: Transaction) -> tuple[leases.Look, bool, T]:
            found = await leases.look(
                tr, self.agent_id, dispatcher.membership, dispatcher.env.now()
            )
            decision = found.decision
            if isinstance(decision, leases.HeldElsewhere):
                raise HeldElsewhere(decision)
            result = await fn(tr)
            now = not found.may_defer or tr.has_writes
            if now:
                self.tried = True
                leases.take(tr, decision.lease)
            return found, now, result

        # Bounded like the dispatcher's other routing transactions: fail fast, the
        # router retries (and may find the agent elsewhere by then).
        attempts = dispatcher.config.store_attempts
        found, now, result = await dispatcher.store.transact(take, max_attempts=attempts)
        assert isinstance(found.decision, leases.Acquired)
        self.taken, self.seen, self.deferred = found.decision.lease, found.seen, True
        if now:
            self._held()
        return result

    async def _take_deferred(self, tr: Transaction) -> None:
        """Within a writing transaction: take the lease left to the first write (the
        fence of that write)."""
        self.tried = True
        dispatcher = self.dispatcher
        await leases.take_at_first_write(
            tr, self.lease, self.seen, dispatcher.membership, dispatcher.env.now()
        )

    async def hold(self) -> None:
        """Write the lease left to the first write now (while `deferred`): the message
        this activation answered wrote nothing. Its reply was read while nobody else
        wrote (the lease is still the record the activation read), and from here on the
        agent's messages come here, not to an activation another node would start
        beside this one."""
        await self.dispatcher.store.transact(self._take_deferred)
        self._held()

    def _held(self) -> None:
        """The lease is written: the activation is the agent's from here on (the
        observer hears of it once, at its epoch)."""
        if self.deferred:
            self.deferred = False
            dispatcher = self.dispatcher
            dispatcher.observer.activated(dispatcher.node_id, self.agent_id, self.lease.epoch)

    async def take_lease(self) -> None:
        """Decide the lease now, if the activation's `on_activate` did not transact."""
        if self.taken is None:

            async def nothing(tr: Transaction) -> None:
                return None

            await self._take_lease(nothing)

    def note(self, kind: str, **detail: Any) -> None:
        """Record a rare event of this actor (a transfer, a recovery) in the node's ring of
        recent events (nursery/recent.py), which the console's runtime view shows."""
        self.dispatcher.recent.record(kind, self.agent_id, **detail)


ActorFactory = Callable[[ActorContext], Actor]


class _Envelope:
    """A message in a mailbox and the slot its reply goes to."""

    __slots__ = ("done", "error", "message", "reply")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.reply: Any = None
        self.error: BaseException | None = None
        self.done = trio.Event()

    def succeed(self, reply: Any) -> None:
        if not self.done.is_set():
            self.reply = reply
            self.done.set()

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    async def result(self) -> Any:
        # If the caller is cancelled here, the message still runs; its reply is dropped.
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.reply


class ActorHost:
    def __init__(self, dispatcher: Dispatcher, agent_id: str) -> None:
        self.dispatcher = dispatcher
        self.agent_id = agent_id
        self.context = ActorContext(agent_id, dispatcher.node_id, dispatcher)
        config = dispatcher.config
        self._send, self._receive = trio.open_memory_channel[_Envelope](config.mailbox_size)
        self._scope = trio.CancelScope()
        self._stop_reason: BaseException | None = None
        self._current: _Envelope | None = None
        self.finished = trio.Event()  # set when the activation has ended, lease released

    @property
    def lease(self) -> leases.Lease:
        return self.context.lease

    @property
    def mailbox_depth(self) -> int:
        return self._receive.statistics().current_buffer_used

    # -- the caller's side ---------------------------------------------------

    def ask(self, message: Any) -> _Envelope:
        """Queue `message`; raise MailboxFull, or Reroute if this activation is ending."""
        envelope = _Envelope(message)
        try:
            self._send.send_nowait(envelope)
        except trio.WouldBlock:
            raise MailboxFull(self.agent_id, self.dispatcher.config.retry_after) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise Reroute(self.agent_id) from None
        self.dispatcher.observer.enqueued(
            self.dispatcher.node_id, self.agent_id, self.mailbox_depth
        )
        return envelope

    def close_mailbox(self) -> None:
        """No new messages; the ones queued are still handled (graceful shutdown)."""
        self._send.close()

    def stop(self, reason: BaseException) -> None:
        """End this activation now (its lease is lost): in-flight work is cancelled."""
        self._stop_reason = reason
        self._send.close()
        self._scope.cancel()

    # -- the actor's task ----------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Activate, report started, serve the mailbox until idle, closed or stopped.

        Before `started`, a failure propagates to the activating caller; after
        it, nothing propagates into the supervisor nursery but cancellation.
        """
        dispatcher = self.dispatcher
        started = False
        try:
            with self._scope:
                actor = await self._activate()
                dispatcher._register(self)
                started = True
                task_status.started(self)
                last = await self._serve(actor)
                if last is not None:
                    self._end_intake()
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        await self._quietly(last.on_deactivate(), "deactivate")
        except LeaseLost as lost:
            if not started:
                raise
            self._stop_reason = lost
        except Exception as error:
            if not started:
                raise
            log.exception("actor %s ended with an unexpected error", self.agent_id)
            self._stop_reason = error
        finally:
            self._end_intake()
            self._fail_undelivered()
            if started and self.context.holds:  # reported activated (ActorContext._held)
                dispatcher.observer.deactivated(dispatcher.node_id, self.agent_id, self.lease.epoch)
            if not isinstance(self._stop_reason, LeaseLost):
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self._release_lease()
            dispatcher._finished(self)
            self.finished.set()

    def _end_intake(self) -> None:
        self.dispatcher._unregister(self)
        self._send.close()

    async def _activate(self) -> Actor:
        config = self.dispatcher.config
        for attempt in range(1, config.max_failures + 1):
            actor = self.dispatcher.factory(self.context)
            try:
                await actor.on_activate()  # its first transaction decides the lease
                await self.context.take_lease()  # unless it made none
                return actor
            except (LeaseLost, HeldElsewhere):
                raise
            except Exception as error:
                if attempt == config.max_failures or self.context.taken is None:
                    # Nothing taken yet (the failure was in the transaction that takes
                    # the lease): the router retries, as for any routing transaction.
                    raise
                self._restarted(f"activation failed: {type(error).__name__}")
                await trio.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    async def _serve(self, actor: Actor) -> Actor | None:
        """Handle messages until idle or closed (returns the actor) or the lease is lost (None)."""
        idle_timeout = self.dispatcher.config.idle_timeout
        while True:
            with trio.move_on_after(idle_timeout) as idle:
                try:
                    envelope = await self._receive.receive()
                except trio.EndOfChannel:
                    return actor  # mailbox closed and drained
            if idle.cancelled_caught:
                if self.mailbox_depth == 0:
                    return actor  # idle: deactivate (no await since the check, so no race)
                continue
            self._current = envelope
            next_actor = await self._deliver(actor, envelope)
            self._current = None
            if next_actor is None:
                return None
            actor = next_actor

    async def _deliver(self, actor: Actor, envelope: _Envelope) -> Actor | None:
        """Handle one message with supervision: the actor to go on with, None if fenced."""
        config = self.dispatcher.config
        for attempt in range(1, config.max_failures + 1):
            try:
                reply = await actor.handle(envelope.message)
                if self.context.deferred:  # a first message that wrote nothing
                    await self.context.hold()
                envelope.succeed(reply)
                return actor
            except LeaseLost as lost:
                envelope.fail(Reroute(self.agent_id))
                self._stop_reason = lost
                return None
            except Exception as error:
                self._restarted(f"handler failed: {type(error).__name__}")
                if refused_for_good(error):
                    # Too large for the store, or a full disk: the same message would fail
                    # the same way. Its caller hears why at once; the actor goes on afresh.
                    log.warning("actor %s: the store refused: %r", self.agent_id, error)
                    envelope.fail(error)
                    return await self._restart()
                if attempt == config.max_failures:
                    envelope.fail(ActorFailed(self.agent_id, attempt, repr(error)))
                    return actor
                log.warning("actor %s failed (try %d): %r", self.agent_id, attempt, error)
                await trio.sleep(self._backoff(attempt))
                actor = await self._restart()
        return actor

    def _restarted(self, why: str) -> None:
        self.dispatcher.observer.restarted(self.dispatcher.node_id, self.agent_id)
        self.dispatcher.recent.record("restart", self.agent_id, detail=why)

    async def _restart(self) -> Actor:
        """A fresh actor from stored state: whatever the failed one held in memory is gone."""
        return await self._activate()

    def _backoff(self, attempt: int) -> float:
        config = self.dispatcher.config
        return min(config.max_backoff, config.restart_backoff * 2 ** (attempt - 1))

    async def _quietly(self, awaitable: Awaitable[Any], what: str) -> None:
        try:
            await awaitable
        except (StoreError, LeaseLost) as error:
            log.info("actor %s could not %s: %r", self.agent_id, what, error)

    def _fail_undelivered(self) -> None:
        if self._current is not None:
            self._current.fail(Reroute(self.agent_id))
        while True:
            try:
                self._receive.receive_nowait().fail(Reroute(self.agent_id))
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return

    async def _release_lease(self) -> None:
        mine = self.context.taken
        if mine is None or (self.context.deferred and not self.context.tried):
            return  # never written: nothing to let go

        async def release(tr: Transaction) -> None:
            await leases.release(tr, mine)

        try:
            await self.dispatcher.store.transact(release, max_attempts=3)
        except StoreError as error:
            # It expires by itself; another node just waits for that.
            log.info("could not release the lease of %s: %r", self.agent_id, error)
