"""A sans-IO multi-version key-value engine with FDB's conflict rules.

No trio, no clock of its own (callers pass `now`), no threads: the memory store,
the simulator's store and the tests' fake of the fdb binding all drive this one
piece, so they agree on what a conflict is.

Each key keeps its recent versions, so a read at read version `rv` sees exactly
the snapshot at `rv`. A commit is checked against the commits after its read
version: if one of them wrote a key this transaction read, it fails with
NotCommitted (serializable isolation, optimistic, as FDB's resolver does).
History older than the 5 s transaction limit is dropped; a transaction whose
read version falls behind that horizon fails with TransactionTooOld.
"""

from __future__ import annotations

import bisect
from collections import deque

from sortedcontainers import SortedDict

from kelpie_trio.storage.base import CommitRequest, MutationKind, add_to_value
from kelpie_trio.storage.errors import NotCommitted, TransactionTooOld
from kelpie_trio.storage.limits import MAX_TRANSACTION_SECONDS

__all__ = ["MemoryEngine"]


def _overlaps(ranges_a: list[tuple[bytes, bytes]], ranges_b: list[tuple[bytes, bytes]]) -> bool:
    return any(ab < be and bb < ae for ab, ae in ranges_a for bb, be in ranges_b)


class MemoryEngine:
    def __init__(self) -> None:
        # key -> ([versions ascending], [values]); a value of None is a deletion.
        self._data: SortedDict = SortedDict()
        self.version = 0
        # Recent commits, oldest first: (version, time, write ranges, keys written).
        self._log: deque[tuple[int, float, list[tuple[bytes, bytes]], list[bytes]]] = deque()
        self._horizon = 0  # reads below this version may miss history

    # -- reads ---------------------------------------------------------------

    def read_version(self) -> int:
        return self.version

    def _check_horizon(self, read_version: int) -> None:
        if read_version < self._horizon:
            raise TransactionTooOld("read version is older than the retained history")

    @staticmethod
    def _value_at(history: tuple[list[int], list[bytes | None]], rv: int) -> bytes | None:
        versions, values = history
        i = bisect.bisect_right(versions, rv)
        return values[i - 1] if i else None

    def get(self, key: bytes, read_version: int) -> bytes | None:
        self._check_horizon(read_version)
        history = self._data.get(key)
        return None if history is None else self._value_at(history, read_version)

    def get_range(
        self, begin: bytes, end: bytes, limit: int, reverse: bool, read_version: int
    ) -> list[tuple[bytes, bytes]]:
        self._check_horizon(read_version)
        out: list[tuple[bytes, bytes]] = []
        for key in self._data.irange(begin, end, inclusive=(True, False), reverse=reverse):
            value = self._value_at(self._data[key], read_version)
            if value is not None:
                out.append((key, value))
                if limit and len(out) >= limit:
                    break
        return out

    # -- commits -------------------------------------------------------------

    def check(self, request: CommitRequest) -> None:
        """Raise NotCommitted if a commit after the read version wrote what was read."""
        if request.read_version is None or not request.read_ranges:
            return
        self._check_horizon(request.read_version)
        for version, _, write_ranges, _ in reversed(self._log):
            if version <= request.read_version:
                break
            if _overlaps(request.read_ranges, write_ranges):
                raise NotCommitted("a concurrent transaction wrote a key this one read")

    def commit(self, request: CommitRequest, now: float) -> int:
        """Check and apply atomically; returns the commit version."""
        self.check(request)
        self.apply(request, now)
        return self.version

    def apply(self, request: CommitRequest, now: float) -> None:
        """Apply without checking (the check already passed)."""
        self.version += 1
        v = self.version
        written: list[bytes] = []
        for begin, end in request.cleared_ranges:
            for key in list(self._data.irange(begin, end, inclusive=(True, False))):
                if self._latest(key) is not None:
                    self._put(key, v, None)
                    written.append(key)
        for m in request.mutations:
            if m.kind is MutationKind.SET:
                self._put(m.key, v, m.value)
            elif m.kind is MutationKind.CLEAR:
                if self._latest(m.key) is None:
                    continue
                self._put(m.key, v, None)
            else:
                delta = int.from_bytes(m.value, "little")
                self._put(m.key, v, add_to_value(self._latest(m.key), delta))
            written.append(m.key)
        self._log.append((v, now, request.write_ranges(), written))
        self._prune(now)

    def _latest(self, key: bytes) -> bytes | None:
        history = self._data.get(key)
        return history[1][-1] if history else None

    def _put(self, key: bytes, version: int, value: bytes | None) -> None:
        history = self._data.get(key)
        if history is None:
            self._data[key] = ([version], [value])
        elif history[0][-1] == version:
            history[1][-1] = value
        else:
            history[0].append(version)
            history[1].append(value)

    def _prune(self, now: float) -> None:
        # Keep twice the transaction limit of history: a transaction can live 5 s,
        # and its read version is at most that old when it commits.
        cutoff = now - 2 * MAX_TRANSACTION_SECONDS
        while self._log and self._log[0][1] < cutoff:
            version, _, _, written = self._log.popleft()
            self._horizon = version
            for key in written:
                self._compact(key, version)

    def _compact(self, key: bytes, horizon: int) -> None:
        """Drop versions of `key` that no read at or after `horizon` can see."""
        history = self._data.get(key)
        if history is None:
            return
        versions, values = history
        i = bisect.bisect_right(versions, horizon) - 1  # the version visible at horizon
        if i > 0:
            del versions[:i]
            del values[:i]
        if len(values) == 1 and values[0] is None:
            del self._data[key]

    # -- inspection (tests, simulation invariants) ---------------------------

    def snapshot(self) -> dict[bytes, bytes]:
        """The latest committed state, as a plain dict."""
        return {k: h[1][-1] for k, h in self._data.items() if h[1][-1] is not None}
