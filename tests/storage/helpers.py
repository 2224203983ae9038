"""One-transaction shorthands shared by the storage tests."""

from __future__ import annotations

from typing import Any

from kelpie_trio.storage import Store, Transaction


async def put(store: Store, items: dict[bytes, bytes]) -> None:
    async def fn(tr: Transaction) -> None:
        for key, value in items.items():
            tr.set(key, value)

    await store.transact(fn)


async def read(store: Store, key: bytes) -> bytes | None:
    async def fn(tr: Transaction) -> bytes | None:
        return await tr.get(key)

    return await store.transact(fn)


async def read_range(
    store: Store, begin: bytes, end: bytes, **kw: Any
) -> list[tuple[bytes, bytes]]:
    async def fn(tr: Transaction) -> list[tuple[bytes, bytes]]:
        return await tr.get_range(begin, end, **kw)

    return await store.transact(fn)


def lone_dispatcher(store: Store, factory: Any) -> Any:
    """A node's dispatcher on `store` alone: one node, so it never forwards."""
    from kelpie_trio.env import RealEnv
    from kelpie_trio.nursery.dispatcher import Dispatcher
    from kelpie_trio.nursery.transport import HttpTransport

    return Dispatcher(
        node_id="node-test",
        address="http://127.0.0.1:9",
        env=RealEnv(),
        store=store,
        factory=factory,
        transport=HttpTransport(),
    )
