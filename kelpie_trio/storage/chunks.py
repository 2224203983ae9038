"""Values beyond FDB's 100 kB value limit, split over consecutive keys.

A blob under `prefix` is stored as `prefix + pack((i,))` for i = 0, 1, ...;
writing replaces every old chunk, so a shorter blob leaves nothing behind.
All chunks go in the caller's transaction, so the 10 MB transaction limit
still bounds a blob (about 9.9 MB with nothing else written).
"""

from __future__ import annotations

from kelpie_trio.storage import keys
from kelpie_trio.storage.base import Transaction

__all__ = ["CHUNK_BYTES", "clear_blob", "get_blob", "prefetch_blob", "set_blob"]

CHUNK_BYTES = 90_000  # under the 100,000-byte value limit, with room to spare


def set_blob(tr: Transaction, prefix: bytes, data: bytes) -> None:
    clear_blob(tr, prefix)
    # An empty blob still gets one (empty) chunk, so it reads back as b"", not None.
    for index, start in enumerate(range(0, max(len(data), 1), CHUNK_BYTES)):
        tr.set(prefix + keys.pack((index,)), data[start : start + CHUNK_BYTES])


async def get_blob(tr: Transaction, prefix: bytes) -> bytes | None:
    begin, end = keys.prefix_range(prefix)
    chunks = await tr.get_range(begin, end)
    if not chunks:
        return None
    return b"".join(value for _, value in chunks)


def prefetch_blob(tr: Transaction, prefix: bytes) -> None:
    """A hint that `get_blob(tr, prefix)` follows (Transaction.prefetch_range)."""
    tr.prefetch_prefix(prefix)


def clear_blob(tr: Transaction, prefix: bytes) -> None:
    tr.clear_range(*keys.prefix_range(prefix))
