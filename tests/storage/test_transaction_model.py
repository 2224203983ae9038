"""Read-your-writes against a model: any sequence of operations in one transaction
reads what a plain sorted dict would, and commits to exactly that dict."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kelpie_trio.storage import Transaction
from kelpie_trio.storage.base import add_to_value
from tests.storage.conftest import BACKENDS

KEYS = [bytes([c]) for c in b"abcde"]
key = st.sampled_from(KEYS)
value = st.binary(max_size=3)

op = st.one_of(
    st.tuples(st.just("set"), key, value),
    st.tuples(st.just("clear"), key),
    st.tuples(st.just("clear_range"), key, key),
    st.tuples(st.just("add"), key, st.integers(-5, 5)),
    st.tuples(st.just("get"), key),
    st.tuples(st.just("get_range"), key, key, st.integers(0, 4), st.booleans()),
)


def model_range(model: dict[bytes, bytes], begin: bytes, end: bytes, limit: int, reverse: bool):
    items = sorted((k, v) for k, v in model.items() if begin <= k < end)
    if reverse:
        items.reverse()
    return items[:limit] if limit else items


async def apply(tr: Transaction, model: dict[bytes, bytes], operation: tuple) -> None:
    kind = operation[0]
    if kind == "set":
        tr.set(operation[1], operation[2])
        model[operation[1]] = operation[2]
    elif kind == "clear":
        tr.clear(operation[1])
        model.pop(operation[1], None)
    elif kind == "clear_range":
        tr.clear_range(operation[1], operation[2])
        for k in [k for k in model if operation[1] <= k < operation[2]]:
            del model[k]
    elif kind == "add":
        tr.add(operation[1], operation[2])
        model[operation[1]] = add_to_value(model.get(operation[1]), operation[2])
    elif kind == "get":
        assert await tr.get(operation[1]) == model.get(operation[1]), operation
    else:
        _, begin, end, limit, reverse = operation
        got = await tr.get_range(begin, end, limit=limit, reverse=reverse)
        assert got == model_range(model, begin, end, limit, reverse), operation


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    initial=st.dictionaries(key, value, max_size=5),
    operations=st.lists(op, max_size=25),
)
# The edges of the range-read merge, always tried: local clears hiding stored
# keys under a limit, writes inside a cleared range, adds on unseen keys.
@example(
    initial={b"a": b"1", b"b": b"1", b"c": b"1"},
    operations=[("clear", b"a"), ("get_range", b"a", b"e", 2, False)],
)
@example(
    initial={b"a": b"1", b"b": b"1", b"c": b"1"},
    operations=[("clear", b"c"), ("get_range", b"a", b"e", 2, True)],
)
@example(
    initial={b"a": b"1", b"c": b"1", b"d": b"1"},
    operations=[
        ("clear_range", b"a", b"d"),
        ("set", b"b", b"x"),
        ("get_range", b"a", b"e", 2, False),
    ],
)
@example(
    initial={b"b": b"\x01"},
    operations=[("add", b"b", 2), ("add", b"c", -1), ("get_range", b"a", b"e", 0, True)],
)
def test_transaction_reads_and_commits_like_a_sorted_dict(
    backend: str, tmp_path: Path, initial: dict[bytes, bytes], operations: list[tuple]
) -> None:
    directory = tmp_path / f"example{len(list(tmp_path.iterdir()))}"
    directory.mkdir()

    async def main() -> None:
        store = BACKENDS[backend](directory)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            prefix = b"m/"

            async def seed(tr: Transaction) -> None:
                tr.clear_range(prefix, prefix + b"\xff")
                for k, v in initial.items():
                    tr.set(prefix + k, v)

            await store.transact(seed)
            model = {prefix + k: v for k, v in initial.items()}
            tr = store.create_transaction()
            for operation in operations:
                key_positions = (1, 2) if operation[0] in ("clear_range", "get_range") else (1,)
                prefixed = tuple(
                    prefix + x if i in key_positions else x for i, x in enumerate(operation)
                )
                await apply(tr, model, prefixed)
            await tr.commit()

            async def read_all(tr: Transaction) -> list[tuple[bytes, bytes]]:
                return await tr.get_range(prefix, prefix + b"\xff")

            assert await store.transact(read_all) == sorted(model.items())
            nursery.cancel_scope.cancel()
        await store.aclose()

    trio.run(main)
