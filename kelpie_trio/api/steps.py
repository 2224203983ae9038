"""/v1/steps and a run's steps (Letta's client.steps, client.runs.steps and .trace).

Provider traces are not recorded (agent/steps.py): a step's trace is null, a run's is empty.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from kelpie_trio.api.common import (
    body,
    bool_arg,
    check_id,
    json_response,
    page_args,
    render,
    service,
)
from kelpie_trio.api.spec import documented
from kelpie_trio.errors import Invalid
from kelpie_trio.models.steps import ModifyFeedback, Step, StepMetrics

PAGING = ("after", "before", "limit", "order")

steps = Blueprint("steps", __name__)


def _step_id(value: str) -> str:
    return check_id(value, "step", "step_id")


@steps.get("/v1/steps/")
@steps.get("/v1/steps")
@documented(
    "List steps, newest first",
    response=Step,
    many=True,
    query=(*PAGING, "agent_id", "model", "feedback", "has_feedback", "tags"),
    cursor="step",
)
async def list_steps() -> Response:
    args = request.args
    agent_id = args.get("agent_id")
    if agent_id is not None:
        check_id(agent_id, "agent", "agent_id")
    feedback = args.get("feedback")
    if feedback is not None and feedback not in ("positive", "negative"):
        raise Invalid.field(["query", "feedback"], "feedback must be positive or negative", "enum")
    has_feedback = bool_arg("has_feedback", False) if "has_feedback" in args else None
    found = await service().list_steps(
        page_args("step", order="desc"),
        agent_id=agent_id,
        model=args.get("model"),
        feedback=feedback,
        has_feedback=has_feedback,
        tags=args.getlist("tags") or None,
    )
    return json_response([render(s) for s in found])


@steps.get("/v1/steps/<step_id>")
@documented("Retrieve a step", response=Step)
async def retrieve_step(step_id: str) -> Response:
    return json_response(render(await service().get_step(_step_id(step_id))))


@steps.patch("/v1/steps/<step_id>/feedback")
@documented("Give a step feedback (null clears it) and add tags", request=ModifyFeedback,
            response=Step)  # fmt: skip
async def step_feedback(step_id: str) -> Response:
    step_id = _step_id(step_id)
    return json_response(render(await service().step_feedback(step_id, await body())))


@steps.get("/v1/steps/<step_id>/messages")
@documented("The messages a step produced, oldest first", query=PAGING, cursor="message")
async def step_messages(step_id: str) -> Response:
    step_id = _step_id(step_id)
    page = page_args("message", limit=100)
    return json_response(await service().step_messages(step_id, page))


@steps.get("/v1/steps/<step_id>/metrics")
@documented("A step's timing", response=StepMetrics)
async def step_metrics(step_id: str) -> Response:
    return json_response(render(await service().step_metrics(_step_id(step_id))))


@steps.get("/v1/steps/<step_id>/trace")
@documented("A step's provider trace: not recorded, so null")
async def step_trace(step_id: str) -> Response:
    await service().require_step(_step_id(step_id))
    return json_response(None)


@steps.get("/v1/runs/<run_id>/steps")
@documented("A run's steps, newest first", response=Step, many=True, query=PAGING, cursor="step")
async def run_steps(run_id: str) -> Response:
    run_id = check_id(run_id, "run", "run_id")
    found = await service().run_steps(run_id, page_args("step", limit=100, order="desc"))
    return json_response([render(s) for s in found])


@steps.get("/v1/runs/<run_id>/trace")
@documented("A run's provider traces: not recorded, so none", query=("limit",))
async def run_trace(run_id: str) -> Response:
    await service().require_run(check_id(run_id, "run", "run_id"))
    return json_response([])
