"""The transactions that write a run's progress (a mixin of AgentActor, actor.py).

Each writes the step's messages and the run's checkpoint together, fenced by the lease
and shielded from cancellation (`_checkpointed`): the model's reply with its calls pending,
one outside tool's result, the rest of a step with its memory tools, a pause ended, the
run finished. The actor's copy of the in-context window follows only what committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import orjson
import trio

from kelpie_trio.agent import runs, steps
from kelpie_trio.agent.approvals import results_at
from kelpie_trio.agent.context import AgentContext
from kelpie_trio.agent.history_window import HistoryWindow
from kelpie_trio.agent.messages import Message, StoredToolCall, iso
from kelpie_trio.agent.runs import PendingToolCall, Run
from kelpie_trio.agent.step import Interpretation, Judged, step_end
from kelpie_trio.agent.tool_rules import ToolRule, TurnState
from kelpie_trio.models import convert
from kelpie_trio.search import outbox
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.errors import StorageUnavailable

__all__ = ["CHECKPOINT_DEADLINE", "TOOL_RETURN_LIMIT", "RunCommits", "RunGone"]

TOOL_RETURN_LIMIT = 50_000  # characters of a tool's return kept (Letta's default)
CHECKPOINT_DEADLINE = 30.0  # seconds a checkpoint may take before the turn gives up
MAX_PAUSE_MINUTES = 24 * 60


class RunGone(Exception):
    """The run's record is gone (its agent was deleted): the turn stops, nothing stored."""


