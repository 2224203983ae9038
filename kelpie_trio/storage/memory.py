"""The in-process store: the engine behind a trio-friendly transaction.

Useful for tests and for `--store memory`; the simulator's store builds on it.
Nothing persists past the process.
"""

from __future__ import annotations

import trio

from kelpie_trio.env import Env, RealEnv
from kelpie_trio.storage.base import BufferedTransaction, CommitRequest, Store
from kelpie_trio.storage.engine import MemoryEngine

__all__ = ["MemoryStore", "MemoryTransaction"]


class MemoryTransaction(BufferedTransaction):
    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        super().__init__(store.env)

    def _forget_read_version(self) -> None:
        self._rv: int | None = None

    def _read_version(self) -> int | None:
        return self._rv

    def _version_for_read(self) -> int:
        if self._rv is None:
            self._rv = self._store.engine.read_version()
        return self._rv

    async def _read(self, key: bytes) -> bytes | None:
        await trio.lowlevel.checkpoint()  # every store call is a scheduling point, as on disk
        return self._store.engine.get(key, self._version_for_read())

    async def _read_range(
        self, begin: bytes, end: bytes, limit: int, reverse: bool
    ) -> list[tuple[bytes, bytes]]:
        await trio.lowlevel.checkpoint()
        return self._store.engine.get_range(begin, end, limit, reverse, self._version_for_read())

    async def _commit(self, request: CommitRequest) -> None:
        await trio.lowlevel.checkpoint()
        self._store.engine.commit(request, self._env.monotonic())


class MemoryStore(Store):
    def __init__(self, env: Env | None = None, engine: MemoryEngine | None = None) -> None:
        self.env = env or RealEnv()
        self.engine = engine or MemoryEngine()

    def create_transaction(self) -> MemoryTransaction:
        return MemoryTransaction(self)
