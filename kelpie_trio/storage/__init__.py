"""The transactional store: one interface with FoundationDB's semantics, several backends.

    store = MemoryStore()            # or SqliteStore(path), FdbStore(cluster_file)
    async def incr(tr):
        tr.add(key, 1)
    await store.transact(incr)

See base.py for the contract, errors.py for what can go wrong, limits.py for
the sizes every backend enforces, keys.py for the key layout.
"""

from kelpie_trio.storage.base import Store, Transaction, decode_counter
from kelpie_trio.storage.errors import (
    CommitTimedOut,
    CommitUnknownResult,
    KeyTooLarge,
    LimitExceeded,
    NodeFenced,
    NotCommitted,
    RetryLimitReached,
    StorageFull,
    StorageUnavailable,
    StoreClosed,
    StoreError,
    TransactionTimedOut,
    TransactionTooLarge,
    TransactionTooOld,
    ValueTooLarge,
    refused_for_good,
)
from kelpie_trio.storage.memory import MemoryStore

__all__ = [
    "CommitTimedOut",
    "CommitUnknownResult",
    "KeyTooLarge",
    "LimitExceeded",
    "MemoryStore",
    "NodeFenced",
    "NotCommitted",
    "RetryLimitReached",
    "StorageFull",
    "StorageUnavailable",
    "Store",
    "StoreClosed",
    "StoreError",
    "Transaction",
    "TransactionTimedOut",
    "TransactionTooLarge",
    "TransactionTooOld",
    "ValueTooLarge",
    "decode_counter",
    "refused_for_good",
]
