"""Messages and runs: send to an agent (through the dispatcher, to its one activation) and
wait, stream or start a run; list the history; read, list and cancel runs."""

from __future__ import annotations

import functools
import heapq
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import attrs
import trio

from kelpie_trio.agent import approvals as parked_runs
from kelpie_trio.agent import runs
from kelpie_trio.agent.conversations import (
    Conversation,
    agent_threads,
    is_conversation,
    require_conversation,
)
from kelpie_trio.agent.events import RunEvents
from kelpie_trio.agent.history import read_history
from kelpie_trio.agent.messages import iso, to_letta_messages
from kelpie_trio.agent.runs import Run, SessionCheckpoint
from kelpie_trio.errors import (
    Conflict,
    NotFound,
    Relayed,
    ServiceError,
    Unavailable,
    refused_by_store,
)
from kelpie_trio.models import convert
from kelpie_trio.nursery.errors import ActorFailed, RuntimeFailure
from kelpie_trio.service import approvals, send_options
from kelpie_trio.service.common import MAX_PAGE, Page
from kelpie_trio.service.content import check_model_takes
from kelpie_trio.service.resume import ResumeSweep
from kelpie_trio.service.runs import RunCases
from kelpie_trio.service.send_request import (
    CancelRequest,
    SendRequest,
    ToolRunRequest,
    parse_send,
)
from kelpie_trio.service.sessions import SessionCases, TransferRequest
from kelpie_trio.storage import StoreError
from kelpie_trio.storage.base import Transaction

if TYPE_CHECKING:
    from kelpie_trio.nursery.dispatcher import Dispatcher

__all__ = ["MessageCases", "TransferRequest"]

log = logging.getLogger("kelpie_trio.service")

MAX_HANDOFFS = 8  # transfers a waiting caller follows before it is told to ask again


@attrs.define
class _Outcome:
    reply: dict[str, Any] | None = None
    error: BaseException | None = None


