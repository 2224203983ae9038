"""How one node hands a message to another: one interface, two carriers.

`Transport.invoke(address, agent_id, message)` delivers to the dispatcher of
the node at `address` (as a forwarded message) and returns its reply or
raises its error. In production the carrier is HTTP (the node's internal
route); in the simulator it is `SimNetwork`, with its delays, losses and
partitions. Both carry the same bytes: a request is `request_bytes`, its
answer `reply_bytes` (replies and errors in one shape, `encode_outcome` /
`decode_outcome`), so the simulator runs the serialization production runs and
both carriers behave the same to the dispatcher.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import orjson
import trio

from kelpie_trio.nursery.errors import (
    ActorFailed,
    AgentUnavailable,
    MailboxFull,
    NodeShuttingDown,
    NotOwner,
    RuntimeFailure,
)
from kelpie_trio.storage.errors import (
    KeyTooLarge,
    StorageFull,
    StoreError,
    TransactionTooLarge,
    ValueTooLarge,
    refused_for_good,
)

if TYPE_CHECKING:
    from kelpie_trio.llm.origin import Origin
    from kelpie_trio.nursery.dispatcher import Dispatcher
    from kelpie_trio.sim.network import SimNetwork

__all__ = [
    "SimTransport",
    "Transport",
    "TransportError",
    "decode_outcome",
    "encode_outcome",
    "serve_forwarded",
]


class TransportError(Exception):
    """The other node did not answer (down, cut off, lost): the message may or may not have run."""


class Transport(abc.ABC):
    @abc.abstractmethod
    async def invoke(self, address: str, agent_id: str, message: Any) -> Any: ...


async def serve_forwarded(dispatcher: Dispatcher, request: dict[str, Any]) -> dict[str, Any]:
    """The receiving side of any carrier: run a forwarded message, encode its outcome."""
    try:
        reply = await dispatcher.invoke(request["agent_id"], request["message"], forwarded=True)
    except RuntimeFailure as error:
        return encode_error(error)
    except StoreError as error:
        if not refused_for_good(error):
            raise
        return encode_error(error)
    return encode_outcome(reply)


# Store refusals that cross the wire as themselves: the caller's node answers them as
# the owner's would (413, 507), rather than as an unreachable agent.
_REFUSALS: dict[str, type[StoreError]] = {
    cls.__name__: cls for cls in (KeyTooLarge, ValueTooLarge, TransactionTooLarge, StorageFull)
}


def encode_error(error: RuntimeFailure | StoreError) -> dict[str, Any]:
    wire: dict[str, Any] = {"ok": False, "kind": type(error).__name__, "message": str(error)}
    if isinstance(error, MailboxFull):
        wire |= {"agent_id": error.agent_id, "retry_after": error.retry_after}
    elif isinstance(error, ActorFailed):
        wire |= {"agent_id": error.agent_id, "attempts": error.attempts, "cause": error.cause}
    return wire


def request_bytes(message: Any) -> bytes:
    """A forwarded message as it crosses the wire (the agent's key travels beside it)."""
    return orjson.dumps({"message": message})


def reply_bytes(wire: dict[str, Any]) -> bytes:
    """An encoded outcome as it crosses the wire back."""
    return orjson.dumps(wire)


def decode_reply(raw: bytes) -> Any:
    return decode_outcome(orjson.loads(raw))


def encode_outcome(reply: Any) -> dict[str, Any]:
    return {"ok": True, "reply": reply}


def decode_outcome(wire: dict[str, Any]) -> Any:
    """The reply, or the remote node's error raised here as the same kind of error."""
    if wire.get("ok"):
        return wire["reply"]
    kind, message = wire.get("kind"), wire.get("message", "remote error")
    if kind == "MailboxFull":
        raise MailboxFull(wire["agent_id"], wire["retry_after"])
    if kind == "ActorFailed":
        raise ActorFailed(wire["agent_id"], wire["attempts"], wire["cause"])
    if kind == "NotOwner":
        raise NotOwner(message)
    if kind == "NodeShuttingDown":
        raise NodeShuttingDown(message)
    if kind in _REFUSALS:
        raise _REFUSALS[kind](message)
    # AgentUnavailable, or anything this version does not know: worth a retry.
    raise AgentUnavailable(message)


class SimTransport(Transport):
    """The simulator's carrier: addresses are node ids on a SimNetwork."""

    def __init__(self, network: SimNetwork, node_id: str, *, timeout: float = 10.0) -> None:
        self.network = network
        self.node_id = node_id
        self.timeout = timeout

    async def invoke(self, address: str, agent_id: str, message: Any) -> Any:
        from kelpie_trio.sim.network import NetworkUnreachable

        request = (agent_id, request_bytes(message))  # the bytes HTTP would carry
        try:
            raw = await self.network.request(self.node_id, address, request, timeout=self.timeout)
        except NetworkUnreachable as error:
            raise TransportError(str(error)) from error
        return decode_reply(raw)

    async def serve(
        self, dispatcher: Dispatcher, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        async def handle(source: str, request: Any) -> bytes:
            agent_id, body = request
            message = orjson.loads(body)["message"]
            wire = await serve_forwarded(dispatcher, {"agent_id": agent_id, "message": message})
            return reply_bytes(wire)

        await self.network.serve(self.node_id, handle, task_status=task_status)


INTERNAL_INVOKE_PATH = "/internal/v1/agents/{agent_id}/invoke"


class HttpTransport(Transport):
    """Production's carrier: a POST to the owner node's internal route, through the lean
    HTTP/1.1 client the LLM providers use (kelpie_trio/llm/origin.py), one per node.

    `token`, when the cluster has one, goes in `Authorization: Bearer`; every node
    of a cluster shares it.
    """

    def __init__(self, *, token: str | None = None, timeout: float = 30.0) -> None:
        from kelpie_trio.llm import origin  # HTTP only where a node really forwards

        self._open_origin, self._origin_error = origin.open_origin, origin.OriginError
        self._headers = {"content-type": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._origins: dict[str, Origin] = {}

    async def invoke(self, address: str, agent_id: str, message: Any) -> Any:
        origin = self._origins.get(address)
        if origin is None:
            # An address that is not an http(s) URL gets httpx, which refuses it at the
            # call: a TransportError below, as before.
            origin = self._open_origin(
                address, self._headers, timeout=self._timeout, connect_timeout=self._timeout
            )
            self._origins[address] = origin
        path = INTERNAL_INVOKE_PATH.format(agent_id=agent_id)
        try:
            reply = await origin.post(path, request_bytes(message), {})
        except self._origin_error as error:
            raise TransportError(f"{address} did not answer: {error}") from error
        if reply.status != 200:
            raise TransportError(f"{address} answered {reply.status}: {reply.text[:200]}")
        return decode_reply(reply.body)

    async def aclose(self) -> None:
        origins, self._origins = self._origins, {}
        for origin in origins.values():
            await origin.aclose()
