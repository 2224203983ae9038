"""Scheduled messages (Letta's client.agents.schedule): stored, indexed by due time, and
fired by a supervised task of every node (`fire_schedules`, started by nursery/node.py).

A firing is exactly once. Its identity is (schedule id, due time). The node that finds a
schedule due *claims* the firing in one transaction: it records the firing (a pending
send, with the body to send) and advances the schedule's due time (or ends a one-time
schedule). Two nodes that both see it due both read the schedule and both write it, so
the store's conflict check lets one commit; the other, retried, finds the due time moved
on and leaves it. Then the claimer sends, through the ordinary async send
(`send_async`), with the firing's identity as the idempotency key: a send made again
(after a crash, or by another node once `retry_after` has passed) joins the run the first
one started instead of starting another. A sent firing's record is cleared.

Keys (all under `keys.SCHEDULES`):
  s      (schedule_id,)                         -> ScheduledMessage
  agent  (agent_id, created_us, schedule_id)    -> packed (next due us,)  an agent's, in order
  due    (due_us, schedule_id)                  -> agent_id               the due index
  firing (schedule_id, due_us)                  -> Firing                 claimed, not sent yet
  body   (schedule_id, due_us)                  -> the send's JSON (a blob: it may be large)

Missed firings (schedule_rules.claim): a schedule whose due time passed while no node was
up fires once, late, when a node is back; a recurring one then goes on from the next cron
time after that moment (the periods in between are not fired one by one).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import attrs
import orjson
import trio

from kelpie_trio.agent import runs
from kelpie_trio.errors import Conflict, Invalid, NotFound, ServiceError, Unavailable
from kelpie_trio.models import convert
from kelpie_trio.nursery.errors import RuntimeFailure
from kelpie_trio.service import schedule_rules as rules
from kelpie_trio.service.common import MAX_PAGE, ServiceBase, micros, read_record
from kelpie_trio.service.content import parse_content, sized_parts
from kelpie_trio.service.limits import check_key_part, check_record, check_send
from kelpie_trio.service.schedule_rules import ScheduleSpec
from kelpie_trio.service.send_options import check_return_types
from kelpie_trio.storage import StoreError, keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import clear_blob, get_blob, set_blob

__all__ = [
    "DUE",
    "FIRINGS",
    "Firing",
    "ScheduleCases",
    "ScheduleSettings",
    "ScheduledMessage",
    "clear_agent_schedules",
    "render_schedule",
]

log = logging.getLogger("kelpie_trio.schedules")

SCHEDULE = keys.SCHEDULES["s"]
BY_AGENT = keys.SCHEDULES["agent"]
DUE = keys.SCHEDULES["due"]
FIRINGS = keys.SCHEDULES["firing"]
BODIES = keys.SCHEDULES["body"]

CLAIMS_PER_TRANSACTION = 16  # due firings claimed together: one commit for many
# ...unless their messages are large: a claim writes the firing (its messages) and the
# schedule again, and a transaction holds at most 10 MB (storage/limits.py). One send is at
# most 1 MB (service/limits.py), so a claim of one always fits.
CLAIM_BYTES = 2_000_000
# An agent's schedules are deleted with it in one transaction: this many keep it small.
MAX_PER_AGENT = 1000


@attrs.frozen
class ScheduleSettings:
    """How a node fires schedules (KELPIE_SCHEDULE_* in the environment)."""

    enabled: bool = True  # KELPIE_SCHEDULES=off: this node fires none (others still do)
    # At most this long between two looks at the due index. A schedule created on this
    # node wakes the firer at once, so the poll only finds other nodes' new schedules and
    # claims left unsent (which wait `retry_after` anyway): an idle node looks rarely.
    poll: float = 30.0
    retry_after: float = 30.0  # a claimed firing not sent by then is sent by any node
    batch: int = 200  # due firings handled in one round
    concurrency: int = 32  # sends under way at once

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ScheduleSettings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, name in (("poll", "KELPIE_SCHEDULE_POLL"),
                            ("retry_after", "KELPIE_SCHEDULE_RETRY")):  # fmt: skip
            if name in environ:
                try:
                    values[field] = float(environ[name])
                except ValueError:
                    raise ValueError(f"{name}={environ[name]!r} is not a number") from None
                if not 0 < values[field] < math.inf:
                    raise ValueError(f"{name} must be above 0")
        enabled = environ.get("KELPIE_SCHEDULES", "on").lower()
        if enabled not in ("on", "off"):
            raise ValueError(f"KELPIE_SCHEDULES={enabled!r}: expected on or off")
        values["enabled"] = enabled == "on"
        return cls(**values)


@attrs.define(kw_only=True)
class ScheduledMessage:
    id: str
    agent_id: str
    created_at: float
    schedule: ScheduleSpec
    messages: list[dict[str, Any]]
    max_steps: float | None = None
    include_return_message_types: list[str] | None = None
    next_due_us: int | None = None
    fired: int = 0  # firings claimed so far


@attrs.define(kw_only=True)
class Firing:
    """A claimed firing, and when another node may send it if the claimer has not (it
    crashed, or its send failed). What it sends is stored beside it (`BODIES`), so this
    record stays small enough to scan."""

    schedule_id: str
    agent_id: str
    due_us: int
    retry_at: float
    attempts: int = 1

    @property
    def key(self) -> str:
        return rules.idempotency_key(self.schedule_id, self.due_us)


Claimed = tuple[Firing, dict[str, Any]]  # a firing this node is to send, and what it sends


@attrs.define
class ScheduleCreate:
    """Letta's ScheduleCreateParams (the schedule itself is checked by schedule_rules)."""

    messages: Any = None
    schedule: Any = None
    callback_url: Any = None
    include_return_message_types: list[str] | None = None
    max_steps: float | None = None


