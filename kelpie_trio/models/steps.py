"""Steps in Letta's shapes: a Step, its metrics, and the feedback a client gives it."""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = ["ModifyFeedback", "Step", "StepMetrics"]

Feedback = Literal["positive", "negative"]


@attrs.define(kw_only=True)
class Step:
    """One iteration of an agent's turn: one model reply and its tools."""

    id: str
    run_id: str
    agent_id: str
    step_number: int
    model: str | None = None
    model_handle: str | None = None
    model_endpoint: str | None = None
    provider_name: str | None = None
    provider_category: str | None = None
    provider_id: str | None = None
    context_window_limit: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    stop_reason: str | None = None
    status: Literal["success", "cancelled"] = "success"
    feedback: Feedback | None = None
    tags: list[str] = attrs.Factory(list)
    # Deprecated in Letta for GET /v1/steps/{id}/messages; left empty, as Letta leaves it.
    messages: list[Any] = attrs.Factory(list)
    origin: str | None = None
    organization_id: str | None = None
    project_id: str | None = None
    tid: str | None = None
    trace_id: str | None = None
    request_id: str | None = None
    error_type: str | None = None
    error_data: dict[str, Any] | None = None


@attrs.define(kw_only=True)
class StepMetrics:
    """A step's timing in nanoseconds; what is not measured is null."""

    id: str
    run_id: str
    agent_id: str
    step_start_ns: int | None = None
    step_ns: int | None = None
    llm_request_start_ns: int | None = None
    llm_request_ns: int | None = None
    tool_execution_ns: int | None = None


@attrs.define(kw_only=True)
class ModifyFeedback:
    """PATCH /v1/steps/{step_id}/feedback: the feedback (null clears it) and tags to add."""

    feedback: Feedback | None = None
    tags: list[str] | None = None
