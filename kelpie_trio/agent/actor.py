"""AgentActor: the I/O shell around the agent step, one per active thread (nursery/actor.py).

A thread is an agent's default conversation (keyed by the agent id) or one of its other
conversations (keyed by the conversation id): agent/conversations.py. The actor runs
that thread's runs over that thread's history; the agent's memory is shared by all its
threads and edited in each step's transaction.

Every turn is a stored run (runs.py), and the actor runs runs: it stores the user's
messages, then step by step builds the request from the agent's memory and the
in-context history (step.py, context.py), awaits the LLM, runs the tools it calls,
and writes the step with the run's checkpoint in fenced transactions, until a stop
reason. A run found unfinished (a crash, a lost lease, a transfer) goes on from its
checkpoint; a finished one is only answered again (a retried send). The reply is
JSON (it may cross nodes): Letta's LettaResponse.

Exactly-once per step: memory edits land in the transaction that stores the step.
Tools outside the store (custom tools, archival memory, conversation search) run at
least once: a result stored before a crash is not run again, a call cut short is.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from kelpie_trio.agent import approvals, message_index, runs, sleeptime, steps
from kelpie_trio.agent.approvals import ParkedRuns, results_at
from kelpie_trio.agent.commits import RunCommits, RunGone
from kelpie_trio.agent.context import AgentContext, Compaction, compaction_messages
from kelpie_trio.agent.conversations import (
    is_conversation,
    load_conversation,
    mark_last_message,
)
from kelpie_trio.agent.handoff import SessionHandoff
from kelpie_trio.agent.history import decode_messages, history_key
from kelpie_trio.agent.history_window import HistoryWindow
from kelpie_trio.agent.messages import Message, iso, to_letta_messages
from kelpie_trio.agent.reply_stream import stream_reply
from kelpie_trio.agent.runs import Run
from kelpie_trio.agent.step import (
    Interpretation,
    interpret,
    judge_calls,
    parse_calls,
    skills_prompt,
    turn_offer,
    waiting_tools,
)
from kelpie_trio.agent.tool_calls import AgentTools
from kelpie_trio.agent.tool_rules import TurnState, rules_of
from kelpie_trio.agent.window import ContextWindow
from kelpie_trio.errors import Conflict, NotFound, PendingApproval, ServiceError
from kelpie_trio.llm.model_traits import hides_reasoning
from kelpie_trio.llm.types import LlmClient, LlmError, LlmResponse
from kelpie_trio.models import convert
from kelpie_trio.nursery.actor import ActorContext
from kelpie_trio.search import outbox
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

if TYPE_CHECKING:
    from kelpie_trio.models.agents import Agent
    from kelpie_trio.service import AgentService
    from kelpie_trio.tools.sandbox import ToolResult

__all__ = ["AgentActor", "LlmFactory", "history_key"]

log = logging.getLogger("kelpie_trio.agent")

LlmFactory = Callable[["Agent"], LlmClient]
# Runs one custom tool call (its record, the arguments) outside the server: the
# sandbox in production, a scripted runner in the simulator.
ToolRunner = Callable[[Any, dict[str, Any]], Awaitable["ToolResult"]]


class AgentActor(RunCommits, ContextWindow, SessionHandoff, AgentTools, ParkedRuns):
    def __init__(
        self,
        ctx: ActorContext,
        service: AgentService,
        llm_for: LlmFactory,
        run_tool: ToolRunner | None = None,
    ) -> None:
        self.ctx = ctx
        # The actor key is the thread; the agent is the thread's own for a default
        # conversation, read from the conversation's record for another (on_activate).
        self.thread: str = ctx.agent_id
        self.agent_id: str = ctx.agent_id
        self.conversation_id: str | None = None
        self.isolated: dict[str, str] = {}  # a conversation's own blocks: label -> block id
        self.service = service
        self.llm_for = llm_for
        self.run_tool = run_tool
        self.next_seq = 0
        self.context = AgentContext()
        # The in-context history, kept here: this actor is the only writer of its agent's
        # history, so it reads it once per activation and then adds what it commits.
        self._window: HistoryWindow | None = None
        self._block_ids: tuple[str, ...] = ()  # the agent's blocks at the last step's view
        self._staged: list[Message] = []  # stored by the transaction in progress
        # A paused or unfinished run of this agent may be open (after a crash, a pause, a
        # handoff): a new run looks once, and goes after them (_load_or_start).
        self._may_have_open_runs = True
        # The thread's count of runs moved in by transfers at the last look (None: none
        # yet), and the count the transaction in progress read.
        self._moved_in_seen: int | None = None
        self._moved_in_read: int | None = None
        self._cleared_to: int | None = None  # a finished turn cleared the context up to here
        self.compacted: Compaction | None = None  # set by _prompt when history is evicted
        # Compaction messages shown in a run's response (not stored: the summary lives in
        # the agent's context record), by run id, each with the place it shows at.
        self._compactions: dict[str, list[tuple[int, dict[str, Any]]]] = {}

    # -- lifecycle -----------------------------------------------------------

    async def on_activate(self) -> None:
        thread = self.thread

        async def last(tr: Transaction) -> tuple[int, Any]:
            conversation = None
            if is_conversation(thread):
                conversation = await load_conversation(tr, thread)
            prefix = keys.MESSAGES.pack((thread,))
            found = await tr.get_prefix(prefix, limit=1, reverse=True)
            return (keys.MESSAGES.unpack(found[0][0])[1] + 1 if found else 0), conversation

        self.next_seq, conversation = await self.ctx.transact(last)
        if is_conversation(thread):
            self.conversation_id = thread
            # A conversation deleted (or never made): every request is told it is gone.
            self.agent_id = conversation.agent_id if conversation is not None else ""
            self.isolated = dict(conversation.isolated_blocks) if conversation else {}

    async def on_deactivate(self) -> None:
        pass  # every step is stored as it completes

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        kind = message.get("kind")
        if not self.agent_id:
            return {"gone": f"conversation {self.thread} not found"}
        if kind in ("run", "send"):
            # "send" carries a new run, created here (or found by its idempotency key)
            # in the transaction that starts it; "run" names a stored one.
            wanted = convert.store.structure(message["run"], Run) if kind == "send" else None
            run_id = wanted.id if wanted is not None else message["run_id"]
            try:
                reply = await self._run(run_id, wanted)
                sleeptime.after_turn(self)  # its companion's turn, if due, in the background
                return reply
            except (RunGone, NotFound) as gone:
                # The agent was deleted, before or under the turn: its runs went with it.
                return {"gone": str(gone)}
            except Conflict as conflict:  # an idempotency key reused for another request
                if isinstance(conflict, PendingApproval):
                    return {"refused": {"status": 409, "detail": conflict.detail()}}
                return {"conflict": str(conflict)}
            except ServiceError as refused:  # an approval that answers nothing, a message
                # while a run waits for one: the caller is told as it would have been here
                return {"refused": {"status": refused.status, "detail": refused.detail()}}
        if kind == "handoff":
            return await self._handoff_request(message["run_id"])
        if kind == "reset":
            return await self._reset()
        if kind == "compact":
            return await self._compact_now(message)
        if kind == "tool":
            return await self._run_tool_directly(
                message["tool_name"], message["args"], message["call_id"]
            )
        raise ValueError(f"unknown request kind {kind!r}")

    async def _reset(self) -> dict[str, Any]:
        """Forget the history (not the memory): in the actor, so no turn runs meanwhile.
        Sequence numbers go on from where they were, so no message id is ever reused."""
        thread = self.thread

        async def clear(tr: Transaction) -> None:
            parked = await approvals.find_parked(tr, thread)
            if parked is not None:  # its request goes with the history: nothing to answer
                parked.checkpoint.awaiting_approval = False
                runs.finish_run(tr, parked, "requires_approval", self.ctx.env.now())
            await message_index.clear_history(tr, thread)
            tr.clear(keys.CONTEXT.pack((thread,)))  # the summary was of that history
            await outbox.record(tr, outbox.stream_of(self.agent_id, thread), resync=True)

        await self.ctx.transact(clear)
        self._window = None
        return {"reset": True}

    # -- a turn --------------------------------------------------------------

    async def _store(self, tr: Transaction, messages: list[Message]) -> None:
        message_index.write_messages(tr, messages)
        # On the thread's own stream: the agent's other threads write theirs concurrently.
        await outbox.record_messages(tr, self.agent_id, [(m.thread, m.seq) for m in messages])
        self._staged += messages  # into the window once the transaction commits

    async def _run(
        self, run_id: str, wanted: Run | None = None, *, after_earlier: bool = False
    ) -> dict[str, Any]:
        """Run a run to its end: start it, resume it after its checkpoint, or, when it
        has already ended (a retried send), only answer with it. A new run is created
        or loaded, and started (its input stored), in one transaction."""
        thread = self.thread
        try:
            run, inputs, earlier = await self._checkpointed(
                functools.partial(self._load_or_start, run_id, wanted, after_earlier)
            )
        except ServiceError as refused:
            if wanted is None and not isinstance(refused, NotFound):
                # A stored run the service started, refused here: it ends, refused.
                await self._refuse_run(run_id, str(refused))
            raise
        if run is None:
            raise RunGone(run_id)
        run_id = run.id  # a retried send gets the run its key started
        if earlier:
            # Runs of this agent that a crash left unfinished come first, so each run's
            # messages stay together and none takes the places of another's pending
            # results; then this one starts.
            for other in earlier:
                await self._run(other)
            # Created above; started now, even if one of them is still open (paused).
            return await self._run(run_id, after_earlier=True)
        if inputs:
            if inputs[0].role != "approval":  # the look above found them all, and ended them
                self._may_have_open_runs = False
                self._moved_in_seen = self._moved_in_read
            self.next_seq = max(self.next_seq, inputs[-1].seq + 1)
            for m in inputs:
                self._publish(run, m)
            return await self._guarded(run, inputs)
        if run.thread != thread:
            # Transferred: the caller follows it there.
            return {"handoff": run.thread, "run_id": run.id}
        if run.finished:
            return self._response(run, await self._run_messages(run))
        recovered = False
        if run.history_agent is not None:
            run = await self._adopt(run)
            if run.first_seq is None:  # moved before it started: start it here
                return await self._run(run_id)
        elif not (run.checkpoint.is_paused or run.parked):
            # Started, unfinished, and no one was running it: whoever did stopped short
            # (a crash, a lost lease, a failed handler). A pause ending, an answer to a
            # parked run or a session just taken over are no recovery.
            self.ctx.note("recovery", run_id=run_id, iteration=run.checkpoint.iteration)
            recovered = True
        log.info("thread %s: resuming %s after iteration %d", thread, run_id,
                 run.checkpoint.iteration)  # fmt: skip
        return await self._guarded(run, await self._run_messages(run), recovered=recovered)

    async def _guarded(
        self, run: Run, produced: list[Message], *, recovered: bool = False
    ) -> dict[str, Any]:
        """The run's steps; if they stop short (an error), the run stays open for a
        resume, and the next new run of this agent looks for it first."""
        try:
            return await self._iterate(run, produced, recovered=recovered)
        except BaseException:
            self._may_have_open_runs = True
            self.service.look_for_open_runs()  # this node's resume sweep looks soon
            raise

    async def _load_or_start(
        self, run_id: str, wanted: Run | None, after_earlier: bool, tr: Transaction
    ) -> tuple[Run | None, list[Message], list[str]]:
        """The run (created first, for a new send); and if it is this agent's and not
        started yet, its input stored, unless earlier runs of this agent are unfinished:
        then nothing is started and their ids come back, to be run first."""
        if wanted is not None:
            # Read below once the run is found startable: in the run's reads' snapshot.
            runs.prefetch_moved_in(tr, self.thread)
            outbox.prefetch_head(tr, outbox.stream_of(self.agent_id, self.thread))
            run: Run | None = await runs.create_or_find(tr, wanted)
        else:
            run = await runs.load_run(tr, run_id)
        startable = (
            run is not None
            and run.thread == self.thread
            and run.first_seq is None
            and run.history_agent is None
            and not run.finished
        )
        if not startable:
            return run, [], []
        assert run is not None
        now = self.ctx.env.now()
        # Only this actor starts, parks and pauses runs here (the service's queued ones start
        # through it), and a transfer moving one in counts itself: after a look that found
        # none open, no look until that count moves. (The look's range read walks the
        # tombstones of every run finished here in the last ~15 s: a hot agent's growth.)
        self._moved_in_read = await runs.moved_in(tr, run.thread)
        look = self._may_have_open_runs or self._moved_in_read != self._moved_in_seen
        others = await approvals.open_runs_of(tr, run.thread) if look else []
        parked = await approvals.check_send(tr, run.thread, run.inputs, others)
        if parked is not None:  # an approval: it answers the parked run's calls
            await mark_last_message(tr, run.thread, now)
            return run, await self._take_over(tr, run, parked), []
        base = self.next_seq  # not advanced until the transaction commits
        inputs = [
            Message(id=self.ctx.env.new_id("message"), agent_id=run.agent_id,
                    conversation_id=run.conversation_id, seq=base + i, created_at=now,
                    role=given.role, content=given.text, otid=given.otid, run_id=run.id,
                    parts=given.parts)
            for i, given in enumerate(run.inputs)
        ]  # fmt: skip
        # A new message ends a paused session of this agent: it is answered now. Only
        # this actor pauses its sessions and runs its runs, so after one look it knows
        # whether to look again.
        if look:
            earlier = []
            for other in others:
                if other.id == run.id or other.finished or other.thread != run.thread:
                    continue
                if other.checkpoint.is_paused:
                    runs.finish_run(tr, other, "end_turn", now)
                elif other.first_seq is not None or other.history_agent is not None:
                    earlier.append(other.id)  # started (or handed over), not finished
            if earlier and not after_earlier:
                return run, [], earlier  # created (or found), started after them
        await self._store(tr, inputs)
        await mark_last_message(tr, run.thread, now)
        run.first_seq = base
        run.status = "running"
        runs.save_run(tr, run)
        return run, inputs, []

    async def _iterate(
        self, run: Run, produced: list[Message], *, recovered: bool = False
    ) -> dict[str, Any]:
        """Steps from the one after the checkpoint until a stop reason.

        A step whose tools all run in the store (memory tools, send_message) lands in
        one fenced transaction with its checkpoint. A step that calls tools outside the
        store (custom tools, archival memory, conversation search) checkpoints the
        model's reply with those calls pending first, then each result as it comes,
        then the rest: after a crash the step goes on from there, without asking the
        model again, and a call whose result was stored is not run again. A call cut
        short before its result was stored runs again (at least once).

        `recovered`: whoever ran the run before stopped short, maybe while the model was
        writing a reply whose start a stream showed. The first reply asked here shows
        no token deltas and is stored as not streamed, so a stream gives it whole, never
        as the rest of the lost one (service/run_positions.py).
        """
        agent_id = self.agent_id
        events = self.service.run_events
        produced = list(produced)
        stop: str | None = None
        llm: LlmClient | None = None
        step = run.checkpoint.iteration + 1
        while step <= run.max_steps:
            if run.transfer_to is not None:
                return await self._hand_off(run)
            if run.parked:  # waits for the client: answered by the run its answer starts
                if not run.cancel_requested:
                    return self._response(run, produced, stop="requires_approval")
                run, denied = await self._deny_parked(run)
                produced += denied
                for m in denied:
                    self._publish(run, m)
                break
            if run.cancel_requested:
                stop = "cancelled"
                break
            if run.checkpoint.is_paused:
                if (run.checkpoint.pause_until or 0) > self.ctx.env.now():
                    return self._response(run, produced, stop="end_turn")
                run = await self._unpause(run)
            env = self.ctx.env  # the step's timing (agent/steps.py), from the injected clock
            timing = steps.StepTiming(started_at=env.now(), started_mono=env.monotonic())
            try:
                view, history = await self._step_state()
            except NotFound:
                raise RunGone(run.id) from None
            if run.client_skills:  # listed for this request only, never stored
                skills = skills_prompt(run.client_skills)
                agent = attrs.evolve(view.agent, system=f"{view.agent.system.rstrip()}\n\n{skills}")
                view = attrs.evolve(view, agent=agent)
            if run.override_model is not None:  # this run's model, not the agent's
                agent = attrs.evolve(view.agent, model=run.override_model,
                                     llm_config=run.override_llm_config or {})  # fmt: skip
                view = attrs.evolve(view, agent=agent)
            # The tool rules decide from the turn as of the last completed step (kept in the
            # checkpoint), so a step resumed after a crash is judged as it was the first time.
            rules = rules_of(view.agent.tool_rules)
            turn = TurnState(tuple(run.checkpoint.tools_called), run.checkpoint.last_tool_result)
            offer = turn_offer(rules, view.tools, turn, view.agent.agent_type)
            pending = run.checkpoint.pending_seq
            if pending is not None:  # the step's reply is stored; its tools were cut short
                assistant = await self._pending_reply(run, produced)
                calls, heartbeat = parse_calls(assistant.tool_calls)
                interpretation = Interpretation(assistant, calls, heartbeat)
                usage = (run.prompt_tokens, run.completion_tokens)
            else:
                llm = llm or self.llm_for(view.agent)
                message_id = self.ctx.env.new_id("message")
                reply, streamed = None, False
                try:
                    with events.in_flight(run.id):
                        llm_request = await self._prompt(
                            llm, view, history, rules, offer, run.client_tools
                        )
                        self._note_compaction(run)
                        waits = waiting_tools(offer, view.tools, run.client_tools)
                        timing.llm_started_at, began = env.now(), env.monotonic()
                        reply, streamed = await self._complete(
                            llm, llm_request, run, message_id, view, waits, tokens=not recovered
                        )
                        recovered = False
                        timing.llm_seconds = env.monotonic() - began
                except LlmError as error:
                    log.warning("agent %s: the LLM failed: %r", agent_id, error)
                    run.error = f"{type(error).__name__}: {error}"
                    stop = "llm_api_error"
                    break
                if reply is None:  # cancelled while the LLM was writing
                    stop = "cancelled"
                    break
                interpretation = interpret(
                    reply,
                    message_id=message_id,
                    agent_id=agent_id,
                    seq=self.next_seq,
                    step=step,
                    created_at=self.ctx.env.now(),
                    run_id=run.id,
                )
                interpretation.assistant.conversation_id = self.conversation_id
                interpretation.assistant.streamed = streamed
                interpretation.assistant.reasoning_hidden = hides_reasoning(
                    view.agent.llm_config or {}
                )
                usage = (run.prompt_tokens + reply.usage.prompt_tokens,
                         run.completion_tokens + reply.usage.completion_tokens)  # fmt: skip
            answers = {a.tool_call_id: a for a in run.checkpoint.answers}
            judged = judge_calls(
                interpretation, rules=rules, offer=offer, state=turn, tools=view.tools,
                client_tools=run.client_tools, answers=answers, resumed=pending is not None,
            )  # fmt: skip
            interpretation = judged.interpretation
            assistant = interpretation.assistant
            # The step's messages take fixed places: its reply, then one per call (after
            # the client's answer, when a call waits for one), or the one note of a tool
            # rule that keeps a turn without calls going.
            first = results_at(assistant, waiting=bool(judged.waiting))
            self.next_seq = max(self.next_seq, first + len(interpretation.calls))
            if judged.waiting:  # none of the step's calls runs before the client answers
                run, request = await self._checkpointed(
                    functools.partial(self._commit_park, run=run, judged=judged, step=step,
                                      usage=usage)
                )  # fmt: skip
                produced.append(request)
                self._publish(run, request)
                continue  # parked: the top of the loop answers (or denies, if cancelled)
            settled = judged.refusals.keys() | judged.given.keys()
            outside = self._outside_calls(
                [(c, a) for c, a in interpretation.calls if c.id not in settled], view.tools
            )
            if outside and pending is None:
                run = await self._checkpointed(
                    functools.partial(self._commit_reply, run=run, assistant=assistant,
                                      usage=usage)
                )  # fmt: skip
                produced.append(assistant)
                self._publish(run, assistant)
            stored = {
                m.tool_call_id for m in produced if m.role == "tool" and m.seq > assistant.seq
            }
            for index, (call, args) in enumerate(interpretation.calls):
                if call.id in outside and call.id not in stored:
                    began = env.monotonic()
                    status, text = await self._run_outside_tool(call, args, view.tools, run)
                    timing.tool_seconds += env.monotonic() - began
                    result = self._tool_message(run, assistant, index, call, status, text)
                    run = await self._checkpointed(
                        functools.partial(self._commit_result, run=run, result=result)
                    )
                    produced.append(result)
                    self._publish(run, result)
            step_results = [
                m for m in produced if m.role == "tool" and m.seq > assistant.seq
            ]  # the outside ones, stored already
            run, new, stop = await self._checkpointed(
                functools.partial(
                    self._commit_step,
                    run=run,
                    judged=judged,
                    done=step_results,
                    reply_stored=bool(outside) or pending is not None,
                    step=step,
                    usage=usage,
                    view=view,
                    rules=rules,
                    turn=turn,
                    timing=timing,
                )
            )
            self._apply_clear()
            produced += new
            if new:  # a heartbeat note takes the place after a reply without calls
                self.next_seq = max(self.next_seq, max(m.seq for m in new) + 1)
            for m in new:
                self._publish(run, m)
            if stop is not None:
                break
            step += 1
        if not run.finished:
            run = await self._finish(run, stop or "max_steps")
        return self._response(run, produced)

    async def _complete(
        self,
        llm: LlmClient,
        request: Any,
        run: Run,
        message_id: str,
        view: Any,
        waits: frozenset[str] = frozenset(),
        *,
        tokens: bool = True,
    ) -> tuple[LlmResponse, bool]:
        """The LLM's reply, and whether its token deltas were published (streamed when
        `tokens` allows it and a stream wants them)."""
        events = self.service.run_events
        if not (tokens and events.wants_tokens(run.id)):
            return await llm.complete(request), False
        base = {"id": message_id, "date": iso(self.ctx.env.now()), "otid": None,
                "run_id": run.id, "seq_id": self.next_seq}  # fmt: skip
        response = await stream_reply(llm, request, run, view.agent, waits, base, events)
        return response, True

    def _note_compaction(self, run: Run) -> None:
        """Show the step's compaction, when the run asked for it (as it happens, on a stream;
        in the run's response, before the step's reply)."""
        compaction, self.compacted = self.compacted, None
        if compaction is None or not run.include_compaction_messages:
            return
        env = self.ctx.env
        shown = compaction_messages(
            compaction, ids=(env.new_id("message"), env.new_id("message")), at=env.now(),
            run_id=run.id, seq=self.next_seq,
        )  # fmt: skip
        for event in shown:
            self._compactions.setdefault(run.id, []).append((self.next_seq, event))
            self.service.run_events.publish(run.id, event)

    def _publish(self, run: Run, message: Message) -> None:
        events = self.service.run_events
        if not events.watched(run.id):
            return
        for shown in to_letta_messages(message, **run.render_options()):
            events.publish(run.id, shown)

    def _response(
        self, run: Run, produced: list[Message], stop: str | None = None
    ) -> dict[str, Any]:
        """Letta's LettaResponse; `stop` for a session that pauses (still open)."""
        placed = [
            (m.seq, 1, letta)
            for m in produced
            for letta in to_letta_messages(m, **run.render_options())
        ]
        placed += [(seq, 0, event) for seq, event in self._compactions.pop(run.id, [])]
        shown = [letta for _, _, letta in sorted(placed, key=lambda p: (p[0], p[1]))]
        return {
            "messages": shown,
            "stop_reason": {
                "message_type": "stop_reason",
                "stop_reason": stop or run.checkpoint.stop_reason,
            },
            "usage": run.usage(),
        }

    async def _run_messages(self, run: Run) -> list[Message]:
        """The messages a run stored (its input first), for a resumed or retried run."""
        if run.first_seq is None:
            return []
        thread = self.thread

        async def read(tr: Transaction) -> list[Message]:
            begin = keys.MESSAGES.pack((thread, run.first_seq))
            end = keys.prefix_range(keys.MESSAGES.pack((thread,)))[1]
            return decode_messages(await tr.get_range(begin, end))

        return [m for m in await self.ctx.transact(read) if m.run_id == run.id]

    async def _refuse_run(self, run_id: str, why: str) -> None:
        """A stored run whose start was refused (it answered nothing, or came while a run
        waited): it ends with stop reason `error`, so nothing resumes it later."""

        async def end(tr: Transaction) -> None:
            run = await runs.load_run(tr, run_id)
            if run is not None and not run.finished and run.first_seq is None:
                run.error = why
                runs.finish_run(tr, run, "error", self.ctx.env.now())

        await self._checkpointed(end)
