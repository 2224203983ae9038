"""RunEvents: what a run on this node is doing right now, for the streams watching it.

Node-local and in memory: the store holds every run's outcome; this only lets a
stream show a turn as it happens (each message as its step commits, token deltas
while the LLM writes) and lets a cancel reach the LLM call in flight. A stream of
a run that executes on another node sees no live events; it gets the turn's
messages from the reply when the run ends (the caller reconciles by message id).

The stream of a background run (service/run_stream.py) reads its events from the
store, on any node; here it only learns at once that there is something to read.
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


class RunEvents:
    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscription]] = {}
        self._in_flight: dict[str, trio.CancelScope] = {}

    def subscribe(self, run_id: str, *, tokens: bool = False) -> Subscription:
        """Events of the run from now on, until `unsubscribe` (or `end`)."""
        # Unbounded: a turn's events are bounded by the turn, and the actor must
        # never wait on a slow reader.
        send, receive = trio.open_memory_channel[tuple[dict[str, Any], bool]](math.inf)
        subscription = Subscription(run_id, tokens, send, receive)
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
        for subscription in self._subscribers.get(run_id, ()):
            if token and not subscription.tokens:
                continue
            # A reader that left is no reason to stop the run.
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                subscription.send.send_nowait((event, token))

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
