"""Every backend behind one `store` fixture, so one suite proves they agree.

A backend that needs something this machine lacks (a FoundationDB cluster)
skips with that reason; everything else runs everywhere.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from kelpie_trio.storage import MemoryStore, Store


def _memory(tmp_path: Path) -> Store:
    return MemoryStore()


def _sqlite(tmp_path: Path) -> Store:
    from kelpie_trio.storage.sqlite import SqliteStore

    return SqliteStore(tmp_path / "kelpie.db")


def _fdb_fake(tmp_path: Path) -> Store:
    from kelpie_trio.storage.foundationdb import FdbStore
    from tests.storage.fake_fdb import FakeFdbApi

    return FdbStore(cluster_file=None, fdb_api=FakeFdbApi())


def _fdb_real(tmp_path: Path) -> Store:
    from kelpie_trio.storage.foundationdb import FdbStore

    return FdbStore(cluster_file=os.environ["KELPIE_FDB_CLUSTER_FILE"])


def _skip_without_a_cluster() -> None:
    from kelpie_trio.storage.foundationdb import fdb_unavailable_reason

    if not os.environ.get("KELPIE_FDB_CLUSTER_FILE"):
        pytest.skip("no FoundationDB cluster: set KELPIE_FDB_CLUSTER_FILE to run against one")
    reason = fdb_unavailable_reason()
    if reason is not None:  # a cluster was asked for: say why it cannot be reached
        pytest.fail(f"KELPIE_FDB_CLUSTER_FILE is set, but {reason}")


BACKENDS: dict[str, Callable[[Path], Store]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "fdb-fake": _fdb_fake,
    "fdb": _fdb_real,
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    # Skipped here, in a sync fixture: pytest-trio drops the reason of a skip
    # raised inside an async one.
    if request.param == "fdb":
        _skip_without_a_cluster()
    return request.param


@pytest.fixture
async def store(backend: str, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Store]:
    s = BACKENDS[backend](tmp_path)
    await nursery.start(s.run)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
def k() -> Callable[[str], bytes]:
    """Key maker with a prefix of its own per test, so a shared FDB cluster stays clean."""
    prefix = b"t" + os.urandom(6).hex().encode() + b"/"
    return lambda name: prefix + name.encode()
