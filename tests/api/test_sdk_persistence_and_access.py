"""A real server, stopped and started again on its file; and with a password, through the SDK."""

from __future__ import annotations

from pathlib import Path

import letta_client
import pytest
from letta_client import Letta

from tests.api.conftest import running_server


def test_everything_is_there_after_a_restart_on_the_same_file(tmp_path: Path) -> None:
    with running_server(tmp_path) as url, Letta(base_url=url, max_retries=0) as letta:
        block = letta.blocks.create(label="team", value="shared")
        agent = letta.agents.create(
            name="durable", memory_blocks=[{"label": "human", "value": "Ada"}], tags=["keep"]
        )
        letta.agents.blocks.attach(block.id, agent_id=agent.id)
    with running_server(tmp_path) as url, Letta(base_url=url, max_retries=0) as letta:
        again = letta.agents.retrieve(agent.id)
        assert again.name == "durable" and again.tags == ["keep"]
        assert sorted(b.label for b in again.blocks) == ["human", "team"]
        assert letta.blocks.retrieve(block.id).value == "shared"


def test_the_sdk_token_opens_a_password_protected_server(tmp_path: Path) -> None:
    with running_server(tmp_path, "--password", "s3cret") as url:
        with Letta(base_url=url, api_key="s3cret", max_retries=0) as letta:
            assert letta.blocks.create(label="l", value="v").value == "v"
        with (
            Letta(base_url=url, api_key="wrong", max_retries=0) as intruder,
            pytest.raises(letta_client.AuthenticationError),
        ):
            intruder.blocks.list()
