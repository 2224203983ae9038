"""FoundationDB's size and time limits, enforced the same way by every backend.

Nothing may work on SQLite or in memory that would fail on FDB, so the checks
live here and every backend's transaction calls them.
"""

from __future__ import annotations

from kelpie_trio.storage.errors import KeyTooLarge, TransactionTooLarge, ValueTooLarge

MAX_KEY_BYTES = 10_000
MAX_VALUE_BYTES = 100_000
MAX_TRANSACTION_BYTES = 10_000_000
MAX_TRANSACTION_SECONDS = 5.0


def check_key(key: bytes) -> None:
    if len(key) > MAX_KEY_BYTES:
        raise KeyTooLarge(f"key of {len(key)} bytes exceeds the limit of {MAX_KEY_BYTES} bytes")


def check_value(value: bytes) -> None:
    if len(value) > MAX_VALUE_BYTES:
        raise ValueTooLarge(
            f"value of {len(value)} bytes exceeds the limit of {MAX_VALUE_BYTES} bytes"
        )


def check_range(begin: bytes, end: bytes, limit: int) -> None:
    check_key(begin)
    check_key(end)
    if limit < 0:
        raise ValueError("limit must be >= 0 (0 means no limit)")


def check_transaction_size(size: int) -> None:
    """`size` as FDB counts it: mutations plus read and write conflict ranges
    (`CommitRequest.size`); FDB refuses only what is strictly over the limit."""
    if size > MAX_TRANSACTION_BYTES:
        raise TransactionTooLarge(
            f"transaction of {size} bytes (its writes and their conflict ranges, as "
            f"FoundationDB counts them) exceeds the limit of {MAX_TRANSACTION_BYTES} bytes"
        )
