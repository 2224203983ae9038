"""client.agents.recompile: the system prompt the agent's next step sends, with its memory."""

from __future__ import annotations

import json

import letta_client
import pytest
from letta_client import Letta


def test_recompile_answers_the_prompt_with_the_current_memory(letta: Letta) -> None:
    agent = letta.agents.create(
        name="recompiled", system="You are Ada's helper.",
        memory_blocks=[{"label": "human", "value": "Name: Ada"}],
    )  # fmt: skip
    assert isinstance(letta.agents.recompile(agent.id), str)
    letta.agents.blocks.update("human", agent_id=agent.id, value="Name: Ada Lovelace")
    # A JSON string on the wire, as Letta sends it (the SDK hands over the body's text).
    prompt = json.loads(letta.agents.recompile(agent.id, dry_run=True))
    assert prompt.startswith("You are Ada's helper.")
    assert "Name: Ada Lovelace" in prompt and "<human>" in prompt
    with pytest.raises(letta_client.NotFoundError):
        letta.agents.recompile("agent-00000000-0000-4000-8000-000000000000")
