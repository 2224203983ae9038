"""Runs as stored records: read one, list them, their messages and usage, delete one.

Starting, driving, cancelling and resuming runs is sending (service/messages.py).
"""

from __future__ import annotations

from typing import Any

from kelpie_trio.agent import runs, steps
from kelpie_trio.agent.history import decode_messages
from kelpie_trio.agent.messages import to_letta_messages
from kelpie_trio.agent.runs import Run
from kelpie_trio.errors import Conflict, NotFound
from kelpie_trio.service.common import Page, ServiceBase, window
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = ["RunCases"]


class RunCases(ServiceBase):
    async def get_run_record(self, run_id: str) -> Run:
        async def get(tr: Transaction) -> Run | None:
            return await runs.load_run(tr, run_id)

        run = await self.store.transact(get)
        if run is None:
            raise NotFound("Run", run_id)
        return run

    async def get_run(self, run_id: str) -> dict[str, Any]:
        return runs.render_run(await self.get_run_record(run_id))

    async def list_runs(
        self,
        page: Page,
        *,
        agent_id: str | None = None,
        statuses: list[str] | None = None,
        active: bool = False,
        conversation_id: str | None = None,
    ) -> list[dict[str, Any]]:
        async def read(tr: Transaction) -> list[Run]:
            if agent_id is not None:
                ids = await runs.agent_run_ids(tr, agent_id)
            else:
                ids = await runs.all_run_ids(tr)
            found = [await runs.load_run(tr, i) for i in ids]
            return [r for r in found if r is not None]

        listed = await self.store.transact(read)
        if statuses:
            listed = [r for r in listed if r.status in statuses]
        if active:
            listed = [r for r in listed if not r.finished]
        if conversation_id == "default":  # the agent's default conversation
            listed = [r for r in listed if r.conversation_id is None]
        elif conversation_id is not None:
            listed = [r for r in listed if r.conversation_id == conversation_id]
        ids = window([r.id for r in listed], page)
        by_id = {r.id: r for r in listed}
        return [runs.render_run(by_id[i]) for i in ids]

    async def run_messages(self, run_id: str, page: Page) -> list[dict[str, Any]]:
        run = await self.get_run_record(run_id)

        async def read(tr: Transaction) -> list[Any]:
            if run.first_seq is None:
                return []
            begin = keys.MESSAGES.pack((run.thread, run.first_seq))
            end = keys.prefix_range(keys.MESSAGES.pack((run.thread,)))[1]
            return [m for m in decode_messages(await tr.get_range(begin, end))
                    if m.run_id == run.id]  # fmt: skip

        stored = await self.store.transact(read)
        ids = window([m.id for m in stored], page)
        by_id = {m.id: m for m in stored}
        return [shown for i in ids for shown in to_letta_messages(by_id[i], **run.render_options())]

    async def run_usage(self, run_id: str) -> dict[str, Any]:
        usage = (await self.get_run_record(run_id)).usage()
        usage.pop("message_type")
        return usage

    async def delete_run(self, run_id: str) -> None:
        async def delete(tr: Transaction) -> None:
            run = await runs.load_run(tr, run_id)
            if run is None:
                raise NotFound("Run", run_id)
            if not run.finished:
                raise Conflict(f"run {run_id} is still running; cancel it first")
            runs.delete_run(tr, run)
            await steps.clear_run_steps(tr, run_id)

        await self.store.transact(delete)
