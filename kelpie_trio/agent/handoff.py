"""Session transfer as the actors run it (a mixin of AgentActor, actor.py).

The source hands a session over at its next step boundary (or at once when it is not
running it): one fenced transaction moves the run and its open entry to the target
(runs.move_run). The target, when it next runs the session, copies the session's
messages from the source's history into its own (same ids, new places) in one
transaction, then goes on from the checkpoint. Either step may be cut by a crash and
is done again: the run record says how far the handoff got.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from kelpie_trio.agent import runs
from kelpie_trio.agent.history import decode_messages
from kelpie_trio.agent.messages import Message
from kelpie_trio.agent.runs import Run
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = ["SessionHandoff"]

log = logging.getLogger("kelpie_trio.agent")


class SessionHandoff:
    ctx: Any
    next_seq: int
    _may_have_open_runs: bool

    async def _hand_off(self, run: Run) -> dict[str, Any]:
        """Give the session to the agent it is being transferred to (the run's
        `transfer_to`): the run and its open entry move to the target, which copies the
        session's messages into its own history when it takes the session over."""
        target = run.transfer_to
        assert target is not None
        me = self.thread

        async def move(tr: Transaction) -> None:
            current = await self._load_current(tr, run)
            runs.move_run(tr, current, target, history_agent=me)

        await self._checkpointed(move)
        self.ctx.note("transfer_out", run_id=run.id, peer=target)
        log.info("agent %s: session %s handed to %s", me, run.id, target)
        return {"handoff": target, "run_id": run.id}

    async def _handoff_request(self, run_id: str) -> dict[str, Any]:
        """A transfer of a session this agent is not running right now (a running one
        is handed over by its turn, at its next step boundary, before this arrives)."""

        async def load(tr: Transaction) -> Run | None:
            return await runs.load_run(tr, run_id)

        run = await self.ctx.transact(load)
        if run is None:
            return {"finished": True}
        if run.thread != self.thread:
            return {"handoff": run.thread, "run_id": run.id}  # handed over already
        if run.transfer_to is None:
            return {"finished": run.finished}
        if run.finished:

            async def clear(tr: Transaction) -> None:
                current = await self._load_current(tr, run)
                current.transfer_to = None
                runs.save_run(tr, current)

            await self.ctx.transact(clear)
            return {"finished": True}
        return await self._hand_off(run)

    async def _adopt(self, run: Run) -> Run:
        """Take over a session transferred here: copy its messages from the agent it
        came from into this history (same ids, new places), in one transaction."""
        base = self.next_seq
        me = self.thread

        async def adopt(tr: Transaction) -> tuple[Run, int, str | None]:
            current = await self._load_current(tr, run)
            source = current.history_agent
            if source is None:
                return current, 0, None
            copied: list[Message] = []
            places: dict[int, int] = {}
            if current.first_seq is not None:
                begin = keys.MESSAGES.pack((source, current.first_seq))
                end = keys.prefix_range(keys.MESSAGES.pack((source,)))[1]
                for m in decode_messages(await tr.get_range(begin, end)):
                    if m.run_id == current.id:
                        places[m.seq] = base + len(copied)
                        copied.append(
                            attrs.evolve(
                                m,
                                agent_id=self.agent_id,
                                seq=places[m.seq],
                                conversation_id=self.conversation_id,
                            )
                        )
                current.first_seq = base if copied else None
            await self._store(tr, copied)
            checkpoint = current.checkpoint
            if checkpoint.pending_seq is not None:
                checkpoint.pending_seq = places[checkpoint.pending_seq]
            current.history_agent = None
            runs.save_run(tr, current)
            return current, len(copied), source

        adopted, count, source = await self._checkpointed(adopt)
        self.next_seq = base + count
        if source is not None:
            self.ctx.note("transfer_in", run_id=run.id, peer=source,
                          iteration=adopted.checkpoint.iteration)  # fmt: skip
        self._may_have_open_runs = True  # the session that came may be a paused one
        log.info("agent %s: took over session %s (%d messages)", me, run.id, count)
        return adopted
