"""What a step is prompted with (a mixin of AgentActor, actor.py).

The agent as the last step left it and its in-context history, read in one transaction on
the first step of an activation and then kept by the actor (it is the only writer of its
history); the request built from them, within the context window: when it would not fit,
the oldest messages are summarized and leave the context (context.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kelpie_trio.agent.context import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_REPLY_TOKENS,
    SUMMARY_CHARS,
    AgentContext,
    Compaction,
    estimate_tokens,
    plan_eviction,
    recap,
    summary_message,
    summary_request,
)
from kelpie_trio.agent.history import read_history
from kelpie_trio.agent.messages import Message
from kelpie_trio.agent.runs import ClientTool
from kelpie_trio.agent.step import build_request
from kelpie_trio.agent.tool_rules import Offer, ToolRule
from kelpie_trio.llm.catalog import provider_model
from kelpie_trio.llm.model_traits import thinking_budget
from kelpie_trio.llm.types import LlmClient, LlmError, LlmRequest
from kelpie_trio.models import convert
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = ["HISTORY_WINDOW", "ContextWindow"]

log = logging.getLogger("kelpie_trio.agent")

HISTORY_WINDOW = 1000  # at most this many messages in context, whatever the window


class ContextWindow:
    ctx: Any
    thread: str
    agent_id: str
    service: Any
    context: AgentContext
    _window: dict[int, Message] | None
    compacted: Compaction | None  # the last eviction, until the turn takes note of it

    async def _step_state(self) -> tuple[Any, list[Message]]:
        """What a step starts from, in one transaction: the agent (memory as the last
        step left it, tools) and, on the first step of an activation, the in-context
        history from the context's start; later steps take it from the window."""
        agent_id, thread = self.agent_id, self.thread
        window = self._window

        async def read(tr: Transaction) -> tuple[Any, AgentContext, list[Message] | None]:
            view = await self.service.view_in(tr, agent_id)
            if window is not None:
                return view, self.context, None
            raw = await tr.get(keys.CONTEXT.pack((thread,)))
            context = AgentContext() if raw is None else convert.decode_record(raw, AgentContext)
            history = await read_history(
                tr, thread, limit=HISTORY_WINDOW, start_seq=context.start_seq
            )
            return view, context, history

        view, self.context, history = await self.ctx.transact(read)
        if history is not None:
            self._window = {m.seq: m for m in history}
        assert self._window is not None
        ordered = [self._window[seq] for seq in sorted(self._window)]
        if len(ordered) > HISTORY_WINDOW:
            ordered = ordered[-HISTORY_WINDOW:]
            self._window = {m.seq: m for m in ordered}
        return view, ordered

    async def _prompt(
        self,
        llm: LlmClient,
        view: Any,
        history: list[Message],
        rules: tuple[ToolRule, ...] = (),
        offer: Offer | None = None,
        client_tools: Sequence[ClientTool] = (),
    ) -> LlmRequest:
        """The step's request, within the agent's context window: when it would not fit,
        the oldest messages are summarized (by the model, or a recap if it fails) and
        leave the context (context.py)."""
        context = self.context
        agent = view.agent
        # A client's answers to waiting calls are not shown to the model (their results are).
        history = [m for m in history if m.role != "approval"]
        config = agent.llm_config or {}
        # The provider's name for the model, not the handle (which providers answer 404 to).
        model = provider_model(agent.model, config)

        def request(history: list[Message], context: AgentContext) -> LlmRequest:
            return build_request(
                model=model,
                system=agent.system,
                blocks=view.blocks,
                tools=view.tools,
                agent_type=agent.agent_type,
                history=history,
                max_tokens=config.get("max_tokens"),
                summary=summary_message(context),
                rules=rules,
                offer=offer,
                client_tools=client_tools,
                thinking_budget=thinking_budget(config),
            )

        built = request(history, context)
        window = config.get("context_window") or DEFAULT_CONTEXT_WINDOW
        budget = window - min(config.get("max_tokens") or DEFAULT_REPLY_TOKENS, window // 4)
        fixed = len(built.messages) - len(history)
        cut = plan_eviction(
            estimate_tokens(built.messages[:fixed], built.tools),
            [estimate_tokens([m]) for m in built.messages[fixed:]],
            [m.role for m in history],
            budget,
        )
        if cut == 0:
            return built
        evicted = history[:cut]
        try:
            asked = summary_request(model, context.summary, evicted, budget)
            summary = (await llm.complete(asked)).message.content or ""
        except LlmError as error:
            log.warning("agent %s: summarizing failed (%r); keeping a recap", agent.id, error)
            summary = ""
        new = AgentContext(
            start_seq=history[cut].seq,
            summary=(summary.strip() or recap(context.summary, evicted))[:SUMMARY_CHARS],
            evicted=context.evicted + cut,
        )

        async def save(tr: Transaction) -> None:
            tr.set(keys.CONTEXT.pack((self.thread,)), convert.encode_record(new))

        await self.ctx.transact(save)
        self.context = new
        after = request(history[cut:], new)
        self.compacted = Compaction(
            trigger="context_window_exceeded",
            context_window=window,
            tokens_before=estimate_tokens(built.messages, built.tools),
            tokens_after=estimate_tokens(after.messages, after.tools),
            messages_before=len(built.messages),
            messages_after=len(after.messages),
            summary=new.summary or "",
        )
        if self._window is not None:
            self._window = {seq: m for seq, m in self._window.items() if seq >= new.start_seq}
        log.info("agent %s: %d messages left the context window", agent.id, cut)
        return after