def render_schedule(record: ScheduledMessage) -> dict[str, Any]:
    """Letta's ScheduledMessage."""
    spec = record.schedule
    schedule: dict[str, Any]
    if spec.type == "one-time":
        at = spec.scheduled_at
        schedule = {"type": "one-time", "scheduled_at": int(at) if at == int(at or 0) else at}
    else:
        schedule = {"type": "recurring", "cron_expression": spec.cron_expression,
                    "timezone": spec.timezone or "UTC"}  # fmt: skip
    steps = record.max_steps
    return {
        "id": record.id,
        "agent_id": record.agent_id,
        "message": {
            "messages": record.messages,
            "callback_url": None,
            "include_return_message_types": record.include_return_message_types,
            "max_steps": int(steps) if steps is not None and steps == int(steps) else steps,
        },
        "next_scheduled_time": _iso_us(record.next_due_us),
        "schedule": schedule,
    }


def _iso_us(us: int | None) -> str | None:
    return None if us is None else convert.iso(us / 1_000_000)


def _parse_messages(raw: Any) -> list[dict[str, Any]]:
    """The messages to send, checked now as a send would check them, so a firing is not
    refused later for what the client could have been told at once."""
    where: list[str | int] = ["body", "messages"]
    if not isinstance(raw, list) or not raw:
        raise Invalid.field(where, "give at least one message", "missing")
    texts: list[tuple[list[str | int], str]] = []
    kept = []
    for i, message in enumerate(raw):
        at: list[str | int] = [*where, i]
        if not isinstance(message, dict):
            raise Invalid.field(at, "a message is an object", "model_attributes_type")
        if message.get("type", "message") not in (None, "message"):
            raise Invalid.field([*at, "type"], "a scheduled message is of type 'message'")
        role = message.get("role", "user")
        if role not in ("user", "system"):
            raise Invalid.field([*at, "role"], "a scheduled message's role is 'user' or "
                                "'system' (it is sent as a message to the agent)")  # fmt: skip
        if "content" not in message or message["content"] is None:
            raise Invalid.field([*at, "content"], "content is required", "missing")
        text, parts = parse_content(message["content"], [*at, "content"])
        if role == "system" and parts is not None:
            raise Invalid.field([*at, "content"], "a system message has text only, no images")
        otid = message.get("otid")
        if otid is not None:
            if not isinstance(otid, str):
                raise Invalid.field([*at, "otid"], "otid must be a string")
            check_key_part([*at, "otid"], otid, "an otid")
        texts += sized_parts([*at, "content"], text, parts)
        kept.append({k: message[k] for k in ("role", "content", "otid", "name", "sender_id",
                                             "type") if message.get(k) is not None})  # fmt: skip
    check_send(texts)
    return kept


