"""What a step is prompted with (a mixin of AgentActor, actor.py).

The agent as the last step left it and its in-context history, read in one transaction on
the first step of an activation and then kept by the actor (it is the only writer of its
history), with each message's chat form and token estimate made once
(history_window.py); the request built from them, within the context window: when it
would not fit, the oldest messages are summarized and leave the context (context.py). A
client may ask for that now (`_compact_now`, Letta's /summarize): the actor does it
between turns, so it never races one, with the same summary request and the same stored
record.

`prompt_request` is the step's request as a plain function, so the context-window
overview (service/context_overview.py) reports exactly what a step sends.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import attrs

from kelpie_trio.agent.context import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_REPLY_TOKENS,
    SUMMARY_CHARS,
    TARGET,
    AgentContext,
    Compaction,
    CompactionAnswer,
    estimate_tokens,
    plan_compaction,
    plan_eviction,
    recap,
    summary_message,
    summary_request,
)
from kelpie_trio.agent.history import read_history
from kelpie_trio.agent.history_window import HistoryWindow, Shown
from kelpie_trio.agent.messages import Message
from kelpie_trio.agent.runs import ClientTool
from kelpie_trio.agent.step import build_request, turn_offer
from kelpie_trio.agent.tool_rules import Offer, ToolRule, TurnState, rules_of
from kelpie_trio.errors import NotFound
from kelpie_trio.llm.catalog import provider_model
from kelpie_trio.llm.model_traits import thinking_budget
from kelpie_trio.llm.types import ChatMessage, LlmClient, LlmError, LlmRequest
from kelpie_trio.models import convert
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = [
    "HISTORY_WINDOW",
    "ContextWindow",
    "first_step_request",
    "in_prompt",
    "prompt_request",
    "read_context",
    "window_budget",
]

log = logging.getLogger("kelpie_trio.agent")

HISTORY_WINDOW = 1000  # at most this many messages in context, whatever the window


async def read_context(tr: Transaction, thread: str) -> tuple[AgentContext, list[Message]]:
    """A thread's stored context record and its in-context history, within `tr` (the
    thread: an agent's id for its default conversation, else a conversation's id)."""
    raw = await tr.get(keys.CONTEXT.pack((thread,)))
    context = AgentContext() if raw is None else convert.decode_record(raw, AgentContext)
    history = await read_history(tr, thread, limit=HISTORY_WINDOW, start_seq=context.start_seq)
    return context, history


def in_prompt(history: Sequence[Message]) -> list[Message]:
    """The history a prompt shows: a client's answers to waiting calls are not shown to
    the model (their results are)."""
    return [m for m in history if m.role != "approval"]


def window_budget(config: dict[str, Any]) -> tuple[int, int]:
    """The agent's context window and what of it a prompt may take (the rest is the
    reply's)."""
    window = config.get("context_window") or DEFAULT_CONTEXT_WINDOW
    return window, window - min(config.get("max_tokens") or DEFAULT_REPLY_TOKENS, window // 4)


def prompt_request(
    view: Any,
    history: list[Message],
    context: AgentContext,
    rules: tuple[ToolRule, ...] = (),
    offer: Offer | None = None,
    client_tools: Sequence[ClientTool] = (),
    chats: Sequence[ChatMessage] | None = None,
) -> LlmRequest:
    """A step's request: the agent's system prompt and memory, the summary of what left
    the context, the in-context `history` (already without approvals; or its `chats`,
    made already), the tools."""
    agent = view.agent
    config = agent.llm_config or {}
    return build_request(
        # The provider's name for the model, not the handle (which providers answer 404 to).
        model=provider_model(agent.model, config),
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
        directories=getattr(view, "directories", None),
        chats=chats,
    )


def first_step_request(view: Any, history: list[Message], context: AgentContext) -> LlmRequest:
    """The request the first step of the agent's next turn sends (its tool rules as they
    stand before any call)."""
    rules = rules_of(view.agent.tool_rules)
    offer = turn_offer(rules, view.tools, TurnState((), None), view.agent.agent_type)
    return prompt_request(view, history, context, rules, offer)


def _unanswered_from(history: Sequence[Message]) -> int | None:
    """The index of the first reply whose calls do not all have their results in
    `history` (a run stopped between them): a compaction keeps it and what follows."""
    answered = {m.tool_call_id for m in history if m.role == "tool"}
    for index, message in enumerate(history):
        if any(c.id not in answered for c in message.tool_calls):
            return index
    return None


class ContextWindow:
    ctx: Any
    thread: str
    agent_id: str
    isolated: dict[str, str]
    service: Any
    context: AgentContext
    _window: HistoryWindow | None
    _block_ids: tuple[str, ...]  # read ahead with the agent at the next step's view
    compacted: Compaction | None  # the last eviction, until the turn takes note of it
    llm_for: Any
    _checkpointed: Any  # commits.py: a fenced, shielded transaction

    async def _step_state(self) -> tuple[Any, Shown]:
        """What a step starts from, in one transaction: the agent (memory as the last
        step left it, tools) and, on the first step of an activation, the in-context
        history from the context's start; later steps take it from the window. The
        history as a prompt shows it."""
        agent_id, thread = self.agent_id, self.thread
        window = self._window
        expected_blocks = self._block_ids

        async def read(tr: Transaction) -> tuple[Any, AgentContext, list[Message] | None]:
            view = await self.service.view_in(tr, agent_id, self.isolated, expected_blocks)
            if window is not None:
                return view, self.context, None
            context, history = await read_context(tr, thread)
            return view, context, history

        view, self.context, history = await self.ctx.transact(read)
        self._block_ids = tuple(view.agent.block_ids)
        # Whether a turn's end may be due a sleeptime companion's turn (agent/sleeptime.py).
        self.has_sleeptime_group = view.agent.group_id is not None
        if history is not None:
            self._window = HistoryWindow(history)
        assert self._window is not None
        self._window.keep_last(HISTORY_WINDOW)
        return view, self._window.shown()

    async def _prompt(
        self,
        llm: LlmClient,
        view: Any,
        shown: Shown,
        rules: tuple[ToolRule, ...] = (),
        offer: Offer | None = None,
        client_tools: Sequence[ClientTool] = (),
    ) -> LlmRequest:
        """The step's request, within the agent's context window: when it would not fit,
        the oldest messages are summarized (by the model, or a recap if it fails) and
        leave the context (context.py). `shown`: the in-context history as the window
        keeps it, each message's chat form and token estimate made once."""
        context = self.context
        agent = view.agent

        def request(shown: Shown, context: AgentContext) -> LlmRequest:
            return prompt_request(view, [], context, rules, offer, client_tools, shown.chats)

        built = request(shown, context)
        window, budget = window_budget(agent.llm_config or {})
        fixed = len(built.messages) - len(shown.chats)
        cut = plan_eviction(
            estimate_tokens(built.messages[:fixed], built.tools), shown.tokens, shown.roles, budget
        )
        if cut == 0:
            return built
        evicted = list(shown.messages[:cut])
        new = attrs.evolve(
            context,
            start_seq=shown.messages[cut].seq,
            summary=await self._summarize(llm, built.model, context, evicted, budget),
            evicted=context.evicted + cut,
        )

        async def save(tr: Transaction) -> None:
            tr.set(keys.CONTEXT.pack((self.thread,)), convert.encode_record(new))

        await self.ctx.transact(save)
        self._now_in_context(new)
        after = request(shown.after(cut), new)
        self.compacted = Compaction(
            trigger="context_window_exceeded",
            context_window=window,
            tokens_before=estimate_tokens(built.messages, built.tools),
            tokens_after=estimate_tokens(after.messages, after.tools),
            messages_before=len(built.messages),
            messages_after=len(after.messages),
            summary=new.summary or "",
        )
        log.info("agent %s: %d messages left the context window", agent.id, cut)
        return after

    async def _summarize(
        self,
        llm: LlmClient,
        model: str,
        context: AgentContext,
        evicted: list[Message],
        budget: int,
    ) -> str:
        """The running summary with `evicted` folded in: by the model, or a recap of them
        if it fails."""
        try:
            asked = summary_request(model, context.summary, evicted, budget)
            summary = (await llm.complete(asked)).message.content or ""
        except LlmError as error:
            log.warning("agent %s: summarizing failed (%r); keeping a recap",
                        self.thread, error)  # fmt: skip
            summary = ""
        return (summary.strip() or recap(context.summary, evicted))[:SUMMARY_CHARS]

    def _now_in_context(self, context: AgentContext) -> None:
        """The context as stored: what left it leaves the actor's window too."""
        self.context = context
        if self._window is not None:
            self._window.drop_before(context.start_seq)

    async def _compact_now(self, message: dict[str, Any]) -> dict[str, Any]:
        """A compaction a client asked for (`{"kind": "compact", "request_id": ...}`, with
        `share` and `clip_chars` as context.plan_compaction and Letta's clip_chars take
        them): the oldest in-context messages are summarized as an overflow would have
        them, even when the prompt fits. Run by the actor, between turns.

        Answers `{"compaction": CompactionResponse}`, or `{"refused": {status, detail}}`
        when there is too little to compact, or `{"gone": why}` for a deleted agent. The
        new context is written in one fenced, shielded transaction, only if the stored
        context is still the one summarized (else nothing is written and the request is
        looked at again), and a request whose compaction already landed (a redelivery) is
        answered from the stored record: the summary is stored once, and the context's
        start moves only past messages the stored summary covers."""
        request_id = message["request_id"]
        thread = self.thread
        try:
            view, shown = await self._step_state()
        except NotFound as gone:
            return {"gone": str(gone)}
        context = self.context
        done = context.last_compaction
        if done is not None and done.request_id == request_id:
            return {"compaction": attrs.asdict(done, filter=_answer_field)}
        history = list(shown.messages)
        built = first_step_request(view, history, context)
        _, budget = window_budget(view.agent.llm_config or {})
        fixed = len(built.messages) - len(history)
        before = len(built.messages)
        if not history:  # nothing but the system prompt (and a summary): nothing to do
            answer = {"summary": context.summary or "", "num_messages_before": before,
                      "num_messages_after": before}  # fmt: skip
            return {"compaction": answer}
        cut = plan_compaction(
            estimate_tokens(built.messages[:fixed], built.tools),
            [estimate_tokens([m]) for m in built.messages[fixed:]],
            [m.role for m in history],
            budget,
            share=message.get("share", 1 - TARGET),
            keep_from=_unanswered_from(history),
        )
        if cut == 0:
            return {"refused": {"status": 400, "detail": (
                f"Nothing to compact: {thread} has {len(history)} message(s) in "
                "its context; the newest message, and a reply whose tool calls still "
                "wait for their results, always stay."
            )}}  # fmt: skip
        evicted = history[:cut]
        summary = await self._summarize(
            self.llm_for(view.agent), built.model, context, evicted, budget
        )
        summary = summary[: message.get("clip_chars") or SUMMARY_CHARS]
        answer = CompactionAnswer(
            request_id=request_id,
            summary=summary,
            num_messages_before=before,
            num_messages_after=before - cut + (0 if context.summary else 1),
        )
        new = attrs.evolve(
            context,
            start_seq=history[cut].seq,
            summary=summary,
            evicted=context.evicted + cut,
            last_compaction=answer,
        )

        async def save(tr: Transaction) -> bool:
            key = keys.CONTEXT.pack((thread,))
            raw = await tr.get(key)
            stored = AgentContext() if raw is None else convert.decode_record(raw, AgentContext)
            if stored != context:  # not the context summarized: write nothing
                return False
            tr.set(key, convert.encode_record(new))
            return True

        if not await self._checkpointed(save):
            # Only this actor writes the record, so its copy was stale: read both again
            # (if it is this request's compaction that landed, the look above answers).
            self._window = None
            return await self._compact_now(message)
        self._now_in_context(new)
        log.info("thread %s: %d messages compacted on request", thread, cut)
        return {"compaction": attrs.asdict(answer, filter=_answer_field)}


def _answer_field(attribute: attrs.Attribute, value: Any) -> bool:
    return attribute.name != "request_id"
