"""The sweep that drives unfinished runs to their end (a mixin of MessageCases).

A run a crashed node left open, or one whose background driver failed, is resumed by
whichever node looks next: every node looks at start and then every `interval` seconds.
The agent's actor goes on from the run's checkpoint; a paused run waits for its time and
a parked one for its client.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from kelpie_trio.agent import runs
from kelpie_trio.agent.runs import Run
from kelpie_trio.errors import ServiceError
from kelpie_trio.nursery.errors import RuntimeFailure
from kelpie_trio.storage import StoreError
from kelpie_trio.storage.base import Transaction

__all__ = ["ResumeSweep"]

log = logging.getLogger("kelpie_trio.service")


class ResumeSweep:
    # MessageCases': the store, the clock, and how a run is driven in the background.
    store: Any
    env: Any
    _drive: Any
    _spawn: Any
    sleeptime_sweep: Any

    async def resume_open_runs(self) -> int:
        """Drive every unfinished run (after a crash or restart) to its end, in the
        background; the agent's actor resumes each after its checkpoint. Returns how
        many were found."""

        now = self.env.now()

        async def read(tr: Transaction) -> list[Run]:
            rows = await tr.get_prefix(runs.OPEN_RUNS.key())
            found = [await runs.load_run(tr, runs.OPEN_RUNS.unpack(k)[1]) for k, _ in rows]
            return [r for r in found if r is not None]

        found = await self.store.transact(read)
        due = [
            r for r in found
            if not (r.checkpoint.is_paused and (r.checkpoint.pause_until or 0) > now)
            and not (r.parked and not r.cancel_requested)  # it waits for its client
        ]  # fmt: skip
        for run in due:
            if run.id in self._driving:
                continue
            self._driving.add(run.id)
            self._spawn(self._resume, run)
        return len(due)

    async def keep_runs_going(self, interval: float) -> None:
        """Resume unfinished runs now and every `interval` seconds: those a crashed
        node left behind, and those whose background driver failed."""
        while True:
            try:
                found = await self.resume_open_runs()
                if found:
                    log.info("%d unfinished run(s): driving them to their end", found)
                await self.sleeptime_sweep()  # turns whose end no look saw (sleeptime.py)
            except StoreError as error:
                log.warning("looking for unfinished runs failed: %r", error)
            await self.env.sleep(interval)

    @functools.cached_property
    def _driving(self) -> set[str]:
        return set()

    async def _resume(self, run: Run) -> None:
        try:
            await self._drive(run)
        except (ServiceError, RuntimeFailure, StoreError) as error:
            log.warning("resuming run %s of agent %s failed: %r", run.id, run.agent_id, error)
        finally:
            self._driving.discard(run.id)