class MessageCases(RunCases, SessionCases, ResumeSweep):
    dispatcher: Dispatcher | None = None
    # Where turns that outlive their request run (streams, async runs, resumed runs):
    # the node's nursery, set when the node serves.
    background: trio.Nursery | None = None
    ping_interval: float = 10.0  # seconds between keep-alive pings on a quiet stream

    @functools.cached_property
    def run_events(self) -> RunEvents:
        return RunEvents()

    # -- starting a turn -------------------------------------------------------

    def _wanted_run(
        self,
        agent_id: str,
        body: Any,
        idempotency_key: str | None,
        background: bool,
        conversation: Conversation | None = None,
    ) -> tuple[Run, SendRequest]:
        """The run a send asks for (not stored yet), and the parsed request. In a
        conversation with a model of its own, that model is the run's unless the send
        names another (override_model wins, as in Letta)."""
        request, inputs = parse_send(body)
        if self.dispatcher is None:
            raise Unavailable("this server runs no agents")
        if idempotency_key is None and inputs[0].otid:
            idempotency_key = f"otid:{inputs[0].otid}"
        override = send_options.override_config(self.catalog, request.override_model)
        override_model = request.override_model
        if override_model is None and conversation is not None and conversation.model:
            override_model = conversation.model
            override = conversation.model_llm_config
        run_id = self.env.new_id("run")
        wanted = Run(
            id=run_id,
            agent_id=agent_id,
            created_at=self.env.now(),
            checkpoint=SessionCheckpoint(session_id=run_id, agent_id=agent_id),
            inputs=inputs,
            max_steps=request.max_steps,
            use_assistant_message=request.use_assistant_message,
            idempotency_key=idempotency_key,
            background=background,
            client_tools=approvals.client_tools(request.client_tools),
            client_skills=approvals.client_skills(request.client_skills),
            assistant_message_tool_name=request.assistant_message_tool_name,
            assistant_message_tool_kwarg=request.assistant_message_tool_kwarg,
            override_model=override_model,
            override_llm_config=override,
            include_compaction_messages=request.include_compaction_messages,
            conversation_id=conversation.id if conversation is not None else None,
        )
        return wanted, request

    async def start_run(
        self,
        agent_id: str,
        body: Any,
        *,
        idempotency_key: str | None = None,
        background: bool = False,
        conversation: Conversation | None = None,
    ) -> tuple[Run, SendRequest]:
        """The stored run for this send: a new one, or, for a key seen before, the
        run that key started (a retried send joins it instead of running twice)."""
        wanted, request = self._wanted_run(
            agent_id, body, idempotency_key, background, conversation
        )

        async def create(tr: Transaction) -> Run:
            await _require_thread(tr, wanted)
            run = await runs.create_or_find(tr, wanted)
            if run.id == wanted.id:  # new: refused (and so not created) as the actor would
                await check_model_takes(tr, agent_id, wanted.inputs, wanted.override_llm_config)
                await parked_runs.check_send(tr, wanted.thread, wanted.inputs)
            return run

        return await self.store.transact(create), request

    async def _drive(self, run: Run) -> dict[str, Any]:
        """Run the run to its end wherever its agent lives, following it when it is
        transferred to another agent on the way."""
        try:
            return await self._drive_to_end(run)
        except BaseException:
            self.look_for_open_runs()  # it may be left open: the resume sweep looks soon
            raise

    async def _drive_to_end(self, run: Run) -> dict[str, Any]:
        assert self.dispatcher is not None
        thread = run.thread
        for _ in range(MAX_HANDOFFS):
            try:
                reply = await self.dispatcher.invoke(thread, {"kind": "run", "run_id": run.id})
            except ActorFailed as failed:
                await self._fail_run(run.id, failed)
                raise
            if "gone" in reply:
                raise _gone(thread)
            if "refused" in reply:
                raise Relayed(reply["refused"]["status"], reply["refused"]["detail"])
            if "handoff" not in reply:
                return reply
            thread = reply["handoff"]
        raise Unavailable(f"run {run.id} moved more than {MAX_HANDOFFS} times; ask again")

    async def _fail_run(self, run_id: str, failed: ActorFailed) -> None:
        """The actor failed on the run every time it tried (a bug, not a fault): the run
        ends with stop reason `error` rather than be resumed again and again."""

        async def fail(tr: Transaction) -> None:
            run = await runs.load_run(tr, run_id)
            if run is not None and not run.finished:
                run.error = failed.cause
                runs.finish_run(tr, run, "error", self.env.now())

        try:
            await self.store.transact(fail)
        except StoreError as error:  # left open: the next sweep tries the run again
            log.warning("could not mark run %s failed: %r", run_id, error)

    def _spawn(self, fn: Any, *args: Any) -> None:
        if self.background is None:
            raise Unavailable("this server cannot run turns in the background")
        self.background.start_soon(fn, *args)

    # -- the three ways to send --------------------------------------------------

    async def send_message(
        self,
        agent_id: str,
        body: Any,
        *,
        idempotency_key: str | None = None,
        conversation: Conversation | None = None,
        waiting_chain: list[str] | None = None,
    ) -> dict[str, Any]:
        """Send and wait: Letta's LettaResponse. The run is created (or found, for a
        key seen before) by its thread's actor, in the transaction that starts it.
        `waiting_chain`: the agents whose turns wait on this one (agent/multi_agent.py)."""
        wanted, request = self._wanted_run(
            agent_id, body, idempotency_key, background=False, conversation=conversation
        )
        wanted.waiting_chain = list(waiting_chain or [])
        types = send_options.check_return_types(request.include_return_message_types)

        async def exists(tr: Transaction) -> None:  # no activation for an unknown agent
            await runs.require_agent(tr, agent_id)
            await _require_thread(tr, wanted)
            await check_model_takes(tr, agent_id, wanted.inputs, wanted.override_llm_config)

        assert self.dispatcher is not None
        if not _checked_by_actor(wanted, self.dispatcher):
            await self.store.transact(exists)
        message = {"kind": "send", "run": convert.store.unstructure(wanted)}
        try:
            reply = await self.dispatcher.invoke(wanted.thread, message)
        except ActorFailed as failed:
            await self._fail_run_by_key(wanted, failed)
            raise
        except StoreError as error:
            refusal = refused_by_store(error)
            if refusal is None:
                raise
            raise await self._refused_turn(wanted, refusal) from error
        if "conflict" in reply:
            raise Conflict(reply["conflict"])
        if "refused" in reply:
            raise Relayed(reply["refused"]["status"], reply["refused"]["detail"])
        if "gone" in reply:
            raise _gone(wanted.thread)
        if "handoff" in reply:  # transferred while it ran: follow it
            reply = await self._drive(await self.get_run_record(reply["run_id"]))
        return {**reply, "messages": [m for m in reply["messages"] if send_options.shown(m, types)]}

    async def _find_wanted(self, wanted: Run) -> Run | None:
        """The stored run of a send: by its id, or the one its idempotency key started."""

        async def find(tr: Transaction) -> Run | None:
            found = await runs.load_run(tr, wanted.id)
            if found is None and wanted.idempotency_key is not None:
                found = await runs.find_by_key(tr, wanted.thread, wanted.idempotency_key)
            return found

        return await self.store.transact(find)

    async def _fail_run_by_key(self, wanted: Run, failed: ActorFailed) -> None:
        run = await self._find_wanted(wanted)
        if run is not None:
            await self._fail_run(run.id, failed)

    async def _refused_turn(self, wanted: Run, refusal: ServiceError) -> ServiceError:
        """What to answer when the store refused part of a turn (a full disk, a size over
        its limits): that nothing was stored, or what was. A turn whose input is stored
        is ended if the store still takes that, so it does not run later unasked; if
        not, the answer says it stays open and goes on once the store has room."""
        told = str(refusal).split("; nothing was stored")[0]
        try:
            run = await self._find_wanted(wanted)
        except StoreError:  # reads fail too: we cannot know, and say so
            return type(refusal)(
                f"{told}. Whether your message was stored is not known (the store cannot be "
                "read either); send it again with the same otid or Idempotency-Key once the "
                "store is back: it runs once, or answers with the turn it started"
            )
        if run is None or run.first_seq is None:
            return refusal  # nothing of this send was stored

        async def end(tr: Transaction) -> bool:
            current = await runs.load_run(tr, run.id)
            if current is None or current.finished:
                return False
            current.error = told
            runs.finish_run(tr, current, "error", self.env.now())
            return True

        try:
            ended = await self.store.transact(end, max_attempts=3)
        except StoreError as error:
            log.warning("could not end run %s after a refusal: %r", run.id, error)
            what = (
                "it stays open and goes on when the store has room again "
                f"(GET /v1/runs/{run.id} shows it)"
            )
        else:
            what = "it ended with stop reason 'error'" if ended else "it had ended already"
        return type(refusal)(
            f"{told}. Your message was stored (run {run.id}) but the agent could not finish "
            f"its turn: {what}"
        )

    async def send_async(
        self,
        agent_id: str,
        body: Any,
        *,
        idempotency_key: str | None = None,
        conversation: Conversation | None = None,
    ) -> dict[str, Any]:
        """Start the turn as a run and answer at once with the run (Letta's Run)."""
        run, _ = await self.start_run(
            agent_id, body, idempotency_key=idempotency_key, background=True,
            conversation=conversation,
        )  # fmt: skip
        self._spawn(self._drive_quietly, run)
        return runs.render_run(run)

    async def _drive_quietly(self, run: Run) -> None:
        """A background turn: the run's record says how it went; a failure that leaves
        it open is picked up again by `resume_open_runs`."""
        try:
            await self._drive(run)
        except (ServiceError, RuntimeFailure, StoreError) as error:
            log.warning("run %s of agent %s did not finish: %r", run.id, run.agent_id, error)

    async def open_stream(
        self,
        agent_id: str,
        body: Any,
        *,
        idempotency_key: str | None = None,
        conversation: Conversation | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Start (or join) the turn and return its events: each message as its step is
        stored (with `stream_tokens`, token deltas as the LLM writes), pings while quiet
        (`include_pings`), then the stop reason and usage, or an error message.

        The turn runs in the background nursery, not in the stream: a reader that
        leaves cancels nothing. Errors in the request itself raise here, before any
        event, so they reach the client as a 4xx.

        With `background: true` (or when it joins a background run) the events are the
        run's numbered, resumable stream, read from the store (service/run_stream.py)."""
        background = isinstance(body, dict) and body.get("background") is True
        run, request = await self.start_run(
            agent_id, body, idempotency_key=idempotency_key, background=background,
            conversation=conversation,
        )  # fmt: skip
        if run.background:
            types = send_options.check_return_types(request.include_return_message_types)
            return await self.open_background_stream(
                run, pings=request.include_pings, tokens=request.stream_tokens, types=types
            )
        subscription = self.run_events.subscribe(run.id, tokens=request.stream_tokens)
        outcome = _Outcome()

        async def drive() -> None:
            try:
                outcome.reply = await self._drive(run)
            except Exception as error:  # told to the reader as an error event
                outcome.error = error
            finally:
                subscription.send.close()

        try:
            self._spawn(drive)
        except BaseException:
            self.run_events.unsubscribe(subscription)
            raise
        types = send_options.check_return_types(request.include_return_message_types)
        return self._events(run, subscription, outcome, pings=request.include_pings, types=types)

    async def _events(
        self,
        run: Run,
        subscription: Any,
        outcome: _Outcome,
        *,
        pings: bool,
        types: frozenset[str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        shown: set[tuple[str, str]] = set()  # (id, message_type) already sent
        try:
            while True:
                with trio.move_on_after(self.ping_interval) as quiet:
                    try:
                        event, delta = await subscription.receive.receive()
                    except trio.EndOfChannel:
                        break
                if quiet.cancelled_caught:
                    if pings:
                        yield {"message_type": "ping", "id": self.env.new_id("message"),
                               "date": iso(self.env.now()), "run_id": run.id}  # fmt: skip
                    continue
                seen = (event["id"], event["message_type"])
                if delta:
                    shown.add(seen)
                elif seen in shown:
                    continue  # shown already, delta by delta
                else:
                    shown.add(seen)
                if send_options.shown(event, types):
                    yield event
        finally:
            self.run_events.unsubscribe(subscription)
        if outcome.reply is None:
            error = outcome.error
            yield {
                "message_type": "error_message",
                "run_id": run.id,
                "error_type": "internal_error",
                "message": "the turn did not finish; send again with the same "
                "idempotency key to resume it",
                "detail": f"{type(error).__name__}: {error}",
                "seq_id": None,
            }
            yield {"message_type": "stop_reason", "stop_reason": "error"}
            return
        reply = outcome.reply
        # What ran on another node, or before this reader joined, comes from the reply.
        for message in reply["messages"]:
            seen = (message["id"], message["message_type"])
            if seen not in shown and send_options.shown(message, types):
                yield message
        stop = reply["stop_reason"]["stop_reason"]
        if stop in ("llm_api_error", "error"):
            finished = await self.get_run_record(run.id)
            yield {
                "message_type": "error_message",
                "run_id": run.id,
                "error_type": stop,
                "message": "the LLM failed after its retries" if stop == "llm_api_error"
                else "the turn failed",
                "detail": finished.error,
                "seq_id": None,
            }  # fmt: skip
        yield reply["stop_reason"]
        yield reply["usage"]

    # -- runs (reading them: service/runs.py) -----------------------------------

    async def cancel_runs(
        self, agent_id: str, body: Any, *, thread: str | None = None
    ) -> dict[str, Any]:
        """Cancel the agent's unfinished runs (all, or those named; in every conversation,
        or in the one `thread`): a flag on each run, which the actor sees at its next step
        boundary; a turn running on this node is also interrupted in its LLM call at once.
        Finished runs are left as they are."""
        request = convert.structure_api(body if body is not None else {}, CancelRequest)

        parked: list[Run] = []

        async def flag(tr: Transaction) -> dict[str, str]:
            await runs.require_agent(tr, agent_id)
            parked.clear()
            wanted = request.run_ids
            threads = [thread] if thread is not None else await agent_threads(tr, agent_id)
            if wanted is None:
                wanted = [run_id for t in threads for run_id in await runs.open_runs(tr, t)]
            outcome: dict[str, str] = {}
            for run_id in wanted:
                run = await runs.load_run(tr, run_id)
                if run is None or run.agent_id != agent_id or run.thread not in threads:
                    outcome[run_id] = "not_found"
                elif run.finished:
                    outcome[run_id] = run.status
                else:
                    run.cancel_requested = True
                    runs.save_run(tr, run)
                    outcome[run_id] = "cancelled"
                    if run.parked:
                        parked.append(run)
            return outcome

        outcome = await self.store.transact(flag)
        for run in parked:  # nobody runs it: its actor denies its calls and ends it now
            if run.id not in self._driving:
                self._driving.add(run.id)
                self._spawn(self._resume, run)
        for run_id, what in outcome.items():
            if what == "cancelled":
                self.run_events.cancel(run_id)
        return outcome

    async def run_tool(self, agent_id: str, tool_name: str, body: Any) -> dict[str, Any]:
        """One of the agent's tools, run directly (outside a turn), in the agent's actor."""
        request = convert.structure_api(body if body is not None else {}, ToolRunRequest)

        view = await self.get_agent(agent_id)  # type: ignore[attr-defined]
        if not any(t.name == tool_name for t in view.tools):
            raise NotFound("Tool", f"{tool_name}' (name) attached to agent '{agent_id}")
        if self.dispatcher is None:
            raise Unavailable("this server runs no agents")
        message = {"kind": "tool", "tool_name": tool_name, "args": request.args or {},
                   "call_id": self.env.new_id("call")}  # fmt: skip
        return await self.dispatcher.invoke(agent_id, message)

    async def pending_approval(self, thread: str) -> dict[str, Any] | None:
        """The approval_request_message of the thread's parked run, if one waits."""

        async def read(tr: Transaction) -> dict[str, Any] | None:
            parked = await parked_runs.find_parked(tr, thread)
            if parked is None:
                return None
            request = await parked_runs.stored_message(tr, thread, parked.checkpoint.pending_seq)
            if request is None:
                return None
            shown = to_letta_messages(request, **parked.render_options())
            return next((m for m in shown if m["message_type"] == "approval_request_message"),
                        None)  # fmt: skip

        return await self.store.transact(read)

    async def reset_messages(self, agent_id: str) -> None:
        """Forget the history of the agent's default conversation (its others keep theirs)."""

        async def exists(tr: Transaction) -> None:
            await runs.require_agent(tr, agent_id)

        await self.store.transact(exists)
        if self.dispatcher is None:
            raise Unavailable("this server runs no agents")
        await self.dispatcher.invoke(agent_id, {"kind": "reset"})

    async def list_messages(
        self,
        agent_id: str,
        page: Page,
        *,
        use_assistant_message: bool = True,
        thread: str | None = None,
        every_thread: bool = False,
        types: frozenset[str] | None = None,
    ) -> list[dict[str, Any]]:
        """A thread's history (the agent's default conversation unless `thread` names
        another of its conversations), paged; with `every_thread`, all of the agent's
        conversations in one history, as Letta lists an agent's messages when no
        conversation is named (by when they were written; a thread's own order kept)."""

        async def read(tr: Transaction) -> list[Any]:
            await runs.require_agent(tr, agent_id)
            if not every_thread:
                return await read_history(tr, thread or agent_id)
            histories = [await read_history(tr, t) for t in await agent_threads(tr, agent_id)]
            return list(heapq.merge(*histories, key=lambda m: m.created_at))

        history = await self.store.transact(read)
        # Paged by stored message, as Letta does: a message that shows as several
        # Letta messages (thoughts and a tool call) sharing its id stays whole.
        if page.order == "desc":
            history.reverse()
        ids = [m.id for m in history]
        if page.after is not None:
            history = history[ids.index(page.after) + 1 :] if page.after in ids else []
        if page.before is not None:
            ids = [m.id for m in history]
            history = history[: ids.index(page.before)] if page.before in ids else []
        rendered = [
            [shown for shown in to_letta_messages(m, use_assistant_message=use_assistant_message)
             if send_options.shown(shown, types)]
            for m in history
        ]  # fmt: skip
        return _fill_page([r for r in rendered if r], min(page.limit or MAX_PAGE, MAX_PAGE))


def _checked_by_actor(wanted: Run, dispatcher: Dispatcher) -> bool:
    """Whether a send may skip its own existence check (a transaction, a hop): its
    thread's actor is active on this node, so nothing is activated (no activation of an
    unknown id kept in memory till it idles), and the transaction that starts the run
    checks all the check would: `runs.create_or_find` refuses a missing agent (answered
    404, nothing stored). Not for a conversation (its record is checked here) nor for images (the
    model's support of them is checked here)."""
    return (
        wanted.conversation_id is None
        and not any(given.parts for given in wanted.inputs)
        and dispatcher.is_active(wanted.thread)
    )


async def _require_thread(tr: Transaction, run: Run) -> None:
    """Within a send's transaction: NotFound unless the run's conversation (if it has one)
    still exists and is its agent's."""
    if run.conversation_id is not None:
        found = await require_conversation(tr, run.conversation_id)
        if found.agent_id != run.agent_id:
            raise NotFound("Conversation", run.conversation_id)


def _gone(thread: str) -> NotFound:
    """What a caller is told when the thread's actor found its agent or conversation gone."""
    return NotFound("Conversation" if is_conversation(thread) else "Agent", thread)


def _fill_page(rendered: list[list[dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """At most `limit` items, counting each stored message as the items it renders to, and
    keeping it whole: its items share its id, and `after=<that id>` must go on where the
    page ended. So a first message that alone renders to more than `limit` items (reasoning
    and a tool call, with `limit=1`) is the one page that holds more: cutting it would
    lose the rest of it to the next page's cursor."""
    page: list[dict[str, Any]] = []
    for items in rendered:
        if page and len(page) + len(items) > limit:
            break
        page.extend(items)
        if len(page) >= limit:
            break
    return page
