"""The multi-agent tools: an agent's step sends a message to other agents (Letta's
`letta_multi_agent_core` tools, declared in tools/base.py).

- send_message_to_agent_and_wait_for_reply: a turn of the other agent (its default
  conversation) and its answer back as the tool's result;
- send_message_to_agent_async: the other agent's turn started in the background;
- send_message_to_agents_matching_tags: the first one, to every other agent whose tags
  match, all at once, each answer (or error) in its own slot.

They run as outside calls of the sender's step (agent/tool_calls.py): the step's reply is
checkpointed with the call pending and the call's result stored once. A send goes
through the service and the dispatcher to the target's one activation, on any node, with
an idempotency key made of the sender's run and call (and the target, for the fan-out):
a step resumed after a crash sends again with the same key, and the target joins, or
answers with, the run the first send started. It never gets the message twice.

A wait can deadlock: A's actor waits on B while B's turn waits on A. Each run carries
the chain of agents waiting on it (`Run.waiting_chain`, stored); a wait on an agent in
the chain, or on oneself, is refused at once with a tool error. Waits that meet across
separate chains (two users each asking one agent of a pair that asks the other) are
found in the store's wait-for graph (agent/wait_graph.py): the wait that would close the
cycle is refused the same way. A wait also has a time limit
(`ServerConfig.agent_wait_timeout`): past it the call is a tool error and the target's
turn goes on; it bounds what neither check sees (a wait whose edge could not be written).

The functions over values (what the target is told, what comes back, who matches, the
cycle check) are apart from the shell that awaits the service.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio

from kelpie_trio.agent import wait_graph
from kelpie_trio.errors import NotFound, ServiceError, Unavailable
from kelpie_trio.nursery.errors import ActorFailed, RuntimeFailure
from kelpie_trio.storage import StoreError
from kelpie_trio.storage.errors import refused_for_good
from kelpie_trio.tools.base import MULTI_AGENT_TOOLS

__all__ = [
    "DEFAULT_WAIT_TIMEOUT",
    "MULTI_AGENT_TOOLS",
    "cycle_refusal",
    "incoming_text",
    "matching_agents",
    "reply_result",
    "run_multi_agent_tool",
    "send_key",
]

log = logging.getLogger("kelpie_trio.agent")

DEFAULT_WAIT_TIMEOUT = 300.0  # seconds; the node sets the configured one on its service
MAX_FAN_OUT = 100  # agents a tag fan-out reaches at most (Letta lists 100)
ASYNC_CONFIRMATION = "Successfully sent message"  # what Letta's async send returns
NO_RESPONSE = "<no response>"  # a turn that ended without an assistant message


# -- values ---------------------------------------------------------------------------


def send_key(run_id: str, call_id: str, target: str | None = None) -> str:
    """The idempotency key of one send: the same on every replay of the call."""
    key = f"a2a:{run_id}:{call_id}"
    return key if target is None else f"{key}:{target}"


def incoming_text(sender: str, message: str, *, wait: bool) -> str:
    """What the target's turn is given (a system-role message, as Letta sends it): who
    wrote, and whether its answer goes back to them."""
    if wait:
        how = "your response will be delivered to the sender"
    else:
        how = ("this is a one-way notification; to answer, message the sender with an "
               "agent-to-agent tool if you have one")  # fmt: skip
    return f"[Incoming message from agent with ID '{sender}' - {how}] {message}"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        if texts:
            return "\n".join(texts)
    return str(content)


def reply_texts(reply: dict[str, Any]) -> list[str]:
    """The assistant messages of the target's turn, in order ("<no response>" if none)."""
    texts = [
        _text_of(m.get("content"))
        for m in reply.get("messages", [])
        if m.get("message_type") == "assistant_message"
    ]
    return texts or [NO_RESPONSE]


def reply_result(target: str, texts: list[str]) -> dict[str, Any]:
    """One answer as the sender's tool result shows it (Letta's {agent_id, response})."""
    return {"agent_id": target, "response": texts}


def cycle_refusal(chain: list[str], sender: str, target: str) -> str | None:
    """Why the sender may not wait on `target`, if it may not: the target (or the sender
    itself) already waits, higher up this chain, for the sender's answer."""
    waiting = [*chain, sender]
    if target not in waiting:
        return None
    if target == sender:
        return f"agent {sender} cannot wait for a reply from itself: it would never come"
    path = " -> ".join([*waiting, target])
    return (f"a cycle of waiting agents ({path}): agent {target} is itself waiting for this "
            "reply, so it cannot answer; the message was not sent")  # fmt: skip


