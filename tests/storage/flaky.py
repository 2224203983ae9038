"""A store wrapper whose first commits report an unknown result, for any backend."""

from __future__ import annotations

from kelpie_trio.storage import CommitUnknownResult, Store, StoreError, Transaction


class _FlakyTransaction(Transaction):
    def __init__(self, owner: FlakyCommitStore, inner: Transaction) -> None:
        self._owner = owner
        self._inner = inner

    async def get(self, key):
        return await self._inner.get(key)

    async def get_range(self, begin, end, *, limit=0, reverse=False):
        return await self._inner.get_range(begin, end, limit=limit, reverse=reverse)

    def set(self, key, value):
        self._inner.set(key, value)

    def clear(self, key):
        self._inner.clear(key)

    def clear_range(self, begin, end):
        self._inner.clear_range(begin, end)

    def add(self, key, delta):
        self._inner.add(key, delta)

    def add_read_conflict_key(self, key):
        self._inner.add_read_conflict_key(key)

    @property
    def has_writes(self) -> bool:
        return self._inner.has_writes

    async def commit(self) -> None:
        if self._owner.unknown_commits > 0:
            self._owner.unknown_commits -= 1
            self._owner.unknown_raised += 1
            if self._owner.apply_before_failing:
                await self._inner.commit()
            raise CommitUnknownResult("injected by the test")
        await self._inner.commit()

    async def on_error(self, error: StoreError) -> None:
        await self._inner.on_error(error)


class FlakyCommitStore(Store):
    def __init__(self, inner: Store, *, unknown_commits: int, apply_before_failing: bool) -> None:
        self.inner = inner
        self.env = inner.env
        self.unknown_commits = unknown_commits
        self.apply_before_failing = apply_before_failing
        self.unknown_raised = 0

    def create_transaction(self) -> Transaction:
        return _FlakyTransaction(self, self.inner.create_transaction())
