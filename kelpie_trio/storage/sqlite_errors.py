"""SQLite's failures as store errors: which are retryable, which mean a full disk, and
which doom a whole batch of commits (storage/sqlite.py)."""

from __future__ import annotations

import os
import sqlite3

from kelpie_trio.storage.errors import (
    CommitUnknownResult,
    StorageFull,
    StorageUnavailable,
    StoreError,
)

__all__ = [
    "SQLITE_BUSY",
    "SQLITE_FULL",
    "commit_unknown",
    "fails_the_batch",
    "map_error",
    "primary_code",
]

# Primary result codes after which the same operation may well succeed later
# (another process holds the lock; the disk hiccuped). A full disk is not among
# them: it heals only when someone makes room (StorageFull). Anything else (a
# corrupt file, a schema error, a read-only file) will not heal by retrying, so
# it surfaces as a plain, non-retryable StoreError.
SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_NOMEM = 5, 6, 7
_SQLITE_IOERR, SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_PROTOCOL = 10, 13, 14, 15
_TRANSIENT = {
    SQLITE_BUSY,
    _SQLITE_LOCKED,
    _SQLITE_NOMEM,
    _SQLITE_IOERR,
    _SQLITE_CANTOPEN,
    _SQLITE_PROTOCOL,
}
# SQLite reports ENOSPC from write() as SQLITE_FULL, but from the other calls that
# grow a file (ftruncate of the -shm, fallocate, fsync on some file systems) as one
# of its SQLITE_IOERR_* codes; with less room than this left, such an error is
# taken for a full disk.
_LOW_SPACE_BYTES = 1 << 20


def primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _free_bytes(path: str) -> int | None:
    try:
        stats = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _disk_full(exc: sqlite3.Error, path: str | None) -> bool:
    """Whether `exc` says the file system holding `path` has no room left."""
    primary = primary_code(exc)
    if primary == SQLITE_FULL:
        return True
    if primary != _SQLITE_IOERR or path is None:
        return False
    free = _free_bytes(path)
    return free is not None and free < _LOW_SPACE_BYTES


def map_error(exc: sqlite3.Error, *, what: str, path: str | None = None) -> StoreError:
    """A store error for an sqlite3 failure after which nothing was written."""
    name = getattr(exc, "sqlite_errorname", type(exc).__name__)
    if _disk_full(exc, path):
        error: StoreError = StorageFull(
            f"the disk holding the SQLite store is full: could not {what} ({name}); "
            "nothing was written"
        )
    elif isinstance(exc, sqlite3.OperationalError) and primary_code(exc) in _TRANSIENT:
        error = StorageUnavailable(f"SQLite could not {what} ({name}: {exc})")
    else:
        error = StoreError(f"SQLite failed to {what} ({name}: {exc})")
    error.__cause__ = exc
    return error


def commit_unknown(exc: sqlite3.Error) -> StoreError:
    error = CommitUnknownResult(f"SQLite failed during COMMIT: {exc}")
    error.__cause__ = exc
    return error


def fails_the_batch(exc: Exception) -> bool:
    """Whether an error while applying one transaction dooms the whole batch.

    After I/O errors, a full disk, a busy or corrupt file, SQLite may already
    have rolled back the whole transaction, and the rest of the batch cannot be
    trusted either. Other errors (a constraint, a value too big, a bug in one
    transaction's data) stay with that transaction: its SAVEPOINT undoes it (or, alone
    in its batch, the batch's rollback).
    """
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError
