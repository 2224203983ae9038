"""The HTTP edge: every answer leaves the connection reusable or closed, never wedged.

Two traps of Quart-Trio on Hypercorn's h11 protocol, both at the ASGI level:

- An *early answer* (a 422 for a bad path, a 401, a 413) may be complete before
  the client has sent the body it announced. Hypercorn then takes the connection
  down its close path, in the same task as the app's last `send`; Quart-Trio
  cancels that task as soon as it sees the `http.disconnect` Hypercorn sends it
  on the way, so the close is cut at its first checkpoint: the socket is never
  closed, and the body that arrives next leaves h11 paused for good (the next
  request is never answered, the socket sits in CLOSE-WAIT for the life of the
  server).
- The same cancellation can cut the keep-alive bookkeeping after an ordinary
  answer (the idle timer that closes an unused connection is not restarted).

So the app's last `send` of a response runs shielded (with a deadline of its
own), and an early answer first drains what is left of the body, bounded in
bytes and time, so the connection can serve the next request. When the rest
of the body is too large or too slow, or the answer is a 413, the answer says
`Connection: close` and the server closes the socket once it is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

__all__ = ["BodyGuard", "BodyProgress", "DrainPolicy", "answer_headers"]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


@attrs.frozen
class DrainPolicy:
    """How much of an unread body an early answer waits for before it is sent."""

    max_bytes: int = 32 * 1024 * 1024  # what is still to come, by the declared length
    max_seconds: float = 10.0
    final_send_seconds: float = 10.0  # the shielded last send: the socket write and close


@attrs.define
class BodyProgress:
    """What the client announced and what has come of it so far."""

    declared: int | None  # Content-Length; None when chunked
    received: int = 0
    complete: trio.Event = attrs.field(factory=trio.Event)

    @classmethod
    def from_headers(cls, headers: list[tuple[bytes, bytes]]) -> BodyProgress:
        declared: int | None = 0
        for name, value in headers:
            name = name.lower()
            if name == b"transfer-encoding":
                declared = None
                break
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        body = cls(declared)
        if declared == 0:
            body.complete.set()
        return body

    def may_drain(self, policy: DrainPolicy) -> bool:
        return self.declared is not None and self.declared - self.received <= policy.max_bytes


def answer_headers(
    headers: list[tuple[bytes, bytes]], status: int, body_complete: bool
) -> list[tuple[bytes, bytes]]:
    """The response's headers, with `Connection: close` when the connection cannot be reused:
    the request's body was not all read, or the answer is a 413 (a client that sends too
    much once is told to start afresh)."""
    if body_complete and status != 413:
        return headers
    kept = [(n, v) for n, v in headers if n.lower() != b"connection"]
    return [*kept, (b"connection", b"close")]


class BodyGuard:
    """ASGI middleware (Quart's `app.asgi_app`) that applies the rules above."""

    def __init__(self, app: ASGIApp, policy: DrainPolicy | None = None) -> None:
        self.app = app
        self.policy = policy or DrainPolicy()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = BodyProgress.from_headers(list(scope.get("headers", [])))
        policy = self.policy

        async def guarded_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                body.received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    body.complete.set()
            elif message["type"] == "http.disconnect":
                body.complete.set()  # nothing more will come
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                # The app reads the body in a task of its own (Quart's handle_messages), so
                # waiting here lets it arrive; the wait is bounded either way.
                if not body.complete.is_set() and body.may_drain(policy):
                    with trio.move_on_after(policy.max_seconds):
                        await body.complete.wait()
                message = dict(message)
                message["headers"] = answer_headers(
                    list(message.get("headers", [])),
                    int(message["status"]),
                    body.complete.is_set(),
                )
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # Hypercorn finishes the exchange (recycle or close) inside this call.
                deadline = trio.current_time() + policy.final_send_seconds
                with trio.CancelScope(shield=True, deadline=deadline):
                    await send(message)
                return
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)
