"""Parked runs: tool calls that wait for the client (a mixin of AgentActor, actor.py).

A step whose calls include one that needs the client (a tool that requires approval, or a
client-side tool of the request) runs none of them: one fenced transaction stores the reply,
each call marked with what it waits for, and parks the run (its checkpoint holds the calls,
`awaiting_approval`). The turn stops with stop reason `requires_approval`, and the run
shows as completed, as Letta shows it; it survives crashes, restarts and transfers because
it is only stored state.

The client answers with a message of type `approval`: a new run whose start transaction
checks the answers against the parked calls (`match_answers`), stores them (Letta's
approval_response_message, right after the reply), takes the parked step over into its own
checkpoint with the answers recorded per call, and ends the parked run, all at once. So a
parked run is answered exactly once, and nothing runs without a recorded answer: the new
run then goes on through the pending-step path (approved calls run, denied ones give the
model the denial as an error, a client's return is the result). A new user message while a
run is parked is refused (409, Letta's PENDING_APPROVAL); a cancel denies the calls.

Places: a parked reply at seq `a` keeps `a + 1` for the answer and `a + 2 + i` for the
result of its call `i`, so the history reads as in Letta: request, answer, results.
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.agent import runs
from kelpie_trio.agent.history import history_key, read_history
from kelpie_trio.agent.messages import Message
from kelpie_trio.agent.runs import Answer, PendingToolCall, Run
from kelpie_trio.agent.step import Judged, denial
from kelpie_trio.errors import PendingApproval, ServiceError
from kelpie_trio.models import convert
from kelpie_trio.storage.base import Transaction
from kelpie_trio.storage.chunks import get_blob

__all__ = [
    "CANCEL_REASON",
    "ParkedRuns",
    "find_parked",
    "match_answers",
    "open_runs_of",
    "results_at",
]

CANCEL_REASON = "The run was cancelled while the call waited, so it was not run."


def results_at(assistant: Message, waiting: bool = False) -> int:
    """Where the result of the reply's first call goes: right after it, or after the
    client's answer when some call waited for one."""
    waited = waiting or any(c.waits_for is not None for c in assistant.tool_calls)
    return assistant.seq + (2 if waited else 1)


def no_pending(extra: str = "") -> ServiceError:
    return ServiceError(
        "Cannot process approval response: No tool call is currently awaiting approval. "
        f"Send a regular message to talk to the agent.{extra}"
    )


def match_answers(
    calls: list[PendingToolCall], answers: list[Answer], request_id: str
) -> dict[str, Answer]:
    """The client's answers by call id, when they answer exactly the calls that wait; a 400
    (changing nothing) otherwise. Letta's legacy answer names the approval request's message
    id instead of the call's, when one call waits."""
    waiting = {c.id: c for c in calls if c.waits_for is not None}
    if not answers:
        raise ServiceError(
            "Invalid approval response: it holds no approvals; answer each pending tool call."
        )
    if len(waiting) == 1 and [a.tool_call_id for a in answers] == [request_id]:
        answers = [attrs.evolve(answers[0], tool_call_id=next(iter(waiting)))]
    ids = [a.tool_call_id for a in answers]
    if len(set(ids)) != len(ids) or set(ids) != set(waiting):
        raise ServiceError(
            f"Invalid tool call IDs. Expected {sorted(waiting)}, but received {ids}: "
            "answer each pending tool call once."
        )
    for a in answers:
        call = waiting[a.tool_call_id]
        if call.waits_for == "client" and a.kind == "approval" and a.approve:
            raise ServiceError(
                f"Tool call {call.id} is to the client-side tool {call.name!r}, which this "
                "server cannot run: send its return (an approval of type 'tool'), or deny it."
            )
    return {a.tool_call_id: a for a in answers}


async def open_runs_of(tr: Transaction, thread: str) -> list[Run]:
    """The thread's open runs, loaded."""
    found = [await runs.load_run(tr, run_id) for run_id in await runs.open_runs(tr, thread)]
    return [run for run in found if run is not None]


async def find_parked(
    tr: Transaction, thread: str, open_runs: list[Run] | None = None
) -> Run | None:
    """The thread's run that waits for the client, if any (at most one: nothing else starts
    while one waits); `open_runs` when the caller has them loaded already."""
    if open_runs is None:
        open_runs = await open_runs_of(tr, thread)
    return next((run for run in open_runs if run.parked), None)


async def stored_message(tr: Transaction, thread: str, seq: int | None) -> Message | None:
    if seq is None:
        return None
    raw = await get_blob(tr, history_key(thread, seq))
    return None if raw is None else convert.decode_record(raw, Message)


async def _answered_by(tr: Transaction, thread: str, answers: list[Answer]) -> str:
    """For a refused answer: which run answered these calls already, if one recently did."""
    ids = {a.tool_call_id for a in answers}
    for m in reversed(await read_history(tr, thread, limit=20)):
        if m.role == "approval" and ids & {a.tool_call_id for a in m.approvals or []}:
            return f" These tool calls were answered already, by run {m.run_id}."
    return ""


async def check_send(
    tr: Transaction, thread: str, inputs: list[Any], open_runs: list[Run] | None = None
) -> Run | None:
    """For a send about to start: the parked run an approval answers (a 400 when there is
    none), or a 409 for a new message while a run is parked (in this thread: the others
    of the agent go on)."""
    parked = await find_parked(tr, thread, open_runs)
    approval = bool(inputs) and inputs[0].answers is not None
    if approval and parked is None:
        raise no_pending(await _answered_by(tr, thread, inputs[0].answers))
    if not approval and parked is not None:
        request = await stored_message(tr, thread, parked.checkpoint.pending_seq)
        raise PendingApproval(request.id if request is not None else None)
    return parked


