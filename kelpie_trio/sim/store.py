"""SimStore: the memory backend behind the fault injector, with crash semantics.

Every node of a `SimWorld` has its own `SimStore` handle on the world's shared
engine. Each store call is a place where the fault table may fire:

- reads: StorageLatency, StorageReadFail, CrashDuringTransaction;
- commits: StorageLatency, StorageWriteFail, StorageFull (the disk stays full for a
  while, every node's commits fail), TransactionConflict,
  CrashBeforeWrite, CrashDuringTransaction (the commit lands or not, never
  half), CommitUnknownResult (the commit lands now, never, or later, after the
  caller has already retried), CrashAfterWrite.

A commit whose caller is cancelled while it is on its way may still land, later
(as with SQLite's batched writer and FoundationDB: cancelling the caller drops
the outcome, not the write): code must never take a cancelled commit for one
that did not happen.

A crashed node is fenced: from that instant every call through its handle,
shielded or not, raises NodeFenced. A commit already in flight is atomic: it
is applied whole or not at all.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import attrs
import trio

from kelpie_trio.sim.faults import FaultType
from kelpie_trio.sim.invariants import (
    Holder,
    history_agents,
    holder_of,
    stale_history_writes,
    unfenced_history_writes,
)
from kelpie_trio.storage import keys
from kelpie_trio.storage.base import CommitRequest
from kelpie_trio.storage.errors import (
    CommitUnknownResult,
    NodeFenced,
    NotCommitted,
    StorageFull,
    StorageUnavailable,
    StoreError,
)
from kelpie_trio.storage.memory import MemoryStore, MemoryTransaction

if TYPE_CHECKING:
    from kelpie_trio.sim.world import SimNode, SimWorld

__all__ = ["LATE_COMMITS_IN_PROCESS", "SimStore", "SimTransaction"]

# Commits sent on to land later, across every world of this process, by why: what a
# sweep reports (tests/dst/conftest.py). Written only, never read by simulated code.
LATE_COMMITS_IN_PROCESS: Counter[str] = Counter()


class SimTransaction(MemoryTransaction):
    _store: SimStore

    def _forget_read_version(self) -> None:
        super()._forget_read_version()
        # The lease holder each agent's lease read showed, for SingleActivation at commit.
        self.leases_read: dict[str, Holder] = {}

    async def _read(self, key: bytes) -> bytes | None:
        await self._store.before_read("get")
        value = await super()._read(key)
        if _LEASES.start <= key < _LEASES.stop:
            self.leases_read.setdefault(keys.LEASES.unpack(key)[0], holder_of(value))
        return value

    async def _read_range(
        self, begin: bytes, end: bytes, limit: int, reverse: bool
    ) -> list[tuple[bytes, bytes]]:
        await self._store.before_read("get_range")
        return await super()._read_range(begin, end, limit, reverse)

    async def _commit(self, request: CommitRequest) -> None:
        await self._store.commit(request, dict(self.leases_read))


_LEASES = keys.LEASES.range()


class SimStore(MemoryStore):
    def __init__(self, world: SimWorld, node: SimNode) -> None:
        super().__init__(node.env, world.engine)
        self.world = world
        self.node = node
        self.commits = 0  # commits applied through this handle

    def create_transaction(self) -> SimTransaction:
        return SimTransaction(self)

    # -- injection points ----------------------------------------------------

    def _fires(self, fault: FaultType, op: str) -> bool:
        fired = self.world.faults.fires(fault, op)
        if fired:
            self.world.trace.record(f"fault {fault.value} node={self.node.id} op={op}")
        return fired

    def _check_fence(self) -> None:
        if self.node.crashed:
            raise NodeFenced(f"node {self.node.id} is fenced off the store")
        if trio.current_time() < self.node.store_cut_until:
            raise StorageUnavailable(f"node {self.node.id} is partitioned from the store")

    def _crash(self, fault: FaultType) -> NodeFenced:
        self.node.crash(fault.value)
        return NodeFenced(f"node {self.node.id} crashed ({fault.value})")

    async def _latency(self, op: str) -> None:
        if self._fires(FaultType.STORAGE_LATENCY, op):
            await trio.sleep(self.world.faults.uniform(0.005, 0.2))
        else:
            await trio.sleep(0.0005)  # a normal store round trip: lets other tasks in
        self._check_fence()

    async def before_read(self, op: str) -> None:
        self._check_fence()
        await self._latency(op)
        if self._fires(FaultType.CRASH_DURING_TRANSACTION, op):
            raise self._crash(FaultType.CRASH_DURING_TRANSACTION)
        if self._fires(FaultType.STORAGE_READ_FAIL, op):
            raise StorageUnavailable(f"injected read failure ({op})")

    async def commit(
        self, request: CommitRequest, leases_read: dict[str, Holder] | None = None
    ) -> None:
        read = leases_read or {}
        self._check_fence()
        try:
            await self._latency("commit")
        except trio.Cancelled:
            self._cancelled_in_flight(request, read)
            raise
        if self._fires(FaultType.CRASH_BEFORE_WRITE, "commit"):
            raise self._crash(FaultType.CRASH_BEFORE_WRITE)
        if self._fires(FaultType.STORAGE_WRITE_FAIL, "commit"):
            raise StorageUnavailable("injected write failure; nothing was written")
        if self._disk_full():
            raise StorageFull("injected: the disk is full; nothing was written")
        if self._fires(FaultType.TRANSACTION_CONFLICT, "commit"):
            raise NotCommitted("injected conflict")
        if self._fires(FaultType.CRASH_DURING_TRANSACTION, "commit"):
            # The node dies with its commit in flight: it lands whole or not at all.
            if self.world.faults.uniform(0, 1) < 0.5:
                self._apply(request, "crash-landed", read)
            raise self._crash(FaultType.CRASH_DURING_TRANSACTION)
        if self._fires(FaultType.COMMIT_UNKNOWN_RESULT, "commit"):
            self._unknown_result(request, read)
            raise CommitUnknownResult("injected: the commit may or may not have landed")
        self._apply(request, "commit", read)
        if self._fires(FaultType.CRASH_AFTER_WRITE, "commit"):
            raise self._crash(FaultType.CRASH_AFTER_WRITE)

    def _disk_full(self) -> bool:
        """A full disk is a state, not a blip: once StorageFull fires, every commit fails
        until someone has made room (a while later, in virtual time)."""
        world = self.world
        if not world.faults.enabled:
            return False
        now = trio.current_time()
        if now < world.disk_full_until:
            return True
        if self._fires(FaultType.STORAGE_FULL, "commit"):
            world.disk_full_until = now + world.faults.uniform(0.2, 2.0)
            return True
        return False

    def _apply(self, request: CommitRequest, how: str, read: dict[str, Holder]) -> None:
        engine = self.world.engine
        latest = engine.read_version()
        stored = {a: holder_of(engine.get(keys.LEASES.pack((a,)), latest))
                  for a in history_agents(request) if a in read}  # fmt: skip
        version = engine.commit(request, self.env.monotonic())
        for problem in stale_history_writes(request, read, stored):  # it landed: superseded?
            self.world.violate(problem)
        for agent in unfenced_history_writes(request):  # it landed: was it fenced?
            self.world.violate(
                f"FencedWrites: node {self.node.id} wrote {agent}'s history "
                "without reading its lease"
            )
        self.commits += 1
        self.world.trace.record(f"{how} node={self.node.id} version={version}")

    def _cancelled_in_flight(self, request: CommitRequest, read: dict[str, Holder]) -> None:
        """The caller gave up on a commit already sent: it lands later, or never."""
        if self.world.faults.uniform(0, 1) < 0.5:
            self.world.trace.record(f"cancelled-lost node={self.node.id}")
            return
        self.world.cancelled_commits_in_flight += 1
        LATE_COMMITS_IN_PROCESS["caller cancelled"] += 1
        self._land_later(request, read)

    def _land_later(self, request: CommitRequest, read: dict[str, Holder]) -> None:
        # Its read version is fixed now, as the cluster would have fixed it.
        if request.read_version is None:
            request = attrs.evolve(request, read_version=self.world.engine.read_version())
        delay = self.world.faults.uniform(0.0, 0.05)
        assert self.world.system_nursery is not None
        self.world.system_nursery.start_soon(self._land_late, request, delay, read)

    def _unknown_result(self, request: CommitRequest, read: dict[str, Holder]) -> None:
        """Land the commit now, never, or later; the caller is told none of it."""
        fate = self.world.faults.uniform(0, 3)
        if fate < 1:
            self._apply(request, "unknown-landed", read)
        elif fate < 2:
            self.world.trace.record(f"unknown-lost node={self.node.id}")
        else:
            LATE_COMMITS_IN_PROCESS["unknown result"] += 1
            # Still in flight: it lands (if it still passes the conflict check)
            # after a delay, possibly after the caller's retry has committed.
            self._land_later(request, read)

    async def _land_late(
        self, request: CommitRequest, delay: float, read: dict[str, Holder]
    ) -> None:
        await trio.sleep(delay)
        try:
            self._apply(request, "unknown-landed-late", read)
        except StoreError as error:
            self.world.trace.record(f"unknown-lost-late node={self.node.id} ({error.code})")
