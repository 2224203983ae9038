"""The sweep that drives unfinished runs to their end (a mixin of MessageCases).

A run a crashed node left open, one whose driver failed, or one whose pause is over, is
resumed by a sweep: one read of every open run (and of the sleeptime groups behind, for
turns whose end no look saw), then each due run driven in the background; the agent's
actor goes on from the run's checkpoint; a paused run waits for its time and a parked one
for its client.

An idle node sweeps only when there may be something to find (`keep_runs_going`):

- at start (runs the node's previous incarnation, or anyone, left);
- after a peer's heartbeat is seen to expire: the node records are read every
  `interval` (one short range), and a run of a crashed node is resumed within about
  `interval` of its heartbeat running out (its agents' leases are free from then on);
- `interval` after something on this node may have left a run open or a turn unlooked
  (a driver or an actor that stopped short, a sleeptime look that failed: each calls
  `look_for_open_runs`), or after a commit here paused a run;
- at the earliest pause's end the last sweep saw;
- and every `safety` seconds whatever happened: a net for a cause nobody signalled.

Every one of these used to be a sweep every `interval` seconds, reading every open run
and every sleeptime group's threads.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import trio

from kelpie_trio.agent import runs
from kelpie_trio.agent.runs import Run
from kelpie_trio.errors import ServiceError
from kelpie_trio.nursery import membership
from kelpie_trio.nursery.errors import RuntimeFailure
from kelpie_trio.storage import StoreError
from kelpie_trio.storage.base import Transaction

__all__ = ["ResumeSweep"]

log = logging.getLogger("kelpie_trio.service")

SAFETY_INTERVALS = 30  # the default net: a sweep every 30 intervals (5 minutes at 10 s)


class ResumeSweep:
    # MessageCases': the store, the clock, and how a run is driven in the background.
    store: Any
    env: Any
    dispatcher: Any
    _drive: Any
    _spawn: Any
    sleeptime_sweep: Any
    sleeptime_groups_behind: Any

    async def resume_open_runs(self) -> int:
        """Drive every unfinished run (after a crash or restart) to its end, in the
        background; the agent's actor resumes each after its checkpoint. Returns how
        many were found."""
        found, _ = await self._sweep()
        return found

    async def _sweep(self) -> tuple[int, float | None]:
        """One read of every open run and of the sleeptime groups behind; the due runs are
        driven, the groups looked at. Returns how many runs were due, and the earliest
        end (on the env's clock) of a pause still running, if any."""
        now = self.env.now()

        async def read(tr: Transaction) -> tuple[list[Run], list[str]]:
            rows = await tr.get_prefix(runs.OPEN_RUNS.key())
            found = [await runs.load_run(tr, runs.OPEN_RUNS.unpack(k)[1]) for k, _ in rows]
            behind = await self.sleeptime_groups_behind(tr)
            return [r for r in found if r is not None], behind

        found, behind = await self.store.transact(read)
        due, pauses = [], []
        for r in found:
            if r.parked and not r.cancel_requested:
                continue  # it waits for its client
            if r.checkpoint.is_paused and (r.checkpoint.pause_until or 0) > now:
                pauses.append(r.checkpoint.pause_until or 0)
                continue
            due.append(r)
        for run in due:
            if run.id in self._driving:
                continue
            self._driving.add(run.id)
            self._spawn(self._resume, run)
        if due:
            log.info("%d unfinished run(s): driving them to their end", len(due))
        await self.sleeptime_sweep(behind)  # turns whose end no look saw (sleeptime.py)
        return len(due), min(pauses, default=None)

    def look_for_open_runs(self) -> None:
        """Something on this node may have left a run open (a driver or an actor stopped
        short) or a turn unlooked: the sweep looks `interval` from now. Not at once: a
        run that fails every time is tried again at that pace, not in a loop."""
        self._runs_wake.set()

    @functools.cached_property
    def _runs_wake(self) -> trio.Event:
        return trio.Event()

    async def keep_runs_going(self, interval: float, safety: float | None = None) -> None:
        """Sweep at start, then when there may be something to find (the module's
        docstring says when); `safety` (default `SAFETY_INTERVALS` intervals) bounds the
        time between two sweeps, and `math.inf` leaves only the triggers."""
        safety = interval * SAFETY_INTERVALS if safety is None else safety
        self.store.on_commit(runs.PAUSED, self.look_for_open_runs)
        me = self.dispatcher.node_id if self.dispatcher is not None else None
        expired: frozenset[tuple[str, int]] | None = None  # None: never looked yet
        clock = trio.current_time
        sweep_at = clock()  # at start
        watch_at = clock()
        while True:
            if clock() >= sweep_at:
                try:
                    _, pause_ends = await self._sweep()
                except StoreError as error:
                    log.warning("looking for unfinished runs failed: %r", error)
                    sweep_at = self.env.poll_time(interval)
                else:
                    # A poll ends on the node's next tick (env.Ticks); a pause's end exactly.
                    sweep_at = self.env.poll_time(safety)
                    if pause_ends is not None:  # on the env's clock: as a delay from now
                        sweep_at = min(sweep_at, clock() + max(0.0, pause_ends - self.env.now()))
            if clock() >= watch_at:
                watch_at = self.env.poll_time(interval)
                try:
                    records = await self.store.transact(membership.read_nodes)
                except StoreError as error:  # looked at again in an interval
                    log.warning("reading the node records failed: %r", error)
                else:
                    now_expired = membership.expired_peers(records, me, self.env.now())
                    if expired is not None and now_expired - expired:
                        log.info("heartbeat of %s ran out: looking for the runs it left",
                                 sorted(now_expired - expired))  # fmt: skip
                        sweep_at = clock()
                        expired = now_expired
                        continue
                    expired = now_expired  # those expired at start: the first sweep's
            with trio.move_on_at(min(sweep_at, watch_at)):
                await self._runs_wake.wait()
                self.__dict__["_runs_wake"] = trio.Event()
                sweep_at = min(sweep_at, self.env.poll_time(interval))

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
