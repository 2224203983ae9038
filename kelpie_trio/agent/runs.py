"""Runs: one turn of an agent, stored, so it can be resumed, joined, cancelled and listed.

A run is what Letta calls a run and what the plan calls a session: the user's
input, then iterations (agent steps) until a stop reason. It is stored before
the turn starts; after each iteration its `SessionCheckpoint` is written in the
same transaction as that iteration's messages and memory edits. So:

- a send with an idempotency key (an `Idempotency-Key` header, or the first
  message's otid) finds its run instead of starting another: a retried POST
  joins the turn, or returns it when it is done, and never runs it twice;
- an activation that finds a run without a final stop reason resumes it at the
  iteration after its checkpoint (see `AgentActor`);
- cancel is a flag on the stored run, seen by the actor at its next step
  boundary (and at once, by the node-local `RunEvents`, when the turn runs here).

A run belongs to one thread of its agent (its default conversation or another one,
agent/conversations.py): the thread's actor runs it, and the entries that actor reads
(idempotency keys, open runs) are per thread.

Keys (all under `keys.SESSIONS`):
  run   (run_id,)                       -> Run
  agent (agent_id, created_us, run_id)  -> b""       an agent's runs, oldest first
  all   (created_us, run_id)            -> agent_id  every run, oldest first
  key   (thread, idempotency_key)       -> run_id
  open  (thread, run_id)                -> b""       runs not finished yet
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.agent.content import ContentPart
from kelpie_trio.errors import Conflict, NotFound
from kelpie_trio.models import convert
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction, decode_counter
from kelpie_trio.storage.chunks import clear_blob, get_blob, prefetch_blob, set_blob

__all__ = [
    "FINAL_STATUS",
    "OPEN_RUNS",
    "PAUSED",
    "Answer",
    "ClientSkill",
    "ClientTool",
    "Run",
    "RunInput",
    "SessionCheckpoint",
    "find_by_key",
    "load_run",
    "render_run",
    "save_run",
]

RUNS = keys.SESSIONS["run"]
AGENT_RUNS = keys.SESSIONS["agent"]
ALL_RUNS = keys.SESSIONS["all"]
RUN_KEYS = keys.SESSIONS["key"]
OPEN_RUNS = keys.SESSIONS["open"]
# Per thread: how many runs a transfer moved into it (an atomic count). A thread's actor
# starts, parks, pauses and ends its own runs, so once it has looked at its open runs it
# looks again only when this count moved (agent/actor.py `_load_or_start`).
MOVED_IN = keys.SESSIONS["moved-in"]
# The commit topic (Transaction.notify_on_commit) of a transaction that saved a paused run:
# the node's resume sweep (service/resume.py) reads when the pause ends.
PAUSED = "runs-paused"

# The run status a stop reason ends in.
FINAL_STATUS = {
    "end_turn": "completed",
    "max_steps": "completed",
    "cancelled": "cancelled",
    "llm_api_error": "failed",
    "error": "failed",
    "tool_rule": "completed",
    "requires_approval": "completed",  # a parked run, as Letta shows it (agent/approvals.py)
    "invalid_tool_call": "failed",
}


@attrs.define(kw_only=True)
class Answer:
    """A client's answer to one call that waited (Letta's ApprovalReturn or ToolReturn)."""

    tool_call_id: str
    kind: str  # "approval": approve or deny it; "tool": the client ran it, here is its return
    approve: bool | None = None
    reason: str | None = None
    status: str | None = None  # kind "tool": "success" | "error"
    tool_return: str | None = None
    stdout: list[str] | None = None
    stderr: list[str] | None = None


@attrs.define(kw_only=True)
class ClientTool:
    """A tool the client runs itself, offered for one request (Letta's ClientToolSchema)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


@attrs.define(kw_only=True)
class ClientSkill:
    """A skill the client has at hand, listed in the system prompt for one request (Letta's
    ClientSkillSchema): the model reads it where `location` says when it needs it."""

    name: str
    description: str
    location: str


@attrs.define(kw_only=True)
class RunInput:
    text: str
    otid: str | None = None
    # A message with images: its text and images in order (agent/content.py); else None.
    parts: list[ContentPart] | None = None
    # "system": an event for the model (Letta's system-role MessageCreate), stored as a
    # system message where it was sent, not folded into the system prompt.
    role: str = "user"
    # An approval message (no text): the answers to the calls a parked run waits for.
    answers: list[Answer] | None = None
    approval_request_id: str | None = None  # Letta's legacy field, kept as it was sent


@attrs.define(kw_only=True)
class PendingToolCall:
    id: str
    name: str
    arguments: str
    waits_for: str | None = None  # "approval" | "client": the call waits for the client


@attrs.define(kw_only=True)
class SessionCheckpoint:
    """Where a run stands after its last completed iteration (the plan's struct)."""

    session_id: str
    agent_id: str
    iteration: int = 0  # completed agent steps; 0 = the input is stored, no step yet
    is_paused: bool = False
    pause_until: float | None = None  # seconds on the env's clock
    pending_tool_calls: list[PendingToolCall] = attrs.Factory(list)
    pending_seq: int | None = None  # the stored reply whose calls are pending
    last_tool_result: str | None = None  # as of the last completed step (tool rules read it)
    tools_called: list[str] = attrs.Factory(list)  # in this run, for its tool rules
    stop_reason: str | None = None  # set once, when the run ends
    # Parked: the step's reply is stored (pending_seq) and some of its calls wait for the
    # client; the run shows as completed with stop reason requires_approval until a run
    # answering it takes the step over (`answered_by`), or a cancel denies the calls.
    awaiting_approval: bool = False
    answered_by: str | None = None
    # The client's answers to the pending step's waiting calls, recorded before any runs.
    answers: list[Answer] = attrs.Factory(list)


@attrs.define(kw_only=True)
class Run:
    id: str
    agent_id: str
    created_at: float
    checkpoint: SessionCheckpoint
    inputs: list[RunInput]
    max_steps: int = 50
    use_assistant_message: bool = True
    idempotency_key: str | None = None
    background: bool = False
    status: str = "created"  # created | running | completed | failed | cancelled
    first_seq: int | None = None  # the first input's place in the history, once stored
    completed_at: float | None = None
    cancel_requested: bool = False
    transfer_to: str | None = None  # a transfer asked for, not yet handed over
    history_agent: str | None = None  # moved here; its messages still in this thread's history
    conversation_id: str | None = None  # None: the agent's default conversation
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    client_tools: list[ClientTool] = attrs.Factory(list)
    client_skills: list[ClientSkill] = attrs.Factory(list)
    # The tool (and its argument) shown as assistant messages (use_assistant_message).
    assistant_message_tool_name: str = "send_message"
    assistant_message_tool_kwarg: str = "message"
    # Letta's override_model: the handle this run's steps use instead of the agent's model,
    # and its llm_config as the catalog gave it when the run was asked for (so a run resumed
    # after a restart or on another node uses the same model).
    override_model: str | None = None
    override_llm_config: dict[str, Any] | None = None
    # Letta's include_compaction_messages: a compaction during the run shows as an
    # event_message and a summary_message.
    include_compaction_messages: bool = False
    # The agents whose turns wait for this run's reply, the first caller first (an agent
    # asking another with send_message_to_agent_and_wait_for_reply, agent/multi_agent.py):
    # stored, so a resumed run still refuses to wait on any of them (a cycle).
    waiting_chain: list[str] = attrs.Factory(list)

    def render_options(self) -> dict[str, Any]:
        """How this run's messages are shown (to_letta_messages' options)."""
        return {"use_assistant_message": self.use_assistant_message,
                "assistant_tool": self.assistant_message_tool_name,
                "assistant_kwarg": self.assistant_message_tool_kwarg}  # fmt: skip

    @property
    def finished(self) -> bool:
        return self.checkpoint.stop_reason is not None

    @property
    def thread(self) -> str:
        """The history it runs in, and so the actor that runs it."""
        return self.conversation_id or self.agent_id

    def usage(self) -> dict[str, Any]:
        return {
            "message_type": "usage_statistics",
            "completion_tokens": self.completion_tokens,
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "step_count": self.checkpoint.iteration,
            "run_ids": [self.id],
        }

    @property
    def parked(self) -> bool:
        """Waiting for the client to answer calls (approvals, client-side tools)."""
        return self.checkpoint.awaiting_approval and not self.finished

    def same_request(self, other: Run) -> bool:
        """Whether a retried send asks for what this run was started with."""
        return [(i.text, i.otid, i.answers, i.parts, i.role) for i in self.inputs] == [
            (i.text, i.otid, i.answers, i.parts, i.role) for i in other.inputs
        ] and (self.max_steps, self.use_assistant_message, self.override_model) == (
            other.max_steps,
            other.use_assistant_message,
            other.override_model,
        )


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


async def load_run(tr: Transaction, run_id: str) -> Run | None:
    raw = await get_blob(tr, RUNS.pack((run_id,)))
    return None if raw is None else convert.decode_record(raw, Run)


def save_run(tr: Transaction, run: Run, raw: bytes | None = None) -> None:
    """`raw`: the run already encoded."""
    set_blob(tr, RUNS.pack((run.id,)), convert.encode_record(run) if raw is None else raw)
    if run.checkpoint.is_paused:  # its end is this node's resume sweep's to wait for
        tr.notify_on_commit(PAUSED)


def _create_run(tr: Transaction, run: Run, raw: bytes) -> None:
    """A new run (`raw`, encoded) and its index entries, in the caller's transaction."""
    save_run(tr, run, raw)
    tr.set(AGENT_RUNS.pack((run.agent_id, _micros(run.created_at), run.id)), b"")
    tr.set(ALL_RUNS.pack((_micros(run.created_at), run.id)), run.agent_id.encode())
    tr.set(OPEN_RUNS.pack((run.thread, run.id)), b"")
    if run.idempotency_key is not None:
        tr.set(RUN_KEYS.pack((run.thread, run.idempotency_key)), run.id.encode())


async def require_agent(tr: Transaction, agent_id: str) -> None:
    """Within a caller's transaction: NotFound unless the agent exists."""
    if await get_blob(tr, keys.AGENTS.pack((agent_id,))) is None:
        raise NotFound("Agent", agent_id)


async def create_or_find(tr: Transaction, wanted: Run) -> Run:
    """The run a send asks for: a new one, or, for an idempotency key seen before, the
    run that key started (a retried send joins it instead of running twice). Raises
    NotFound for a missing agent, Conflict for a key reused with another request.

    A send delivered again (an actor restarted after a later step failed, a forward
    retried after a timeout) carries the run's own id: that run is the answer, as it
    stands, never a fresh copy written over its progress."""
    prefetch_blob(tr, RUNS.pack((wanted.id,)))  # read with the agent, in one snapshot
    await require_agent(tr, wanted.agent_id)
    existing = await load_run(tr, wanted.id)
    if existing is not None:
        return existing
    key = wanted.idempotency_key
    if key is not None:
        found = await find_by_key(tr, wanted.thread, key)
        if found is not None:
            if not found.same_request(wanted):
                raise Conflict(
                    f"the idempotency key {key!r} was used by run {found.id} "
                    "for a different request"
                )
            return found
    # The caller changes the run it gets; a retried attempt starts afresh from `wanted`.
    # Its stored form read back is that copy (a third of a deepcopy's cost), and what a
    # later load would give.
    raw = convert.encode_record(wanted)
    run = convert.decode_record(raw, Run)
    _create_run(tr, run, raw)
    return run


def finish_run(tr: Transaction, run: Run, stop_reason: str, now: float) -> None:
    run.checkpoint.stop_reason = stop_reason
    run.checkpoint.pending_tool_calls = []
    run.status = FINAL_STATUS.get(stop_reason, "failed")
    run.completed_at = now
    save_run(tr, run)
    tr.clear(OPEN_RUNS.pack((run.thread, run.id)))


def move_run(tr: Transaction, run: Run, target: str, *, history_agent: str) -> None:
    """Hand a run to another agent (into its default conversation): its record and index
    entries follow it. The idempotency key stays where the send came in; it still finds
    the run. `history_agent` is the thread whose history holds its messages so far."""
    stamp = _micros(run.created_at)
    tr.clear(AGENT_RUNS.pack((run.agent_id, stamp, run.id)))
    tr.clear(OPEN_RUNS.pack((run.thread, run.id)))
    run.agent_id = target
    run.conversation_id = None
    run.checkpoint.agent_id = target
    run.history_agent = history_agent
    run.transfer_to = None
    tr.set(AGENT_RUNS.pack((target, stamp, run.id)), b"")
    tr.set(ALL_RUNS.pack((stamp, run.id)), target.encode())
    tr.set(OPEN_RUNS.pack((target, run.id)), b"")
    tr.add(MOVED_IN.pack((target,)), 1)
    save_run(tr, run)


def delete_run(tr: Transaction, run: Run) -> None:
    clear_blob(tr, RUNS.pack((run.id,)))
    tr.clear(AGENT_RUNS.pack((run.agent_id, _micros(run.created_at), run.id)))
    tr.clear(ALL_RUNS.pack((_micros(run.created_at), run.id)))
    tr.clear(OPEN_RUNS.pack((run.thread, run.id)))
    if run.idempotency_key is not None:
        tr.clear(RUN_KEYS.pack((run.thread, run.idempotency_key)))


async def find_by_key(tr: Transaction, thread: str, key: str) -> Run | None:
    run_id = await tr.get(RUN_KEYS.pack((thread, key)))
    return None if run_id is None else await load_run(tr, run_id.decode())


def prefetch_moved_in(tr: Transaction, thread: str) -> None:
    tr.prefetch(MOVED_IN.pack((thread,)))


async def moved_in(tr: Transaction, thread: str) -> int:
    """How many runs transfers have moved into `thread` so far."""
    return decode_counter(await tr.get(MOVED_IN.pack((thread,))))


async def open_runs(tr: Transaction, thread: str) -> list[str]:
    rows = await tr.get_prefix(OPEN_RUNS.pack((thread,)))
    return [OPEN_RUNS.unpack(k)[1] for k, _ in rows]


async def agent_run_ids(tr: Transaction, agent_id: str) -> list[str]:
    rows = await tr.get_prefix(AGENT_RUNS.pack((agent_id,)))
    return [AGENT_RUNS.unpack(k)[2] for k, _ in rows]


async def all_run_ids(tr: Transaction) -> list[str]:
    rows = await tr.get_prefix(ALL_RUNS.key())
    return [ALL_RUNS.unpack(k)[1] for k, _ in rows]


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else convert.iso(seconds)


def render_run(run: Run) -> dict[str, Any]:
    """Letta's Run."""
    duration = None
    if run.completed_at is not None:
        duration = _micros(run.completed_at - run.created_at) * 1000
    return {
        "id": run.id,
        "status": "completed" if run.parked else run.status,
        "created_at": _iso(run.created_at),
        "completed_at": _iso(run.completed_at),
        "agent_id": run.agent_id,
        "conversation_id": run.conversation_id,
        "base_template_id": None,
        "background": run.background,
        "metadata": {"error": run.error} if run.error else {},
        "request_config": {
            "use_assistant_message": run.use_assistant_message,
            "assistant_message_tool_name": run.assistant_message_tool_name,
            "assistant_message_tool_kwarg": run.assistant_message_tool_kwarg,
            "include_return_message_types": None,
        },
        "stop_reason": "requires_approval" if run.parked else run.checkpoint.stop_reason,
        "callback_url": None,
        "callback_sent_at": None,
        "callback_status_code": None,
        "callback_error": None,
        "ttft_ns": None,
        "total_duration_ns": duration,
    }


def render_checkpoint(run: Run) -> dict[str, Any]:
    """A session as /v1/agents/{id}/sessions shows it: the run and its checkpoint."""
    return {
        **convert.api.unstructure(run.checkpoint),
        "status": run.status,
        "created_at": _iso(run.created_at),
        "completed_at": _iso(run.completed_at),
    }
