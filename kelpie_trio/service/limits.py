"""What a request may ask the store to hold, checked before anything is written.

The store enforces FoundationDB's limits (storage/limits.py: key 10,000 bytes, value
100,000, transaction 10,000,000) by refusing a write, which a client would see as an
error from deep inside a use case or an agent's turn. The service checks the sizes
it can know up front here instead, and answers with the field and the limit:

- a string of the client's that becomes part of a store key (a tag, a tool's name,
  a message's otid) has a budget well under the key limit (422);
- one stored record (an agent with all its metadata, a block, a tool) must leave
  room in one transaction for the records written beside it (413), and a block's
  limit must let a full block fit its record (422);
- the text of one send is stored twice when its turn starts (as the run's input and
  as the messages) and the step that answers it must still fit (413).
"""

from __future__ import annotations

from typing import Any

import orjson

from kelpie_trio.errors import Invalid, TooLarge
from kelpie_trio.models import convert
from kelpie_trio.storage.limits import MAX_KEY_BYTES, MAX_TRANSACTION_BYTES

__all__ = [
    "MAX_BLOCK_CHARS",
    "MAX_KEY_PART_BYTES",
    "MAX_RECORD_BYTES",
    "MAX_SEND_BYTES",
    "check_key_part",
    "check_key_parts",
    "check_record",
    "check_send",
    "fits_a_key",
]

MAX_KEY_PART_BYTES = MAX_KEY_BYTES // 10  # the rest of a key: subspace, ids, timestamps
# Two fit in one transaction, as FoundationDB counts it: 2 x 4.5 MB of chunks, plus
# each chunk's key, write conflict range and clear (~200 bytes a 90 kB chunk, ~20 kB
# for both), leaves ~980 kB for the records written beside them.
MAX_RECORD_BYTES = MAX_TRANSACTION_BYTES * 9 // 20
MAX_SEND_BYTES = MAX_TRANSACTION_BYTES // 10
# A block's `limit` (characters): a full block, four UTF-8 bytes a character, still fits
# its record, so memory tools that fill it inside an agent's turn are never refused.
MAX_BLOCK_CHARS = 1_000_000

Loc = list[str | int]


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def fits_a_key(text: str) -> bool:
    """Whether `text` may be part of a store key (a lookup of a longer one finds nothing)."""
    return _size(text) <= MAX_KEY_PART_BYTES


def check_key_part(loc: Loc, text: str, what: str) -> None:
    if not fits_a_key(text):
        raise Invalid.field(
            loc,
            f"{what} has {_size(text):,} bytes; at most {MAX_KEY_PART_BYTES:,} bytes (UTF-8)",
            "string_too_long",
        )


def check_key_parts(loc: Loc, texts: list[str] | None, what: str) -> None:
    for i, text in enumerate(texts or []):
        check_key_part([*loc, i], text, what)


def check_record(record: Any, kind: str, where: str = "body") -> bytes:
    """The record encoded for the store, or TooLarge naming its largest field."""
    encoded = convert.encode_record(record)
    if len(encoded) <= MAX_RECORD_BYTES:
        return encoded
    fields = convert.store.unstructure(record)
    largest = max(fields, key=lambda name: len(orjson.dumps(fields[name]))).rstrip("_")
    raise TooLarge(
        f"{where}.{largest}: the {kind} would take {len(encoded):,} bytes to store (mostly "
        f"{largest}); one {kind} may take at most {MAX_RECORD_BYTES:,} bytes"
    )


def check_send(texts: list[tuple[Loc, str]]) -> None:
    """The texts of one send, its images' data among them (each with where it came from),
    against the send's budget."""
    total = 0
    for loc, text in texts:
        size = _size(text)
        total += size
        if size > MAX_SEND_BYTES:
            raise TooLarge(
                f"{'.'.join(map(str, loc))}: {size:,} bytes; one message may have "
                f"at most {MAX_SEND_BYTES:,} bytes (UTF-8), its images counted"
            )
    if total > MAX_SEND_BYTES:
        raise TooLarge(
            f"body.messages: {total:,} bytes of text and images in one send; at most "
            f"{MAX_SEND_BYTES:,} bytes (UTF-8) together"
        )
