"""The official letta-client SDK against a real server: archival memory (agents.passages)."""

from __future__ import annotations

import letta_client
import pytest
from letta_client import Letta

PASSAGE_REQUIRED = {"text", "embedding", "embedding_config"}  # Letta's Passage schema


def test_sdk_inserts_lists_searches_and_deletes_passages(letta: Letta) -> None:
    agent = letta.agents.create(name="sdk-archivist")
    made = letta.agents.passages.create(agent.id, text="Ada's cat is called Miso", tags=["pets"])
    assert len(made) == 1
    passage = made[0]
    assert passage.model_fields_set >= PASSAGE_REQUIRED | {"id", "created_at", "tags"}
    assert passage.id.startswith("passage-") and passage.text == "Ada's cat is called Miso"
    assert passage.created_at is not None and passage.created_at.tzinfo is not None
    other = letta.agents.passages.create(agent.id, text="Ada drinks green tea", tags=["food"])[0]

    listed = letta.agents.passages.list(agent.id)
    assert [p.id for p in listed] == [passage.id, other.id]
    assert [p.id for p in letta.agents.passages.list(agent.id, ascending=False, limit=1)] == [
        other.id
    ]
    assert [p.id for p in letta.agents.passages.list(agent.id, search="miso")] == [passage.id]

    found = letta.agents.passages.search(agent.id, query="cat Miso", tags=["pets", "food"])
    assert found.model_fields_set >= {"count", "results"}
    assert found.count == 1
    result = found.results[0]
    assert result.model_fields_set >= {"id", "content", "timestamp", "tags"}
    assert (result.id, result.content, result.tags) == (passage.id, passage.text, ["pets"])
    all_tags = letta.agents.passages.search(agent.id, query="Ada", tags=["pets", "food"],
                                            tag_match_mode="all")  # fmt: skip
    assert all_tags.count == 0 and all_tags.results == []

    letta.agents.passages.delete(passage.id, agent_id=agent.id)
    assert [p.id for p in letta.agents.passages.list(agent.id)] == [other.id]
    with pytest.raises(letta_client.NotFoundError):
        letta.agents.passages.delete(passage.id, agent_id=agent.id)


def test_sdk_search_with_date_filters(letta: Letta) -> None:
    agent = letta.agents.create(name="sdk-dates")
    letta.agents.passages.create(agent.id, text="winter note", created_at="2025-01-10T10:00:00Z")
    letta.agents.passages.create(agent.id, text="summer note", created_at="2025-07-10T10:00:00Z")
    found = letta.agents.passages.search(
        agent.id, query="note", start_datetime="2025-06-01T00:00:00Z", top_k=10
    )
    assert [r.content for r in found.results] == ["summer note"]


def test_sdk_sees_404_for_an_unknown_agent_and_422_for_missing_text(letta: Letta) -> None:
    with pytest.raises(letta_client.NotFoundError):
        letta.agents.passages.list("agent-00000000-0000-4000-8000-000000000000")
    agent = letta.agents.create(name="sdk-strict")
    with pytest.raises(letta_client.UnprocessableEntityError):
        letta.agents.passages.create(agent.id, text="")
