"""Streams of background runs: numbered, read from the store, resumable on any node.

A streamed send with `background: true` (and every run started with `/messages/async`)
is a *background run*: its turn runs in the node's nursery whatever the client does,
and its stream can be read again, from where a client left off, with
`POST /v1/runs/{run_id}/stream` (`starting_after`: the last `seq_id` it saw).

Where the events come from. A run's stream is derived from what the run stores
anyway, not from a second log: its messages in the agent's history (each stored
message is written in the transaction of its step, with the run's id) and its record
(stop reason, error, usage). So a stream reads the same on every node, before and
after a crash or restart, while the run goes on and after it ended. Live events of
this node's actor (`RunEvents`) wake the reader at once and bring the token deltas; a
run that executes on another node is followed by reading the store every
`poll_interval` seconds.

Positions (service/run_positions.py). Every event of the stream carries `seq_id`
(and the SSE `id:` line), a position in the run the store can always give again: the
history place of the stored message it shows (counted from the run's first), the slot
of the Letta message (thoughts, text, each tool call...), how much of its text, and
which message. The ending (an `error_message` for a failed run, `stop_reason`,
`usage_statistics`) comes after the last message, then `[DONE]`; a parked run ends
with `requires_approval`. A stream from `starting_after=N` yields exactly what lies
above N: a client that resumes from the last `seq_id` it saw gets everything it did
not see, once. Pings carry the last position sent (as Letta's do), or null.

Token deltas (`stream_tokens`). The store holds whole messages, not the LLM's chunks;
so a delta's position is "this message's text, up to this character", and a resume
inside a message gives the rest of its text (from the stored message, in one event of
the type its start had), then whole messages: the client's line ends up with the text
once. Thoughts and text stream as deltas; tool calls show whole once stored. Live
deltas reach only a reader on the node that runs the turn (the actor's `RunEvents`);
elsewhere the stream shows each message whole as its step is stored.

What cannot be exact: deltas of a reply that is never stored (the node crashed while
the LLM wrote, or the LLM failed midway) were shown and cannot be taken back; the
reply stored in their place (another id) is then shown whole, and a client keeps the
unfinished start beside it, as it would with Letta when a stream breaks.

Compaction events (`include_compaction_messages`) are not part of a background stream:
they are not stored in the history, so a resumed stream could not show them again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import attrs
import trio

from kelpie_trio.agent import runs
from kelpie_trio.agent.history import decode_messages
from kelpie_trio.agent.messages import iso
from kelpie_trio.agent.runs import Run
from kelpie_trio.errors import Invalid, NotFound, ServiceError
from kelpie_trio.models import convert
from kelpie_trio.service import send_options
from kelpie_trio.service.run_positions import (
    Cursor,
    Partial,
    ending,
    frontier,
    place_delta,
    shown_items,
    stop_reason_of,
)
from kelpie_trio.storage import StoreError, keys
from kelpie_trio.storage.base import Transaction

if TYPE_CHECKING:
    from kelpie_trio.agent.events import RunEvents

__all__ = ["RetrieveStreamRequest", "RunStreamCases"]

log = logging.getLogger("kelpie_trio.service")

MAX_BATCH = 10_000  # history places read per transaction, at most
MIN_POLL = 0.05  # seconds: a reader following another node's run reads no more often


class NotBackground(ServiceError):
    """Letta's answer (its status and words) for a run that was not started in the
    background: only background runs keep their stream."""

    status = 400

    def __init__(self) -> None:
        super().__init__(
            "INVALID_ARGUMENT: Run was not created in background mode, so it cannot be retrieved."
        )


@attrs.define
class RetrieveStreamRequest:
    """Letta's RetrieveStreamRequest (what we use of it)."""

    # The ranges taken, as the API document states them (api/spec.py reads `schema`).
    starting_after: int = attrs.field(
        default=0, metadata={"schema": {"type": "integer", "minimum": 0}}
    )
    include_pings: bool | None = True
    poll_interval: float | None = attrs.field(
        default=0.1,
        metadata={
            "schema": {
                "anyOf": [
                    {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
                    {"type": "null"},
                ]
            }
        },
    )
    batch_size: int | None = attrs.field(
        default=100,
        metadata={
            "schema": {
                "anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_BATCH}, {"type": "null"}]
            }
        },
    )
    # Letta's ways to find the run other than the path (conversations); the path names it.
    agent_id: str | None = None
    run_id: str | None = None
    otid: str | None = None


# -- reading and following (the I/O shell) -----------------------------------------


@attrs.define
class _Driver:
    """How the turn this node drives for a stream went (open_stream's background path)."""

    done: bool = False
    error: BaseException | None = None


@attrs.define
class _Read:
    run: Run
    items: list[tuple[int, dict[str, Any] | None]]  # (position, event or None: passed)
    next_place: int  # the relative history place to read from next
    caught_up: bool  # nothing stored past what was read (yet)
    last_place: int | None  # the last place of the run's messages that were read
    ended: list[dict[str, Any]] | None  # the ending, once the run ended and all is read


class RunStreamCases:
    # MessageCases': the store, the clock, the node's live events and its nursery.
    store: Any
    env: Any
    ping_interval: float
    run_events: RunEvents
    _drive: Any
    _spawn: Any
    # Seconds between reads of a background stream's own run when this node's actor
    # does not run it (forwarded to another node): the steps wake a local reader at once.
    follow_interval: float = 0.5

    async def retrieve_run_stream(self, run_id: str, body: Any) -> AsyncIterator[dict[str, Any]]:
        """`POST /v1/runs/{run_id}/stream`: the run's events above `starting_after`, as it
        goes on, then its ending. Refusals (an unknown run, one not in the background,
        bad options) raise here, before any event."""
        request = convert.structure_api(body if body is not None else {}, RetrieveStreamRequest)
        if request.starting_after < 0:
            raise Invalid.field(["body", "starting_after"], "a position is 0 or more")
        batch = request.batch_size if request.batch_size is not None else 100
        if not 1 <= batch <= MAX_BATCH:
            raise Invalid.field(["body", "batch_size"], f"batch_size is 1 to {MAX_BATCH}")
        poll = request.poll_interval if request.poll_interval is not None else 0.1
        if not 0 < poll <= 60:
            raise Invalid.field(["body", "poll_interval"], "poll_interval is over 0, at most 60")

        async def get(tr: Transaction) -> Run | None:
            return await runs.load_run(tr, run_id)

        run = await self.store.transact(get)
        if run is None:
            raise NotFound("Run", run_id)
        if not run.background:
            raise NotBackground()
        # Letta expires a run's stream 3 hours after it started (its events live in Redis
        # with a TTL); here they are derived from the stored run, which does not expire.
        pings = request.include_pings is not False
        # Letta's request does not say whether the stream had token deltas; its CLI asks
        # for them, and a reader that did not gets deltas of the same message (by id).
        return self._follow(run.id, request.starting_after, pings=pings,
                            poll=max(poll, MIN_POLL), batch=batch, tokens=True)  # fmt: skip

    async def open_background_stream(
        self, run: Run, *, pings: bool, tokens: bool, types: frozenset[str] | None
    ) -> AsyncIterator[dict[str, Any]]:
        """A streamed send with `background: true`: drive the turn in the node's nursery
        and follow its stored events from the start."""
        driver = _Driver()

        async def drive() -> None:
            try:
                await self._drive(run)
            except Exception as error:  # the run stays open; the resume sweep goes on
                driver.error = error
                log.warning("background run %s did not finish here: %r", run.id, error)
            finally:
                driver.done = True
                self.run_events.nudge(run.id)

        self._spawn(drive)
        return self._follow(run.id, 0, pings=pings, poll=self.follow_interval, batch=100,
                            tokens=tokens, types=types, driver=driver, hello=pings)  # fmt: skip

    async def _read(
        self, run_id: str, place: int, after: int, batch: int, end: int, partial: Partial
    ) -> _Read:
        """One transaction: the run, and its events from history place `place` on (at most
        `batch` places) above position `after`, up to its frontier; once the run ended and
        all of it is read, its ending, at place `end` (one past its last message as the
        reader found it: every place from where it started is read before)."""

        async def read(tr: Transaction) -> _Read:
            run = await runs.load_run(tr, run_id)
            if run is None:  # deleted while read: what was stored of it is gone
                raise NotFound("Run", run_id)
            first = run.first_seq
            if first is None:  # the input is not stored yet (or never was)
                ended = ending(run, end, after) if stop_reason_of(run) is not None else None
                return _Read(run, [], place, True, None, ended)
            agent = run.thread  # the history it runs in (a conversation's, or the default)
            top = frontier(run)
            start = first + place
            stop = start + batch if top is None else min(start + batch, top)
            if start < stop:
                rows = await tr.get_range(
                    keys.MESSAGES.pack((agent, start)), keys.MESSAGES.pack((agent, stop))
                )
                if rows:
                    found = decode_messages(rows)
                    mine = [m.seq - first for m in found if m.run_id == run.id]
                    items = shown_items(run, found, after, partial)
                    return _Read(run, items, found[-1].seq + 1 - first, False,
                                 max(mine, default=None), None)  # fmt: skip
            if top is None or stop < top:
                # An empty window: caught up, unless the history goes on past a gap.
                tail = keys.prefix_range(keys.MESSAGES.pack((agent,)))[1]
                beyond = await tr.get_range(keys.MESSAGES.pack((agent, stop)), tail, limit=1)
                if beyond:
                    seq = keys.MESSAGES.unpack(beyond[0][0])[1]
                    if top is None or seq < top:
                        return _Read(run, [], seq - first, False, None, None)
            if stop_reason_of(run) is None:
                return _Read(run, [], place, True, None, None)
            return _Read(run, [], place, True, None, ending(run, end, after))

        return await self.store.transact(read)

    async def _follow(
        self,
        run_id: str,
        after: int,
        *,
        pings: bool,
        poll: float,
        batch: int,
        tokens: bool = False,
        types: frozenset[str] | None = None,
        driver: _Driver | None = None,
        hello: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """The run's events above position `after` until its ending: stored messages read
        from the store, and, with `tokens`, the live token deltas of this node's actor in
        between. Woken at once by this node's actor (a step stored, a delta, the turn
        over), else every `poll` seconds; a ping every `ping_interval` quiet seconds."""
        # Subscribed before the first read: nothing stored after it goes unnoticed.
        subscription = self.run_events.subscribe(run_id, tokens=tokens, offsets=True)
        cursor = Cursor.of(after)
        partial = cursor.partial()  # what the client holds of a message it did not see whole
        last: int | None = after or None
        place = end = cursor.place
        first_seq: int | None = None
        deltas: list[dict[str, Any]] = []
        read_now = True
        quiet_since = trio.current_time()
        try:
            if hello:  # Letta's first event names the run, before anything is stored
                yield self._ping(run_id, None)
            while True:
                if read_now:
                    try:
                        read = await self._read(run_id, place, after, batch, end, partial)
                    except (StoreError, NotFound) as error:
                        # Not a position: the client resumes from the last one it saw.
                        yield self._interrupted(run_id, "the stream could not be read", error)
                        return
                    first_seq = read.run.first_seq
                    place = read.next_place
                    if read.last_place is not None:
                        end = max(end, read.last_place + 1)
                    for at, item in read.items:
                        after = at
                        if item is not None:
                            last = at
                            quiet_since = trio.current_time()
                            if send_options.shown(item, types):
                                yield item
                    if read.ended is not None:
                        for item in read.ended:
                            yield item
                        return
                    if not read.caught_up:
                        continue
                # Deltas of the reply being written, once what came before it is shown.
                for event in deltas if first_seq is not None else ():
                    placed = place_delta(event, first_seq, after, partial)
                    if placed is not None:
                        after = last = placed[0]
                        end = max(end, Cursor.of(after).place)  # the ending goes above it
                        quiet_since = trio.current_time()
                        if send_options.shown(placed[1], types):
                            yield placed[1]
                deltas = []
                if driver is not None and driver.done and driver.error is not None:
                    # This node could not finish the turn; the run stays open and is
                    # resumed by a sweep. No stop reason: the client resumes the stream
                    # (from its last seq_id) and reads the rest wherever it runs.
                    yield self._interrupted(run_id, "the turn stopped on this node", driver.error)
                    return
                wait = poll
                if pings:
                    wait = min(wait, max(quiet_since + self.ping_interval - trio.current_time(), 0))
                woken = await _woken(subscription.receive, wait)
                deltas = [event for event, delta in woken if delta]
                # A step stored, the turn over, or nothing for `poll` seconds: read the
                # store. Only deltas: nothing was stored before them that is not read.
                read_now = not woken or len(deltas) < len(woken)
                if pings and trio.current_time() >= quiet_since + self.ping_interval:
                    yield self._ping(run_id, last)
                    quiet_since = trio.current_time()
        finally:
            self.run_events.unsubscribe(subscription)

    def _interrupted(self, run_id: str, what: str, error: BaseException) -> dict[str, Any]:
        """The last event of a stream cut short (not a position, and no stop reason):
        Letta's clients then resume it from the last seq_id they saw."""
        return {"message_type": "error_message", "run_id": run_id,
                "error_type": "internal_error",
                "message": f"{what} before the run ended; resume it with "
                f"POST /v1/runs/{run_id}/stream and starting_after",
                "detail": f"{type(error).__name__}: {error}", "seq_id": None}  # fmt: skip

    def _ping(self, run_id: str, last: int | None) -> dict[str, Any]:
        return {"message_type": "ping", "id": self.env.new_id("message"),
                "date": iso(self.env.now()), "run_id": run_id, "seq_id": last}  # fmt: skip


async def _woken(
    receive: trio.MemoryReceiveChannel[tuple[dict[str, Any], bool]], wait: float
) -> list[tuple[dict[str, Any], bool]]:
    """Wait up to `wait` seconds for live events, then take every one queued."""
    woken = []
    with trio.move_on_after(wait if wait > 0 else 0):
        try:
            woken.append(await receive.receive())
        except trio.EndOfChannel:  # nothing will wake it: the wait is the poll
            await trio.sleep(wait)
    while True:
        try:
            woken.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return woken
