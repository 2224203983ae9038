"""Steps: one record per agent iteration, written in the transaction of its checkpoint.

Letta shows each iteration of a turn as a Step (model, provider, tokens, stop reason, the
messages it produced) with its metrics and, where enabled, a trace of the provider call.
The record is written by the step's own checkpoint transaction (agent/commits.py), so it
exists exactly when the iteration does: a crash before the commit leaves neither, the
resumed turn writes it then. It is keyed by (run, step number) too, so an iteration that
is ever committed again replaces its record under the same id instead of adding one.

Its timing (Letta's StepMetrics) is the attempt's that committed it: the actor measures
the model's reply and the tools outside the store with the injected clock (StepTiming),
the commit adds its memory tools, and the record keeps nanoseconds. A step resumed after a
crash shows the resumed attempt's times; one whose reply was checkpointed before the crash
made no model request in that attempt, so its LLM time is null.

Traces are not recorded (Letta's is off unless its operator turns it on): the trace routes
answer none.
"""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.models import convert
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = [
    "RUN_STEPS",
    "STEP_INDEX",
    "StepRecord",
    "StepTiming",
    "clear_run_steps",
    "load_step",
    "record_step",
    "run_step_ids",
    "save_step",
]

STEP_INDEX = keys.ROOT["index"]["steps"]  # (created_us, step_id) -> b""
RUN_STEPS = keys.ROOT["index"]["run_steps"]  # (run_id, step number) -> step_id


@attrs.define(kw_only=True)
class StepTiming:
    """What the actor measured of one attempt at a step: starts are epoch seconds
    (env.now), spans are differences of env.monotonic, so they are exact in the simulator
    and immune to wall-clock jumps in production."""

    started_at: float  # epoch seconds: the attempt began the step
    started_mono: float  # env.monotonic() then
    llm_started_at: float | None = None  # None: the reply came from the checkpoint
    llm_seconds: float | None = None
    tool_seconds: float = 0.0  # tools outside the store; the commit adds its memory tools


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1_000_000_000)


@attrs.define(kw_only=True)
class StepRecord:
    id: str
    run_id: str
    agent_id: str
    step_number: int
    model: str | None = None
    model_handle: str | None = None
    model_endpoint: str | None = None
    provider_name: str | None = None
    context_window_limit: int | None = None
    # The run's totals after this step; the step's own tokens are the difference from the
    # step before (the actor counts usage per run).
    run_prompt_tokens: int = 0
    run_completion_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stop_reason: str | None = None
    message_ids: list[str] = attrs.Factory(list)
    feedback: str | None = None  # "positive" | "negative"
    tags: list[str] = attrs.Factory(list)
    started_at: float = 0.0
    created_at: float = 0.0  # when the step committed
    # Letta's StepMetrics, in nanoseconds, of the attempt that committed the step (None:
    # not measured, as in records written before they were).
    step_start_ns: int | None = None
    step_ns: int | None = None
    llm_request_start_ns: int | None = None
    llm_request_ns: int | None = None
    tool_execution_ns: int | None = None


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


async def load_step(tr: Transaction, step_id: str) -> StepRecord | None:
    raw = await tr.get(keys.STEPS.pack((step_id,)))
    return None if raw is None else convert.decode_record(raw, StepRecord)


def save_step(tr: Transaction, step: StepRecord) -> None:
    tr.set(keys.STEPS.pack((step.id,)), convert.encode_record(step))


async def run_step_ids(tr: Transaction, run_id: str) -> list[str]:
    """The run's steps, in step order."""
    r = RUN_STEPS.range((run_id,))
    return [v.decode() for _, v in await tr.get_range(r.start, r.stop)]


def prefetch_step(tr: Transaction, run_id: str, step: int) -> None:
    """A hint that `record_step` of `step` follows: its reads of the run's step index."""
    tr.prefetch(RUN_STEPS.pack((run_id, step)))
    if step > 1:
        tr.prefetch(RUN_STEPS.pack((run_id, step - 1)))


async def record_step(
    tr: Transaction,
    env: Any,
    *,
    run: Any,
    agent: Any,
    step: int,
    usage: tuple[int, int],
    messages: list[Any],
    stop: str | None,
    timing: StepTiming | None = None,
) -> StepRecord:
    """The record of `run`'s iteration `step`, written in the caller's transaction, with
    `timing`'s metrics (the spans end now, at the commit)."""
    existing_id = await tr.get(RUN_STEPS.pack((run.id, step)))
    existing = await load_step(tr, existing_id.decode()) if existing_id else None
    previous = None
    if step > 1:
        before = await tr.get(RUN_STEPS.pack((run.id, step - 1)))
        previous = await load_step(tr, before.decode()) if before else None
    prompt, completion = usage
    llm = agent.llm_config or {}
    now = env.now()
    record = StepRecord(
        id=existing.id if existing else env.new_id("step"),
        run_id=run.id,
        agent_id=run.agent_id,
        step_number=step,
        model=llm.get("model"),
        model_handle=llm.get("handle") or agent.model,
        model_endpoint=llm.get("model_endpoint"),
        provider_name=llm.get("provider_name") or llm.get("model_endpoint_type"),
        context_window_limit=llm.get("context_window"),
        run_prompt_tokens=prompt,
        run_completion_tokens=completion,
        prompt_tokens=prompt - (previous.run_prompt_tokens if previous else 0),
        completion_tokens=completion - (previous.run_completion_tokens if previous else 0),
        stop_reason=stop,
        message_ids=list(dict.fromkeys(m.id for m in messages)),
        feedback=existing.feedback if existing else None,
        tags=existing.tags if existing else [],
        started_at=previous.created_at if previous else run.created_at,
        created_at=existing.created_at if existing else now,
    )
    if timing is not None:
        record.step_start_ns = _ns(timing.started_at)
        record.step_ns = _ns(max(0.0, env.monotonic() - timing.started_mono))
        record.llm_request_start_ns = _ns(timing.llm_started_at)
        record.llm_request_ns = _ns(timing.llm_seconds)
        record.tool_execution_ns = _ns(timing.tool_seconds)
    save_step(tr, record)
    if existing is None:
        tr.set(RUN_STEPS.pack((run.id, step)), record.id.encode())
        tr.set(STEP_INDEX.pack((_micros(record.created_at), record.id)), b"")
    return record


async def clear_run_steps(tr: Transaction, run_id: str) -> None:
    """Forget a run's steps (its run is deleted, or its agent)."""
    r = RUN_STEPS.range((run_id,))
    for _, value in await tr.get_range(r.start, r.stop):
        step = await load_step(tr, value.decode())
        if step is not None:
            tr.clear(keys.STEPS.pack((step.id,)))
            tr.clear(STEP_INDEX.pack((_micros(step.created_at), step.id)))
    tr.clear_range(r.start, r.stop)