class ScheduleCases(ServiceBase):
    # MessageCases' (the same service object): the async send a firing makes.
    send_async: Any

    # -- the API's use cases -------------------------------------------------------

    async def create_schedule(self, agent_id: str, body: Any) -> dict[str, Any]:
        request = convert.structure_api(body, ScheduleCreate)
        if request.schedule is None:
            raise Invalid.field(["body", "schedule"], "Field required", "missing")
        messages = _parse_messages(request.messages)
        if request.callback_url is not None:
            raise Invalid.field(
                ["body", "callback_url"],
                "callback_url is not supported here: a firing's run is among the agent's runs",
            )
        check_return_types(request.include_return_message_types)
        steps = request.max_steps
        if steps is not None and (steps != int(steps) or not 1 <= steps <= 1000):
            raise Invalid.field(["body", "max_steps"], "max_steps must be a whole number "
                                "between 1 and 1000")  # fmt: skip
        now = self.env.now()
        spec = rules.parse_spec(request.schedule, now)
        record = ScheduledMessage(
            id=self.env.new_id("scheduled_message"),
            agent_id=agent_id,
            created_at=now,
            schedule=spec,
            messages=messages,
            max_steps=steps,
            include_return_message_types=request.include_return_message_types,
            next_due_us=rules.first_due(spec, now),
        )
        encoded = check_record(record, "scheduled message")

        async def create(tr: Transaction) -> None:
            await runs.require_agent(tr, agent_id)
            span = BY_AGENT.range((agent_id,))
            if len(await tr.get_range(span.start, span.stop, limit=MAX_PER_AGENT)) >= MAX_PER_AGENT:
                raise Conflict(
                    f"agent {agent_id} has {MAX_PER_AGENT} scheduled messages, the most one "
                    "agent may have; delete some first"
                )
            set_blob(tr, SCHEDULE.pack((record.id,)), encoded)
            _index(tr, record)

        await self.store.transact(create)
        self._wake_firer()
        return {"id": record.id, "next_scheduled_at": _iso_us(record.next_due_us)}

    async def get_schedule(self, agent_id: str, schedule_id: str) -> dict[str, Any]:
        async def read(tr: Transaction) -> ScheduledMessage:
            return await _owned(tr, agent_id, schedule_id)

        return render_schedule(await self.store.transact(read))

    async def list_schedules(
        self, agent_id: str, *, after: str | None = None, limit: int = 50
    ) -> dict[str, Any]:
        """An agent's scheduled messages, oldest first, `limit` from after the `after` one."""
        limit = min(limit, MAX_PAGE)

        async def read(tr: Transaction) -> tuple[list[ScheduledMessage], bool]:
            await runs.require_agent(tr, agent_id)
            span = BY_AGENT.range((agent_id,))
            begin, end = span.start, span.stop
            if after is not None:
                cursor = await _load(tr, after)
                if cursor is None or cursor.agent_id != agent_id:
                    return [], False
                begin = BY_AGENT.pack((agent_id, micros(cursor.created_at), after)) + b"\x00"
            rows = await tr.get_range(begin, end, limit=limit + 1)
            found = [await _load(tr, BY_AGENT.unpack(k)[2]) for k, _ in rows[:limit]]
            return [f for f in found if f is not None], len(rows) > limit

        found, more = await self.store.transact(read)
        return {"has_next_page": more, "scheduled_messages": [render_schedule(f) for f in found]}

    async def delete_schedule(self, agent_id: str, schedule_id: str) -> dict[str, Any]:
        """Delete it; a firing already claimed (due before the delete) is still sent."""

        async def delete(tr: Transaction) -> None:
            _remove(tr, await _owned(tr, agent_id, schedule_id))

        await self.store.transact(delete)
        return {"success": True}

    # -- the firer: one supervised task per node -------------------------------------

    def _wake_firer(self) -> None:
        wake = getattr(self, "_firer_wake", None)
        if wake is not None:
            wake.set()

    async def fire_schedules(
        self,
        settings: ScheduleSettings | None = None,
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Fire what falls due, for ever: sleep (on the injected clock) until the next due
        time, `settings.poll` at most (schedules created on other nodes are seen then), or
        until a schedule is created on this node. A store that fails is tried again."""
        settings = settings or ScheduleSettings()
        task_status.started()
        while True:
            self._firer_wake = trio.Event()  # set by a create on this node meanwhile
            try:
                delay = await self.fire_due(settings)
            except (StoreError, ServiceError, RuntimeFailure) as error:
                log.warning("firing scheduled messages failed (tried again): %r", error)
                delay = 1.0
            # Waiting for a due time: exactly; polling for other nodes' schedules: until
            # the node's next tick after the poll (env.Ticks), with the heartbeat.
            wake = (trio.current_time() + delay if delay < settings.poll
                    else self.env.poll_time(settings.poll))  # fmt: skip
            if delay > 0:
                with trio.move_on_at(wake):  # trio's clock: virtual under the simulator
                    await self._firer_wake.wait()

    async def fire_due(self, settings: ScheduleSettings) -> float:
        """One round: send the claimed firings whose claimer did not, then claim and send
        the firings due now. Returns the seconds until the next due time."""
        now = self.env.now()
        now_us = micros(now)

        async def look(tr: Transaction) -> tuple[bool, int | None]:
            rows = await tr.get_range(FIRINGS.range().start, FIRINGS.range().stop,
                                      limit=settings.batch)  # fmt: skip
            stale = any(convert.decode_record(raw, Firing).retry_at <= now for _, raw in rows)
            first = await tr.get_range(DUE.range().start, DUE.range().stop, limit=1)
            return stale, DUE.unpack(first[0][0])[0] if first else None

        # One read first: a round with nothing stale and nothing due (an idle node's every
        # round) ends here, rather than after three transactions.
        stale, first = await self.store.transact(look)
        if not stale and (first is None or first > now_us):
            return settings.poll if first is None else first / 1_000_000 - now
        await self._send_stale_firings(now, settings)

        async def read_due(tr: Transaction) -> list[tuple[int, str]]:
            rows = await tr.get_range(DUE.range().start, DUE.pack((now_us + 1,)),
                                      limit=settings.batch)  # fmt: skip
            return [DUE.unpack(k) for k, _ in rows]

        due = await self.store.transact(read_due)
        if due:
            # Each node starts at its own place in what is due, so nodes that look at once
            # mostly claim different firings rather than conflict over the same ones.
            start = self.env.rng.randrange(len(due))
            due = due[start:] + due[:start]
            done: list[Firing] = []
            stalled = False
            async with trio.open_nursery() as sending:
                send = self._sender(sending, settings, done)
                for i in range(0, len(due), CLAIMS_PER_TRANSACTION):
                    try:
                        claimed = await self._claim(due[i : i + CLAIMS_PER_TRANSACTION], now,
                                                    settings)  # fmt: skip
                    except StoreError as error:  # the rest waits for the next round
                        log.warning("claiming due scheduled messages failed: %r", error)
                        stalled = True
                        break
                    for firing, body in claimed:
                        send(firing, body)
            await self._forget(done)
            if stalled:
                return 1.0  # what is due stays due: look again soon, not at once
            if len(due) == settings.batch:
                return 0.0  # more are due: go on at once

        async def next_due(tr: Transaction) -> int | None:
            rows = await tr.get_range(DUE.range().start, DUE.range().stop, limit=1)
            return DUE.unpack(rows[0][0])[0] if rows else None

        first = await self.store.transact(next_due)
        if first is None:
            return settings.poll
        return max(0.0, first / 1_000_000 - self.env.now())

    def _sender(self, nursery: trio.Nursery, settings: ScheduleSettings, done: list[Firing]) -> Any:
        """Start a firing's send in `nursery`, `settings.concurrency` at a time (a send is
        one transaction: many at once keep a node's firings in step with a busy minute);
        the firings sent are added to `done`."""
        limiter = trio.CapacityLimiter(settings.concurrency)

        async def one(firing: Firing, body: dict[str, Any]) -> None:
            async with limiter:
                if await self._send(firing, body):
                    done.append(firing)

        return lambda firing, body: nursery.start_soon(one, firing, body)

    async def _claim(
        self, seen: list[tuple[int, str]], now: float, settings: ScheduleSettings
    ) -> list[Claimed]:
        """Claim the firings seen due (those still due and not claimed by another node):
        each recorded, and its schedule advanced or ended, in this one transaction."""

        async def claim(tr: Transaction) -> list[Claimed]:
            claimed = []
            written = 0
            for due_us, schedule_id in seen:
                record = await _load(tr, schedule_id)
                if record is None or record.next_due_us != due_us:
                    # Claimed by another node since we looked (which cleared this entry),
                    # or an entry no schedule waits on: cleared either way, so the firer
                    # never wakes again and again for it.
                    tr.clear(DUE.pack((due_us, schedule_id)))
                    continue
                decision = rules.claim(record.schedule, record.next_due_us, due_us, now)
                if decision is None:
                    continue  # not yet due by this node's clock
                firing = Firing(
                    schedule_id=schedule_id,
                    agent_id=record.agent_id,
                    due_us=due_us,
                    retry_at=now + settings.retry_after,
                )
                body = _send_body(record)
                tr.set(FIRINGS.pack((schedule_id, due_us)), convert.encode_record(firing))
                encoded = orjson.dumps(body)
                set_blob(tr, BODIES.pack((schedule_id, due_us)), encoded)
                tr.clear(DUE.pack((due_us, schedule_id)))
                written += len(encoded)
                if decision.next_due_us is None:
                    _remove(tr, record)
                else:
                    record.next_due_us = decision.next_due_us
                    record.fired += 1
                    stored = convert.encode_record(record)
                    set_blob(tr, SCHEDULE.pack((record.id,)), stored)
                    _index(tr, record)
                    written += len(stored)
                claimed.append((firing, body))
                if written >= CLAIM_BYTES:
                    break  # the rest stay due: the next round claims them
            return claimed

        return await self.store.transact(claim)

    async def _send(self, firing: Firing, body: dict[str, Any]) -> bool:
        """Send a claimed firing; True when it is done with (sent, or refused for good)."""
        try:
            await self.send_async(firing.agent_id, body, idempotency_key=firing.key)
        except NotFound:
            log.info("scheduled message %s: its agent is gone", firing.schedule_id)
        except Unavailable as error:
            log.warning("scheduled message %s not sent yet: %s", firing.schedule_id, error)
            return False
        except ServiceError as error:
            # Refused as a user's message would be (the agent waits for an approval, its
            # model takes no images): sending it again would be refused again.
            log.warning("scheduled message %s (due %s) refused by agent %s: %s",
                        firing.schedule_id, _iso_us(firing.due_us), firing.agent_id,
                        error)  # fmt: skip
        except (StoreError, RuntimeFailure) as error:
            log.warning("scheduled message %s not sent yet: %r", firing.schedule_id, error)
            return False
        return True

    async def _send_stale_firings(self, now: float, settings: ScheduleSettings) -> None:
        """Firings claimed `retry_after` ago and still not sent (their node crashed, or the
        send failed): sent now, by whichever node takes them (a claim again, so one node
        at a time), with the same idempotency key."""

        async def read(tr: Transaction) -> list[tuple[str, int]]:
            rows = await tr.get_range(FIRINGS.range().start, FIRINGS.range().stop,
                                      limit=settings.batch)  # fmt: skip
            stale = []
            for key, raw in rows:
                firing = convert.decode_record(raw, Firing)
                if firing.retry_at <= now:
                    stale.append(FIRINGS.unpack(key))
            return stale

        stale = await self.store.transact(read)
        done: list[Firing] = []
        async with trio.open_nursery() as sending:
            send = self._sender(sending, settings, done)
            for schedule_id, due_us in stale:
                try:
                    firing = await self.store.transact(self._take(schedule_id, due_us, now,
                                                                  settings))  # fmt: skip
                except StoreError as error:
                    log.warning("taking over a scheduled message's firing failed: %r", error)
                    break
                if firing is not None:
                    send(*firing)
        await self._forget(done)

    @staticmethod
    def _take(schedule_id: str, due_us: int, now: float, settings: ScheduleSettings) -> Any:
        """A transaction that takes over a stale firing: it is this node's to send until
        `retry_after` passes again (None: another node took it meanwhile, or sent it)."""
        at = FIRINGS.pack((schedule_id, due_us))

        async def take(tr: Transaction) -> Claimed | None:
            raw = await tr.get(at)
            if raw is None:
                return None
            firing = convert.decode_record(raw, Firing)
            if firing.retry_at > now:
                return None
            body = await get_blob(tr, BODIES.pack((schedule_id, due_us)))
            if body is None:  # none should lack it; without it there is nothing to send
                tr.clear(at)
                return None
            firing.retry_at = now + settings.retry_after
            firing.attempts += 1
            tr.set(at, convert.encode_record(firing))
            return firing, orjson.loads(body)

        return take

    async def _forget(self, done: list[Firing]) -> None:
        """Clear the records of firings sent. If this fails they are sent again later, and
        their idempotency key makes that a no-op."""
        if not done:
            return

        async def clear(tr: Transaction) -> None:
            for firing in done:
                tr.clear(FIRINGS.pack((firing.schedule_id, firing.due_us)))
                clear_blob(tr, BODIES.pack((firing.schedule_id, firing.due_us)))

        try:
            await self.store.transact(clear)
        except StoreError as error:
            log.warning("could not clear %d sent firing(s): %r", len(done), error)


def _send_body(record: ScheduledMessage) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": record.messages}
    if record.max_steps is not None:
        body["max_steps"] = int(record.max_steps)
    return body


async def _load(tr: Transaction, schedule_id: str) -> ScheduledMessage | None:
    return await read_record(tr, SCHEDULE.pack((schedule_id,)), ScheduledMessage)


async def _owned(tr: Transaction, agent_id: str, schedule_id: str) -> ScheduledMessage:
    await runs.require_agent(tr, agent_id)
    record = await _load(tr, schedule_id)
    if record is None or record.agent_id != agent_id:
        raise NotFound("Scheduled message", schedule_id)
    return record


def _index(tr: Transaction, record: ScheduledMessage) -> None:
    """The schedule's due entry, and its next due time beside it in the agent's list (so
    deleting an agent finds every due entry without reading each schedule)."""
    due = record.next_due_us
    tr.set(BY_AGENT.pack((record.agent_id, micros(record.created_at), record.id)),
           keys.pack((due,)))  # fmt: skip
    if due is not None:
        tr.set(DUE.pack((due, record.id)), record.agent_id.encode())


def _remove(tr: Transaction, record: ScheduledMessage) -> None:
    clear_blob(tr, SCHEDULE.pack((record.id,)))
    tr.clear(BY_AGENT.pack((record.agent_id, micros(record.created_at), record.id)))
    if record.next_due_us is not None:
        tr.clear(DUE.pack((record.next_due_us, record.id)))


async def clear_agent_schedules(tr: Transaction, agent_id: str) -> None:
    """Within the transaction that deletes the agent: its schedules go with it. (A firing
    already claimed is refused when sent: the agent is gone.)"""
    span = BY_AGENT.range((agent_id,))
    for key, value in await tr.get_range(span.start, span.stop):
        _, _, schedule_id = BY_AGENT.unpack(key)
        (due,) = keys.unpack(value) if value else (None,)
        clear_blob(tr, SCHEDULE.pack((schedule_id,)))
        if due is not None:
            tr.clear(DUE.pack((due, schedule_id)))
    tr.clear_range(span.start, span.stop)
