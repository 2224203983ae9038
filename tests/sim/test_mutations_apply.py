"""Every named mutation still applies to the code it mutates: a guarantee's code that
moved on leaves its mutation unable to run (`a2a-time-limit` did, unnoticed until a
mutation run), and the guarantee untested by it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kelpie_trio.sim.mutate import MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_each_mutation_changes_exactly_one_place(mutation: Mutation) -> None:
    text = (ROOT / mutation.path).read_text()
    assert text.count(mutation.old) == 1, f"{mutation.name}: update it to {mutation.path}"
    assert mutation.new != mutation.old