class RunCommits:
    ctx: Any
    thread: str
    agent_id: str
    conversation_id: str | None
    service: Any
    next_seq: int
    context: AgentContext
    _window: HistoryWindow | None
    _staged: list[Message]
    _may_have_open_runs: bool
    _cleared_to: int | None

    async def _checkpointed(self, fn: Callable[[Transaction], Awaitable[Any]]) -> Any:
        """A fenced transaction that writes the run's checkpoint: shielded, so a cancel
        (a client leaving, a node stopping) never cuts it in half, with a deadline of
        its own, so a store that hangs cannot hold the turn forever."""

        attempts = 0

        async def attempt(tr: Transaction) -> Any:
            nonlocal attempts
            attempts += 1
            self._staged = []  # a retried attempt stores again
            return await fn(tr)

        with trio.CancelScope(shield=True, deadline=trio.current_time() + CHECKPOINT_DEADLINE):
            result = await self.ctx.transact(attempt)
            if attempts > 1:
                # An earlier attempt may be the one that landed (a commit of unknown result,
                # found by its marker) and its result the one returned, while `_staged` holds
                # what the last attempt stored: the window is read again, not patched.
                self._window = None
            if self._window is not None:
                for m in self._staged:
                    if m.thread == self.thread:
                        self._window[m.seq] = m
            self._staged = []
            return result
        self._window = None  # the transaction may or may not have landed: read it again
        raise StorageUnavailable(f"a checkpoint did not commit within {CHECKPOINT_DEADLINE:g} s")

    def _tool_message(
        self, run: Run, assistant: Message, index: int, call: StoredToolCall, status: str,
        text: str,
    ) -> Message:  # fmt: skip
        # A custom tool's prints, if it ran (tool_calls.py); None for the others, as Letta.
        stdout, stderr = self._tool_outputs().pop(call.id, (None, None))
        return Message(
            id=self.ctx.env.new_id("message"),
            agent_id=self.agent_id,
            conversation_id=self.conversation_id,
            seq=results_at(assistant) + index,
            created_at=self.ctx.env.now(),
            role="tool",
            content=text[:TOOL_RETURN_LIMIT],
            tool_call_id=call.id,
            tool_name=call.name,
            tool_status=status,
            run_id=run.id,
            step=assistant.step,
            tool_stdout=stdout,
            tool_stderr=stderr,
        )

    async def _load_current(self, tr: Transaction, run: Run) -> Run:
        # Each commit of a step stores messages on the thread's stream: its head is read
        # in the run's snapshot.
        outbox.prefetch_head(tr, outbox.stream_of(self.agent_id, self.thread))
        current = await runs.load_run(tr, run.id)  # a cancel or transfer written meanwhile
        if current is None or current.thread != self.thread:  # conflicts this one
            raise RunGone(run.id)
        return current

    async def _commit_reply(
        self, tr: Transaction, *, run: Run, assistant: Message, usage: tuple[int, int]
    ) -> Run:
        """The model's reply, with its calls pending (their tools run outside the store)."""
        current = await self._load_current(tr, run)
        await self._store(tr, [assistant])
        current.checkpoint.pending_seq = assistant.seq
        current.checkpoint.pending_tool_calls = [
            PendingToolCall(id=c.id, name=c.name, arguments=c.arguments)
            for c in assistant.tool_calls
        ]
        current.prompt_tokens, current.completion_tokens = usage
        runs.save_run(tr, current)
        return current

    async def _commit_result(self, tr: Transaction, *, run: Run, result: Message) -> Run:
        """One outside tool's result, no longer pending."""
        current = await self._load_current(tr, run)
        await self._store(tr, [result])
        checkpoint = current.checkpoint
        checkpoint.pending_tool_calls = [
            c for c in checkpoint.pending_tool_calls if c.id != result.tool_call_id
        ]
        runs.save_run(tr, current)
        return current

    async def _commit_step(
        self,
        tr: Transaction,
        *,
        run: Run,
        judged: Judged,
        done: list[Message],
        reply_stored: bool,
        step: int,
        usage: tuple[int, int],
        view: Any,
        rules: tuple[ToolRule, ...],
        turn: TurnState,
        timing: steps.StepTiming | None = None,
    ) -> tuple[Run, list[Message], str | None]:
        """The rest of the step in one transaction: its memory tools and their results
        (and its reply, unless stored already), and the checkpoint of the iteration."""
        steps.prefetch_step(tr, run.id, step)
        current = await self._load_current(tr, run)
        self._cleared_to = None  # this attempt decides again
        interpretation = judged.interpretation
        assistant = interpretation.assistant
        ready = {m.tool_call_id: m for m in done}
        new = [] if reply_stored else [assistant]
        results = []
        memory_tools = 0.0  # seconds, added to the step's tool time
        for index, (call, args) in enumerate(interpretation.calls):
            if call.id in ready:
                results.append(ready[call.id])
                continue
            if call.id in judged.given:  # a client-side tool's return, as the client sent it
                status, text = judged.given[call.id]
            elif call.id in judged.refusals:  # not run: the model is told why
                status, text = "error", judged.refusals[call.id]
            else:
                began = self.ctx.env.monotonic()
                status, text = await self._run_memory_tool(tr, call, args)
                memory_tools += self.ctx.env.monotonic() - began
            result = self._tool_message(current, assistant, index, call, status, text)
            results.append(result)
            new.append(result)
        outcome, after = step_end(
            judged,
            results,
            rules=rules,
            tools=view.tools,
            state=turn,
            agent_type=view.agent.agent_type,
            final_step=step >= current.max_steps,
        )
        if outcome.heartbeat is not None:  # the model is told why the turn goes on
            new.append(self._note(current, assistant, outcome.heartbeat))
        await self._store(tr, new)
        goes_on = outcome.goes_on
        checkpoint = current.checkpoint
        pause = _pause_minutes(interpretation, results)
        if pause is not None:  # the session sleeps; its next step comes at pause_until
            self._may_have_open_runs = True
            checkpoint.is_paused = True
            checkpoint.pause_until = self.ctx.env.now() + pause * 60
            goes_on = True
        stop = None
        if current.cancel_requested:  # what the canceller was told, even on a last step
            stop = "cancelled"
        elif not goes_on:
            stop = outcome.stop_reason or "end_turn"
        elif step >= current.max_steps:
            stop = "max_steps"
        checkpoint.iteration = step
        checkpoint.pending_seq = None
        checkpoint.pending_tool_calls = []
        checkpoint.answers = []
        checkpoint.tools_called = list(after.called)
        checkpoint.last_tool_result = after.last_result
        current.prompt_tokens, current.completion_tokens = usage
        if stop is None:
            runs.save_run(tr, current)
        else:
            runs.finish_run(tr, current, stop, self.ctx.env.now())
            if view.agent.message_buffer_autoclear:
                self._clear_context(tr, max(m.seq for m in [assistant, *new, *results]) + 1)
        # The iteration's Step record, in this same transaction (agent/steps.py).
        produced = [assistant, *results, *new]
        if timing is not None:  # a copy: a retried attempt adds its memory tools afresh
            timing = attrs.evolve(timing, tool_seconds=timing.tool_seconds + memory_tools)
        await steps.record_step(
            tr, self.ctx.env, run=current, agent=view.agent, step=step, usage=usage,
            messages=produced, stop=stop, timing=timing,
        )  # fmt: skip
        return current, new, stop

    def _note(self, run: Run, assistant: Message, reason: str) -> Message:
        """A heartbeat note after a step without calls (Letta's shape: a user-role JSON)."""
        body = {"type": "heartbeat", "reason": reason, "time": iso(self.ctx.env.now())}
        return Message(
            id=self.ctx.env.new_id("message"),
            agent_id=self.agent_id,
            conversation_id=self.conversation_id,
            seq=assistant.seq + 1,
            created_at=self.ctx.env.now(),
            role="user",
            content=orjson.dumps(body).decode(),
            run_id=run.id,
            step=assistant.step,
        )

    async def _unpause(self, run: Run) -> Run:
        async def wake(tr: Transaction) -> Run:
            current = await self._load_current(tr, run)
            current.checkpoint.is_paused = False
            current.checkpoint.pause_until = None
            runs.save_run(tr, current)
            return current

        return await self._checkpointed(wake)

    async def _finish(self, run: Run, stop: str) -> Run:
        now = self.ctx.env.now()
        error = run.error

        async def finish(tr: Transaction) -> Run:
            current = await runs.load_run(tr, run.id)
            if current is None:
                raise RunGone(run.id)
            current.error = error
            # A cancel acknowledged meanwhile is what the run ends as.
            runs.finish_run(tr, current, "cancelled" if current.cancel_requested else stop, now)
            self._cleared_to = None
            agent = await self.service.view_in(tr, self.agent_id)
            if agent.agent.message_buffer_autoclear:
                self._clear_context(tr, self.next_seq)
            return current

        run = await self._checkpointed(finish)
        self._apply_clear()
        return run

    def _clear_context(self, tr: Transaction, start_seq: int) -> None:
        """message_buffer_autoclear (workflow agents): a finished turn leaves the context
        empty, so the next turn sees only its own messages; the history stays stored."""
        cleared = AgentContext(start_seq=start_seq)
        tr.set(keys.CONTEXT.pack((self.thread,)), convert.encode_record(cleared))
        self._cleared_to = start_seq

    def _apply_clear(self) -> None:
        """After the transaction that cleared the context committed: the actor's copy too."""
        if self._cleared_to is None:
            return
        self.context = AgentContext(start_seq=self._cleared_to)
        if self._window is not None:
            self._window.drop_before(self._cleared_to)
        self._cleared_to = None


def _pause_minutes(interpretation: Interpretation, results: list[Message]) -> float | None:
    """Minutes a successful pause_heartbeats call asked for (clamped), else None."""
    ok = {r.tool_call_id for r in results if r.tool_status == "success"}
    for call, args in interpretation.calls:
        if call.name == "pause_heartbeats" and call.id in ok and args is not None:
            minutes = args.get("minutes", 0)
            if isinstance(minutes, int | float) and not isinstance(minutes, bool):
                return float(min(max(minutes, 0), MAX_PAUSE_MINUTES))
            return 0.0
    return None
