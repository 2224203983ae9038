"""SimNetwork: request/response between simulated nodes, with network faults.

Each node serves its endpoint with `serve(node_id, handler)` inside its own
nursery, so a crashed node stops answering. `request(src, dst, payload)`
carries a payload there and the handler's reply back, each way subject to the
fault table: NetworkDelay (a slow hop), NetworkMessageReorder (a random extra
delay, so concurrent messages overtake each other), NetworkPacketLoss (the
request or the reply vanishes: the caller times out, not knowing whether the
handler ran), NetworkPartition (a pair of nodes cut off for a while). The
actor runtime's node-to-node transport implements the same `request` shape
over HTTP in production.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from kelpie_trio.sim.faults import FaultType

__all__ = ["NetworkUnreachable", "SimNetwork"]

Handler = Callable[[str, Any], Awaitable[Any]]  # (source node id, payload) -> reply


class NetworkUnreachable(Exception):
    """No reply: the peer is down, cut off, or a packet was lost. The request may have run."""


class SimNetwork:
    def __init__(self, world: Any, *, base_delay: tuple[float, float] = (0.0005, 0.002)) -> None:
        self.world = world
        self.base_delay = base_delay
        self._rng = world.rng("network")
        self._inboxes: dict[str, trio.MemorySendChannel] = {}
        self._partitions: dict[frozenset[str], float] = {}  # pair -> healed at (virtual time)
        self.delivered = 0

    # -- partitions ----------------------------------------------------------

    def partition(self, a: str, b: str, duration: float = math.inf) -> None:
        self._partitions[frozenset((a, b))] = trio.current_time() + duration
        self.world.trace.record(f"partition {min(a, b)}|{max(a, b)} for={duration:g}")

    def heal(self, a: str | None = None, b: str | None = None) -> None:
        if a is None or b is None:
            self._partitions.clear()
        else:
            self._partitions.pop(frozenset((a, b)), None)
        self.world.trace.record("heal")

    def is_partitioned(self, a: str, b: str) -> bool:
        healed_at = self._partitions.get(frozenset((a, b)))
        return healed_at is not None and trio.current_time() < healed_at

    # -- serving and sending -------------------------------------------------

    async def serve(
        self, node_id: str, handler: Handler, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer requests addressed to `node_id` until cancelled (the node stops or crashes)."""
        send, receive = trio.open_memory_channel[tuple[str, Any, trio.MemorySendChannel]](math.inf)
        self._inboxes[node_id] = send
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async for source, payload, reply_to in receive:
                    nursery.start_soon(self._answer, handler, source, payload, reply_to)
        finally:
            if self._inboxes.get(node_id) is send:
                del self._inboxes[node_id]

    async def _answer(
        self, handler: Handler, source: str, payload: Any, reply_to: trio.MemorySendChannel
    ) -> None:
        reply = await handler(source, payload)
        # The caller may have given up (timed out) before the reply came back.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            reply_to.send_nowait(reply)

    async def request(
        self,
        source: str,
        dest: str,
        payload: Any,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - the deadline is part of the transport's contract
    ) -> Any:
        """Send `payload` to `dest` and wait for its reply, or raise NetworkUnreachable."""
        reply_send, reply_receive = trio.open_memory_channel[Any](1)
        with reply_send, reply_receive:
            with trio.move_on_after(timeout):
                if await self._hop(source, dest, "request"):
                    inbox = self._inboxes.get(dest)
                    if inbox is not None:
                        inbox.send_nowait((source, payload, reply_send))
                        reply = await reply_receive.receive()
                        if await self._hop(dest, source, "reply"):
                            self.delivered += 1
                            return reply
                await trio.sleep_forever()  # lost: the caller learns only by its timeout
            raise NetworkUnreachable(f"{source} -> {dest}: no reply within {timeout:g} s")

    async def _hop(self, source: str, dest: str, what: str) -> bool:
        """One message in flight; False if it never arrives."""
        faults = self.world.faults
        delay = self._rng.uniform(*self.base_delay)
        if faults.fires(FaultType.NETWORK_DELAY, "network"):
            delay += faults.uniform(0.05, 1.0)
            self.world.trace.record(f"fault NetworkDelay {source}->{dest} {what}")
        if faults.fires(FaultType.NETWORK_MESSAGE_REORDER, "network"):
            delay += faults.uniform(0.0, 0.2)
            self.world.trace.record(f"fault NetworkMessageReorder {source}->{dest} {what}")
        if faults.fires(FaultType.NETWORK_PARTITION, "network"):
            self.partition(source, dest, faults.uniform(1.0, 10.0))
        await trio.sleep(delay)
        if self.is_partitioned(source, dest):
            return False
        if faults.fires(FaultType.NETWORK_PACKET_LOSS, "network"):
            self.world.trace.record(f"fault NetworkPacketLoss {source}->{dest} {what}")
            return False
        return True