def graph_cycle_refusal(path: list[str], sender: str, target: str) -> str:
    """Why a wait that would close a cycle across requests is refused: `path` is the
    waiting threads, the sender's first and last (agent/wait_graph.py)."""
    return (f"a cycle of waiting agents ({' -> '.join(path)}): agent {target} is already "
            f"waiting, in another request, on a reply that needs agent {sender}'s turn to "
            "end, so it cannot answer; the message was not sent")  # fmt: skip


def matching_agents(
    agents: list[tuple[str, list[str]]], sender: str, match_all: list[str], match_some: list[str]
) -> list[str]:
    """The ids of the agents (id, tags) a tag fan-out reaches: every tag of `match_all`,
    at least one of `match_some` (an empty list asks nothing), never the sender."""
    every, some = set(match_all), set(match_some)
    return [
        agent_id
        for agent_id, tags in agents
        if agent_id != sender and every <= set(tags) and (not some or bool(some & set(tags)))
    ]


def _string_list(value: Any) -> list[str] | None:
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


# -- the shell --------------------------------------------------------------------------

# Failures that a send with the same key can cure (a store hiccup, an agent moving or its
# node restarting): sent again until the time limit; the key makes it one message.
_TRANSIENT = (StoreError, RuntimeFailure, Unavailable)


class _TimedOut(Exception):
    pass


@attrs.frozen
class Waiter:
    """The turn that waits: its thread, run and call (an edge of agent/wait_graph.py)."""

    thread: str
    run_id: str
    call_id: str


async def _again(service: Any, send: Any, deadline: float) -> Any:
    """`send()` until it answers, retrying transient failures until `deadline`."""
    delay = 0.2
    while True:
        try:
            return await send()
        except ActorFailed:
            raise  # the target's turn failed for good: sending again cannot help
        except _TRANSIENT as error:
            if refused_for_good(error):
                raise
            log.info("agent-to-agent send failed, sending again: %r", error)
        if trio.current_time() + delay >= deadline:
            raise _TimedOut
        await trio.sleep(delay * service.env.jitter(0.5, 1.0))
        delay = min(delay * 2, 5.0)


async def _wait_for_reply(
    service: Any,
    *,
    sender: str,
    target: str,
    message: str,
    key: str,
    chain: list[str],
    limit: float,
    waiter: Waiter | None,
) -> tuple[str, dict[str, Any] | str]:
    """("success", the reply as {agent_id, response}) or ("error", why)."""
    refusal = cycle_refusal(chain, sender, target)
    if refusal is not None:
        return "error", refusal
    deadline = trio.current_time() + limit
    if waiter is None:  # no turn waits (a tool run directly): nothing can wait on it
        return await _send_and_wait(service, sender, target, message, key, chain, limit)
    edge = {"thread": waiter.thread, "run_id": waiter.run_id, "call_id": waiter.call_id,
            "target": target}  # fmt: skip
    recorded = False
    try:  # the edge is written (or the cycle found) before anything is sent
        with trio.move_on_at(deadline):
            path = await _again(
                service,
                lambda: service.store.transact(lambda tr: wait_graph.register(tr, **edge)),
                deadline,
            )
            if path is not None:
                return "error", graph_cycle_refusal(path, sender, target)
            recorded = True
            return await _send_and_wait(service, sender, target, message, key, chain, limit)
        return "error", _no_reply(target, limit)
    except _TimedOut:
        return "error", _no_reply(target, limit)
    except (ServiceError, StoreError, RuntimeFailure) as error:
        return "error", f"the message to agent {target} failed: {type(error).__name__}: {error}"
    finally:
        # Best effort, also when the wait is cancelled: an edge left behind is stale once
        # the call is no longer pending, ignored by every walk and removed by the next.
        if recorded:
            with trio.move_on_after(5, shield=True):
                try:
                    await service.store.transact(lambda tr: wait_graph.unregister(tr, **edge))
                except Exception as error:
                    log.info("agent-to-agent wait edge left for the next walk: %r", error)


def _no_reply(target: str, limit: float) -> str:
    return (f"no reply from agent {target} within {limit:g} s: stopped waiting "
            "(its turn goes on, but its answer will not come back here)")  # fmt: skip


