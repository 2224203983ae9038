"""Archival memory search through the official letta-client, against a real server.

The server runs the search layer as in production: the indexer in the node's
nursery, the index warmed from the store at start, every search caught up
with the writes before it (read-your-writes).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from letta_client import Letta

from tests.api.conftest import running_server


@pytest.fixture(scope="module")
def letta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Letta]:
    with running_server(tmp_path_factory.mktemp("search")) as url:
        client = Letta(base_url=url, max_retries=0)
        yield client
        client.close()


def test_sdk_archival_insert_search_delete_sees_each_write_at_once(letta: Letta) -> None:
    agent = letta.agents.create(name="sdk-search")
    other = letta.agents.create(name="sdk-search-other")
    letta.agents.passages.create(other.id, text="The lighthouse keeper's boat is red.")
    texts = [
        "The lighthouse on the north cape was automated in 1987.",
        "Ada keeps her bicycle in the shed behind the house.",
        "Lighthouse keepers used to log the weather every four hours.",
    ]
    made = [letta.agents.passages.create(agent.id, text=t)[0] for t in texts]

    found = letta.agents.passages.search(agent.id, query="lighthouse keepers", top_k=5)
    contents = [r.content for r in found.results]
    assert contents[0] == texts[2]  # both words ("keepers" meets "keeps" too: stemming)
    assert sorted(contents) == sorted(texts)  # never the other agent's passage

    letta.agents.passages.delete(made[2].id, agent_id=agent.id)
    found = letta.agents.passages.search(agent.id, query="lighthouse keepers", top_k=5)
    assert texts[2] not in [r.content for r in found.results]  # gone at once
    assert {r.id for r in found.results} == {made[0].id, made[1].id}
