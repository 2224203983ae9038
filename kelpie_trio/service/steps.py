"""Steps as Letta shows them: read, list (all, or a run's), feedback, messages, metrics.

The records are written by the agent loop (agent/steps.py); this only reads them, and
stores the feedback a client gives.
"""

from __future__ import annotations

from typing import Any

from kelpie_trio.agent import runs
from kelpie_trio.agent.history import read_history
from kelpie_trio.agent.messages import to_letta_messages
from kelpie_trio.agent.steps import STEP_INDEX, StepRecord, load_step, run_step_ids, save_step
from kelpie_trio.errors import NotFound
from kelpie_trio.models import convert
from kelpie_trio.models.steps import ModifyFeedback, Step, StepMetrics
from kelpie_trio.service.common import Page, ServiceBase, window
from kelpie_trio.service.limits import check_key_part
from kelpie_trio.storage.base import Transaction

__all__ = ["StepCases", "step_view"]


def step_view(record: StepRecord) -> Step:
    return Step(
        id=record.id,
        run_id=record.run_id,
        agent_id=record.agent_id,
        step_number=record.step_number,
        model=record.model,
        model_handle=record.model_handle,
        model_endpoint=record.model_endpoint,
        provider_name=record.provider_name,
        context_window_limit=record.context_window_limit,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        total_tokens=record.prompt_tokens + record.completion_tokens,
        stop_reason=record.stop_reason,
        status="cancelled" if record.stop_reason == "cancelled" else "success",
        feedback=record.feedback,  # type: ignore[arg-type]
        tags=list(record.tags),
    )


class StepCases(ServiceBase):
    async def _step(self, tr: Transaction, step_id: str) -> StepRecord:
        record = await load_step(tr, step_id)
        if record is None:
            raise NotFound("Step", step_id)
        return record

    async def get_step(self, step_id: str) -> Step:
        return step_view(await self.store.transact(lambda tr: self._step(tr, step_id)))

    async def list_steps(
        self,
        page: Page,
        *,
        agent_id: str | None = None,
        model: str | None = None,
        feedback: str | None = None,
        has_feedback: bool | None = None,
        tags: list[str] | None = None,
    ) -> list[Step]:
        def keep(r: StepRecord) -> bool:
            return (
                (agent_id is None or r.agent_id == agent_id)
                and (model is None or model in (r.model, r.model_handle))
                and (feedback is None or r.feedback == feedback)
                and (has_feedback is None or (r.feedback is not None) == has_feedback)
                and (not tags or set(tags) <= set(r.tags))
            )

        async def read(tr: Transaction) -> list[StepRecord]:
            r = STEP_INDEX.range()
            found = [await load_step(tr, STEP_INDEX.unpack(k)[1])
                     for k, _ in await tr.get_range(r.start, r.stop)]  # fmt: skip
            return [s for s in found if s is not None and keep(s)]

        records = await self.store.transact(read)
        by_id = {r.id: r for r in records}
        return [step_view(by_id[i]) for i in window(list(by_id), page)]

    async def run_steps(self, run_id: str, page: Page) -> list[Step]:
        async def read(tr: Transaction) -> list[StepRecord]:
            if await runs.load_run(tr, run_id) is None:
                raise NotFound("Run", run_id)
            found = [await load_step(tr, i) for i in await run_step_ids(tr, run_id)]
            return [s for s in found if s is not None]

        records = await self.store.transact(read)
        by_id = {r.id: r for r in records}
        return [step_view(by_id[i]) for i in window(list(by_id), page)]

    async def step_feedback(self, step_id: str, body: Any) -> Step:
        change = convert.structure_api(body, ModifyFeedback)
        for index, tag in enumerate(change.tags or []):
            check_key_part(["body", "tags", index], tag, "a tag")

        async def update(tr: Transaction) -> StepRecord:
            record = await self._step(tr, step_id)
            record.feedback = change.feedback
            record.tags = list(dict.fromkeys([*record.tags, *(change.tags or [])]))
            save_step(tr, record)
            return record

        return step_view(await self.store.transact(update))

    async def step_messages(self, step_id: str, page: Page) -> list[dict[str, Any]]:
        async def read(tr: Transaction) -> tuple[StepRecord, list[Any]]:
            record = await self._step(tr, step_id)
            run = await runs.load_run(tr, record.run_id)  # its thread holds the messages
            return record, await read_history(tr, run.thread if run else record.agent_id)

        record, history = await self.store.transact(read)
        by_id = {m.id: m for m in history if m.id in set(record.message_ids)}
        shown = [i for i in record.message_ids if i in by_id]
        return [item for i in window(shown, page) for item in to_letta_messages(by_id[i])]

    async def step_metrics(self, step_id: str) -> StepMetrics:
        record = await self.store.transact(lambda tr: self._step(tr, step_id))
        if record.step_ns is None:  # a record from before the actor measured its steps
            return StepMetrics(
                id=record.id,
                run_id=record.run_id,
                agent_id=record.agent_id,
                step_start_ns=round(record.started_at * 1e9),
                step_ns=max(0, round((record.created_at - record.started_at) * 1e9)),
            )
        return StepMetrics(
            id=record.id,
            run_id=record.run_id,
            agent_id=record.agent_id,
            step_start_ns=record.step_start_ns,
            step_ns=record.step_ns,
            llm_request_start_ns=record.llm_request_start_ns,
            llm_request_ns=record.llm_request_ns,
            tool_execution_ns=record.tool_execution_ns,
        )

    async def require_step(self, step_id: str) -> None:
        await self.store.transact(lambda tr: self._step(tr, step_id))

    async def require_run(self, run_id: str) -> None:
        async def read(tr: Transaction) -> None:
            if await runs.load_run(tr, run_id) is None:
                raise NotFound("Run", run_id)

        await self.store.transact(read)