async def _send_and_wait(
    service: Any,
    sender: str,
    target: str,
    message: str,
    key: str,
    chain: list[str],
    limit: float,
) -> tuple[str, dict[str, Any] | str]:
    """Send and wait until the time limit (set by the caller's scope, if it has one)."""
    deadline = trio.current_time() + limit
    body = {"messages": [{"role": "system", "content": incoming_text(sender, message, wait=True)}]}

    async def send() -> dict[str, Any]:
        return await service.send_message(
            target, body, idempotency_key=key, waiting_chain=[*chain, sender]
        )

    try:
        with trio.move_on_at(deadline):
            reply = await _again(service, send, deadline)
            return "success", reply_result(target, reply_texts(reply))
    except _TimedOut:
        pass
    except NotFound:
        return "error", f"no agent with id '{target}' exists"
    except (ServiceError, StoreError, RuntimeFailure) as error:
        return "error", f"the message to agent {target} failed: {type(error).__name__}: {error}"
    return "error", _no_reply(target, limit)


async def _send_async(
    service: Any, *, sender: str, target: str, message: str, key: str, limit: float
) -> tuple[str, str]:
    body = {"messages": [{"role": "system", "content": incoming_text(sender, message, wait=False)}]}
    deadline = trio.current_time() + limit

    async def send() -> Any:
        return await service.send_async(target, body, idempotency_key=key)

    try:
        with trio.move_on_at(deadline):
            await _again(service, send, deadline)
            return "success", ASYNC_CONFIRMATION
    except _TimedOut:
        pass
    except NotFound:
        return "error", f"no agent with id '{target}' exists"
    except (ServiceError, StoreError, RuntimeFailure) as error:
        return "error", f"the message to agent {target} failed: {type(error).__name__}: {error}"
    return "error", f"the message to agent {target} could not be sent within {limit:g} s"


async def _fan_out(
    service: Any,
    *,
    sender: str,
    message: str,
    match_all: list[str],
    match_some: list[str],
    key: str,
    chain: list[str],
    limit: float,
    waiter: Waiter | None,
) -> list[dict[str, Any]]:
    # Here, not at the top: the service imports the agent package (a cycle at import time).
    from kelpie_trio.service.common import Page

    page = Page(limit=MAX_FAN_OUT + 1)  # one more: the sender may be among them
    if match_all:
        views = await service.list_agents(page, tags=match_all, match_all_tags=True)
    elif match_some:
        views = await service.list_agents(page, tags=match_some)
    else:
        views = await service.list_agents(page)
    agents = [(v.agent.id, list(v.agent.tags)) for v in views]
    targets = matching_agents(agents, sender, match_all, match_some)[:MAX_FAN_OUT]
    slots: list[dict[str, Any]] = [reply_result(t, []) for t in targets]

    async def one(index: int, target: str) -> None:
        status, result = await _wait_for_reply(
            service, sender=sender, target=target, message=message,
            key=f"{key}:{target}", chain=chain, limit=limit, waiter=waiter,
        )  # fmt: skip
        if status == "success":
            assert isinstance(result, dict)
            slots[index] = result
        else:
            slots[index] = reply_result(target, [f"<error: {result}>"])

    async with trio.open_nursery() as nursery:
        for index, target in enumerate(targets):
            nursery.start_soon(one, index, target)
    return slots


async def run_multi_agent_tool(
    service: Any,
    name: str,
    args: dict[str, Any],
    *,
    sender: str,
    run_id: str,
    call_id: str,
    chain: list[str],
    thread: str | None = None,
) -> tuple[str, str]:
    """One multi-agent tool call of `sender`'s run `run_id`: (status, text). `thread`: the
    sender's thread the run is in (None: no run, the tool was run directly)."""
    waiter = None if thread is None else Waiter(thread, run_id, call_id)
    limit = float(getattr(service, "agent_wait_timeout", DEFAULT_WAIT_TIMEOUT))
    message = args.get("message")
    if not isinstance(message, str):
        return "error", "message must be a string"
    key = send_key(run_id, call_id)
    if name == "send_message_to_agents_matching_tags":
        match_all, match_some = (
            _string_list(args.get("match_all")),
            _string_list(args.get("match_some")),
        )
        if match_all is None or match_some is None:
            return "error", "match_all and match_some must be lists of strings"
        slots = await _fan_out(
            service, sender=sender, message=message, match_all=match_all,
            match_some=match_some, key=key, chain=chain, limit=limit, waiter=waiter,
        )  # fmt: skip
        return "success", str(slots)
    target = args.get("other_agent_id")
    if not isinstance(target, str) or not target:
        return "error", "other_agent_id must be an agent's id"
    if name == "send_message_to_agent_async":
        return await _send_async(
            service, sender=sender, target=target, message=message, key=key, limit=limit
        )
    status, result = await _wait_for_reply(
        service, sender=sender, target=target, message=message, key=key, chain=chain,
        limit=limit, waiter=waiter,
    )  # fmt: skip
    return status, str(result)
