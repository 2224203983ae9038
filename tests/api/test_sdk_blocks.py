"""The official letta-client SDK against a real server: blocks."""

from __future__ import annotations

import letta_client
import pytest
from letta_client import Letta


def test_sdk_creates_retrieves_updates_and_deletes_a_block(letta: Letta) -> None:
    block = letta.blocks.create(label="human", value="Name: Ada", limit=200)
    assert {"id", "value", "label", "limit"} <= block.model_fields_set
    assert block.id.startswith("block-") and block.limit == 200
    assert letta.blocks.retrieve(block.id).value == "Name: Ada"
    updated = letta.blocks.update(block.id, value="Name: Ada Lovelace")
    assert updated.value == "Name: Ada Lovelace" and updated.label == "human"
    letta.blocks.delete(block.id)
    with pytest.raises(letta_client.NotFoundError):
        letta.blocks.retrieve(block.id)


def test_sdk_iterates_every_page_and_stops(letta: Letta) -> None:
    made = {letta.blocks.create(label="paged", value=str(i)).id for i in range(7)}
    seen = [b.id for b in letta.blocks.list(label="paged", limit=2)]  # follows ?after=
    assert sorted(seen) == sorted(made) and len(seen) == len(made)


def test_sdk_sees_a_422_for_a_value_over_the_limit(letta: Letta) -> None:
    with pytest.raises(letta_client.UnprocessableEntityError):
        letta.blocks.create(label="human", value="x" * 20, limit=10)
