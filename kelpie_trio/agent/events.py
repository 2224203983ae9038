"""RunEvents: what a run on this node is doing right now, for the streams watching it.

Node-local and in memory: the store holds every run's outcome; this only lets a
stream show a turn as it happens (each message as its step commits, token deltas
while the LLM writes) and lets a cancel reach the LLM call in flight. A stream of
a run that executes on another node sees no live events; it gets the turn's
messages from the reply when the run ends (the caller reconciles by message id).

The stream of a background run (service/run_stream.py) reads its messages from the
store, on any node; here it learns at once that there is something to read, and gets
the token deltas with where each ends in its message's text (`offsets`), counted here
over every delta the actor publishes, so a reader that joins late places them right.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import trio

__all__ = ["RunEvents", "Subscription"]


@attrs.define(eq=False)
class Subscription:
    run_id: str
    tokens: bool  # wants token deltas, not only whole messages
    # (event, is a token delta): a reader shows a whole message only if no delta
    # of it was shown already.
    send: trio.MemorySendChannel[tuple[dict[str, Any], bool]]
    receive: trio.MemoryReceiveChannel[tuple[dict[str, Any], bool]]
    # Token deltas of text come with `offset_end`: where in their message's text they end
    # (counted over every delta the actor published, watched or not), so a reader that
    # joined late knows which part of the text a delta is (service/run_positions.py).
    offsets: bool = False


MAX_TEXT_RUNS = 1024  # runs whose delta offsets are kept (the oldest go first)


class RunEvents:
    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscription]] = {}
        self._in_flight: dict[str, trio.CancelScope] = {}
        # run -> (message id, message type, source) -> characters of text published so
        # far; a run's entries go when one of its messages is published whole (stored).
        self._texts: dict[str, dict[tuple[str, str, str | None], int]] = {}

    def subscribe(
        self, run_id: str, *, tokens: bool = False, offsets: bool = False
    ) -> Subscription:
        """Events of the run from now on, until `unsubscribe` (or `end`)."""
        # Unbounded: a turn's events are bounded by the turn, and the actor must
        # never wait on a slow reader.
        send, receive = trio.open_memory_channel[tuple[dict[str, Any], bool]](math.inf)
        subscription = Subscription(run_id, tokens, send, receive, offsets)
        self._subscribers.setdefault(run_id, []).append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.run_id, [])
        if subscription in subscribers:
            subscribers.remove(subscription)
        if not subscribers:
            self._subscribers.pop(subscription.run_id, None)
        subscription.send.close()

    def watched(self, run_id: str) -> bool:
        """Whether any stream watches the run (else its events need not be made)."""
        return run_id in self._subscribers

    def wants_tokens(self, run_id: str) -> bool:
        return any(s.tokens for s in self._subscribers.get(run_id, ()))

    def publish(self, run_id: str, event: dict[str, Any], *, token: bool = False) -> None:
        end = self._count_text(run_id, event) if token else None
        if not token:
            self._texts.pop(run_id, None)
        for subscription in self._subscribers.get(run_id, ()):
            if token and not subscription.tokens:
                continue
            shown = {**event, "offset_end": end} if subscription.offsets and token else event
            # A reader that left is no reason to stop the run.
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                subscription.send.send_nowait((shown, token))

    def _count_text(self, run_id: str, event: dict[str, Any]) -> int | None:
        """Where a delta of text ends in its message's text (None: not a text delta)."""
        kind = event.get("message_type")
        text = event.get("reasoning" if kind == "reasoning_message" else "content")
        if kind not in ("reasoning_message", "assistant_message") or not isinstance(text, str):
            return None
        texts = self._texts.pop(run_id, {})
        self._texts[run_id] = texts  # the most recent run last
        while len(self._texts) > MAX_TEXT_RUNS:
            del self._texts[next(iter(self._texts))]
        key = (str(event.get("id")), kind, event.get("source"))
        texts[key] = texts.get(key, 0) + len(text)
        return texts[key]

    def nudge(self, run_id: str) -> None:
        """Wake the run's readers (the turn ended, or its driver gave up): a reader that
        follows the store reads it again at once rather than at its next poll."""
        self.publish(run_id, {"message_type": "nudge", "run_id": run_id})

    @contextmanager
    def in_flight(self, run_id: str) -> Iterator[trio.CancelScope]:
        """A cancel scope around the run's current wait (the LLM call), for `cancel`."""
        with trio.CancelScope() as scope:
            self._in_flight[run_id] = scope
            try:
                yield scope
            finally:
                if self._in_flight.get(run_id) is scope:
                    del self._in_flight[run_id]

    def cancel(self, run_id: str) -> bool:
        scope = self._in_flight.get(run_id)
        if scope is None:
            return False
        scope.cancel()
        return True