class ParkedRuns:
    # AgentActor's, and its RunCommits' (_store, _load_current, _tool_message, _checkpointed).
    ctx: Any
    thread: str
    agent_id: str
    conversation_id: str | None
    next_seq: int
    _may_have_open_runs: bool
    _store: Any
    _load_current: Any
    _tool_message: Any
    _checkpointed: Any

    async def _pending_reply(self, run: Run, produced: list[Message]) -> Message:
        """The stored reply whose calls the run's step has pending: the run's own, or, for
        a run that answered a parked one, that run's."""
        seq = run.checkpoint.pending_seq
        for m in produced:
            if m.seq == seq:
                return m
        window = getattr(self, "_window", None)
        if window is not None and seq in window:
            return window[seq]
        thread = self.thread

        async def read(tr: Transaction) -> Message | None:
            return await stored_message(tr, thread, seq)

        found = await self.ctx.transact(read)
        if found is None:  # the history was reset under the run
            raise ServiceError(f"the reply run {run.id} was answering is no longer stored")
        return found

    async def _commit_park(
        self, tr: Transaction, *, run: Run, judged: Judged, step: int, usage: tuple[int, int]
    ) -> tuple[Run, Message]:
        """The reply, each call marked with what it waits for, and the run parked."""
        current = await self._load_current(tr, run)
        assistant = judged.interpretation.assistant
        calls = [attrs.evolve(c, waits_for=judged.waiting.get(c.id)) for c in assistant.tool_calls]
        stored = attrs.evolve(assistant, tool_calls=calls)
        await self._store(tr, [stored])
        checkpoint = current.checkpoint
        checkpoint.pending_seq = stored.seq
        checkpoint.pending_tool_calls = [
            PendingToolCall(id=c.id, name=c.name, arguments=c.arguments, waits_for=c.waits_for)
            for c in calls
        ]
        checkpoint.awaiting_approval = True
        checkpoint.iteration = step
        current.prompt_tokens, current.completion_tokens = usage
        current.status = "completed"  # as Letta shows a run stopped for approval
        current.completed_at = self.ctx.env.now()
        runs.save_run(tr, current)
        self._may_have_open_runs = True
        return current, stored

    async def _take_over(self, tr: Transaction, run: Run, parked: Run) -> list[Message]:
        """In the transaction that starts `run` (an approval message): its answers checked
        against the parked calls and stored, the parked step moved into `run`'s checkpoint
        with the answers recorded per call, and the parked run ended (answered once)."""
        given = run.inputs[0]
        assert given.answers is not None
        waited = parked.checkpoint
        request = await stored_message(tr, self.thread, waited.pending_seq)
        if request is None or waited.pending_seq is None:
            raise no_pending(" (the history holding the request was reset)")
        answers = match_answers(waited.pending_tool_calls, given.answers, request.id)
        now = self.ctx.env.now()
        answer = Message(
            id=self.ctx.env.new_id("message"),
            agent_id=self.agent_id,
            conversation_id=self.conversation_id,
            seq=waited.pending_seq + 1,
            created_at=now,
            role="approval",
            otid=given.otid,
            run_id=run.id,
            step=request.step,
            approvals=list(answers.values()),
            approval_request_id=given.approval_request_id,
        )
        await self._store(tr, [answer])
        checkpoint = run.checkpoint
        checkpoint.pending_seq = waited.pending_seq
        checkpoint.pending_tool_calls = list(waited.pending_tool_calls)
        checkpoint.answers = list(answers.values())
        checkpoint.tools_called = list(waited.tools_called)
        checkpoint.last_tool_result = waited.last_tool_result
        run.first_seq = answer.seq
        run.status = "running"
        runs.save_run(tr, run)
        waited.awaiting_approval = False
        waited.answered_by = run.id
        runs.finish_run(tr, parked, "requires_approval", parked.completed_at or now)
        self.next_seq = max(self.next_seq, results_at(request) + len(request.tool_calls))
        return [answer]

    async def _deny_parked(self, run: Run) -> tuple[Run, list[Message]]:
        """A parked run cancelled: every call it holds is denied (the reason stored as the
        client's answer and as each call's error), and the run ends cancelled."""
        now = self.ctx.env.now()

        async def deny(tr: Transaction) -> tuple[Run, list[Message]]:
            current = await self._load_current(tr, run)
            if not current.parked:  # answered or ended meanwhile
                return current, []
            checkpoint = current.checkpoint
            request = await stored_message(tr, self.thread, checkpoint.pending_seq)
            new: list[Message] = []
            if request is not None:
                answers = [
                    Answer(tool_call_id=c.id, kind="approval", approve=False, reason=CANCEL_REASON)
                    for c in request.tool_calls
                    if c.waits_for is not None
                ]
                new.append(Message(id=self.ctx.env.new_id("message"),
                                   agent_id=self.agent_id,
                                   conversation_id=self.conversation_id, seq=request.seq + 1,
                                   created_at=now, role="approval", run_id=current.id,
                                   step=request.step, approvals=answers))  # fmt: skip
                for i, c in enumerate(request.tool_calls):
                    text = denial(c.name, CANCEL_REASON)
                    new.append(self._tool_message(current, request, i, c, "error", text))
            await self._store(tr, new)
            checkpoint.awaiting_approval = False
            runs.finish_run(tr, current, "cancelled", now)
            return current, new

        done, new = await self._checkpointed(deny)
        if new:
            self.next_seq = max(self.next_seq, max(m.seq for m in new) + 1)
        return done, new
