"""Sessions: a run seen as the plan's session (its checkpoint), and its transfer to another
agent (a mixin of the message use cases, service/messages.py)."""

from __future__ import annotations

from typing import Any

import attrs

from kelpie_trio.agent import runs
from kelpie_trio.agent.runs import Run
from kelpie_trio.errors import Conflict, Invalid, NotFound, Unavailable
from kelpie_trio.models import convert
from kelpie_trio.service.common import Page, window
from kelpie_trio.storage.base import Transaction

__all__ = ["SessionCases", "TransferRequest"]


@attrs.define
class TransferRequest:
    target_agent_id: str


class SessionCases:
    # The message use cases': the store, the dispatcher, and how runs are driven.
    store: Any
    dispatcher: Any
    _driving: Any
    _spawn: Any
    _resume: Any
    get_run_record: Any

    async def list_sessions(self, agent_id: str, page: Page) -> list[dict[str, Any]]:
        async def read(tr: Transaction) -> list[Run]:
            await runs.require_agent(tr, agent_id)
            found = [await runs.load_run(tr, i) for i in await runs.agent_run_ids(tr, agent_id)]
            return [r for r in found if r is not None]

        listed = await self.store.transact(read)
        by_id = {r.id: r for r in listed}
        return [runs.render_checkpoint(by_id[i]) for i in window(list(by_id), page)]

    async def get_session(self, agent_id: str, session_id: str) -> dict[str, Any]:
        run = await self.get_run_record(session_id)
        if run.agent_id != agent_id:
            raise NotFound("Session", session_id)
        return runs.render_checkpoint(run)

    async def transfer_session(self, source: str, session_id: str, body: Any) -> dict[str, Any]:
        """Move an unfinished session to another agent: the source hands it over at its
        next step boundary (or at once if it is not running), the target copies its
        messages and goes on from the last checkpoint. Refused, changing nothing: a
        missing agent or session (404), a finished session, a target with a session of
        its own still open, or a session already moving (409)."""
        request = convert.structure_api(body, TransferRequest)
        target = request.target_agent_id
        if target == source:
            raise Invalid.field(["body", "target_agent_id"], "the target is the source")
        if self.dispatcher is None:
            raise Unavailable("this server runs no agents")

        async def ask(tr: Transaction) -> Run:
            for agent_id in (source, target):
                await runs.require_agent(tr, agent_id)
            run = await runs.load_run(tr, session_id)
            if run is None or run.agent_id != source:
                raise NotFound("Session", session_id)
            if run.finished:
                raise Conflict(f"session {session_id} has finished ({run.status})")
            if run.transfer_to == target:
                return run  # asked again (a retry): go on with it
            if run.transfer_to is not None:
                raise Conflict(f"session {session_id} is already moving to {run.transfer_to}")
            if await runs.open_runs(tr, target):
                raise Conflict(f"agent {target} is busy with a session of its own")
            run.transfer_to = target
            runs.save_run(tr, run)
            return run

        run = await self.store.transact(ask)
        # The actor of the session's thread hands it over (into the target's default
        # conversation, whichever of the source's conversations it ran in).
        reply = await self.dispatcher.invoke(run.thread, {"kind": "handoff", "run_id": run.id})
        if reply.get("finished"):
            raise Conflict(f"session {session_id} finished before it could move")
        moved = await self.get_run_record(session_id)
        if moved.id not in self._driving:  # the target goes on from the checkpoint
            self._driving.add(moved.id)
            self._spawn(self._resume, moved)
        return runs.render_checkpoint(moved)
