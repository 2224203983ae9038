"""Store errors, named and numbered after FoundationDB's.

Every backend raises these and only these, so callers (and the retry loop in
`base.py`) treat a conflict on SQLite exactly like a conflict on FDB. `retryable`
says whether the retry loop may run the transaction again.
"""

from __future__ import annotations

__all__ = [
    "CommitTimedOut",
    "CommitUnknownResult",
    "KeyTooLarge",
    "LimitExceeded",
    "NodeFenced",
    "NotCommitted",
    "RetryLimitReached",
    "StorageFull",
    "StorageUnavailable",
    "StoreClosed",
    "StoreError",
    "TransactionTimedOut",
    "TransactionTooLarge",
    "TransactionTooOld",
    "ValueTooLarge",
    "refused_for_good",
]


class StoreError(Exception):
    """Base of every store failure. `code` follows FDB's error codes where one exists."""

    code: int = 4000
    retryable: bool = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)


class NotCommitted(StoreError):
    """Transaction not committed due to a conflict with another transaction."""

    code = 1020
    retryable = True


class CommitUnknownResult(StoreError):
    """The commit may or may not have been applied (connection lost mid-commit)."""

    code = 1021
    retryable = True


class TransactionTooOld(StoreError):
    """Transaction is older than the 5 s limit (or its read version was collected)."""

    code = 1007
    retryable = True


class StorageUnavailable(StoreError):
    """The storage could not serve the operation; nothing was written."""

    code = 4103  # ours: FDB's nearest (1031, transaction_timed_out) is not retryable
    retryable = True


class TransactionTimedOut(StoreError):
    """The store did not finish the transaction, retries included, within its timeout.

    FDB's 1031 transaction_timed_out: the cluster is unreachable (dead coordinators)
    or holding every transaction (a full cluster's ratekeeper). Not retried: the
    timeout already spans every retry, so the caller hears now rather than later.
    """

    code = 1031


class CommitTimedOut(TransactionTimedOut):
    """The timeout ran out while a commit was in flight: it may or may not have landed.

    A late landing is still exactly-once for `Store.transact` (a later attempt would
    find its marker), but this call cannot say which it was.
    """


class StorageFull(StoreError):
    """The storage has no room left for this write; nothing was written.

    Not retried: space comes back only when someone makes room, so retrying
    only delays an answer that will be the same.
    """

    code = 4104  # ours: FDB reports no such error (a full cluster throttles instead)


class LimitExceeded(StoreError, ValueError):
    """A key, value or transaction exceeds FoundationDB's limits."""


class KeyTooLarge(LimitExceeded):
    """Key length exceeds the limit of 10,000 bytes."""

    code = 2102


class ValueTooLarge(LimitExceeded):
    """Value length exceeds the limit of 100,000 bytes (use storage.chunks for more)."""

    code = 2103


class TransactionTooLarge(LimitExceeded):
    """Transaction exceeds the limit of 10,000,000 bytes of mutations and conflict ranges."""

    code = 2101


class NodeFenced(StoreError):
    """This node has been fenced off the store (it crashed, or lost its lease)."""

    code = 4100


class StoreClosed(StoreError):
    """The store has been closed."""

    code = 4101


class RetryLimitReached(StoreError):
    """The transaction kept failing with retryable errors; the last one is the cause."""

    code = 4102


def refused_for_good(error: BaseException) -> bool:
    """Whether trying the same work again cannot help: a size over FoundationDB's limits
    (the request's own fault), a full disk, or a store that did not answer within its
    transaction timeout (which already spans every retry: trying again only makes the
    caller wait another timeout). Such an error is answered at once, not retried by
    `Store.transact` nor by routing or an actor's restarts."""
    return isinstance(error, LimitExceeded | StorageFull | TransactionTimedOut)
