"""What an activation takes from the caller that caused it: nothing but the message.

trio gives a new task a copy of its spawner's context variables. An agent is usually
activated by a request handler, and an actor lives for minutes: spawned from the handler,
it would keep Quart's request context (the request, its headers, its body) for all that
time. The dispatcher spawns each activation from an empty context; the activation then
belongs to the node, not to the caller: a caller cancelled while it runs leaves it to
finish, and no second activation of the agent starts meanwhile.
"""

from __future__ import annotations

import contextvars
from typing import Any

import trio
import trio.testing

from kelpie_trio.nursery.actor import ActorContext
from kelpie_trio.storage import Transaction
from kelpie_trio.storage.memory import MemoryStore
from tests.storage.helpers import lone_dispatcher

REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request")


class _Seer:
    """Answers with the REQUEST it sees; its activation waits for `gate` when given one."""

    activations = 0
    gate: trio.Event | None = None

    def __init__(self, ctx: ActorContext) -> None:
        self.ctx = ctx

    async def on_activate(self) -> None:
        type(self).activations += 1
        if self.gate is not None:
            await self.gate.wait()

        async def nothing(tr: Transaction) -> None:
            return None

        await self.ctx.transact(nothing)  # takes the lease

    async def handle(self, message: Any) -> Any:
        return REQUEST.get("none")

    async def on_deactivate(self) -> None:
        return None


async def test_an_actor_does_not_keep_the_context_of_the_caller_that_activated_it() -> None:
    _Seer.activations, _Seer.gate = 0, None
    dispatcher = lone_dispatcher(MemoryStore(), _Seer)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        REQUEST.set("the first request")
        assert await dispatcher.invoke("agent-1", "what do you see?") == "none"
        assert await dispatcher.invoke("agent-1", "and now?") == "none"  # the same actor
        assert _Seer.activations == 1
        nursery.cancel_scope.cancel()


async def test_a_caller_cancelled_mid_activation_leaves_it_to_finish_and_waits_for_none() -> None:
    _Seer.activations, _Seer.gate = 0, trio.Event()
    dispatcher = lone_dispatcher(MemoryStore(), _Seer)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        first = trio.CancelScope()

        async def caller_who_gives_up() -> None:
            with first:
                await dispatcher.invoke("agent-1", "hello")

        nursery.start_soon(caller_who_gives_up)
        await trio.testing.wait_all_tasks_blocked()  # its activation waits at the gate
        first.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert first.cancelled_caught and _Seer.activations == 1
        answered = trio.Event()
        answers: list[Any] = []

        async def second() -> None:
            answers.append(await dispatcher.invoke("agent-1", "hello again"))
            answered.set()

        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []  # waits for the first activation, starts none of its own
        _Seer.gate.set()
        await answered.wait()
        assert answers == ["none"] and _Seer.activations == 1
        nursery.cancel_scope.cancel()
