"""The checker of what Letta's reader requires accepts Letta's own files and catches what
Letta would refuse (so the export tests that use it are not vacuous)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.api.letta_agent_file_shape import letta_shape_problems

FILES = Path(__file__).parents[1] / "data" / "letta_agent_files"


@pytest.mark.parametrize("name", ["basic_agent_with_messages_v2.af", "sleeptime_group_v2.af"])
def test_letta_files_pass(name: str) -> None:
    assert letta_shape_problems(json.loads((FILES / name).read_text())) == []


def test_what_letta_would_refuse_is_caught() -> None:
    file = json.loads((FILES / "sleeptime_group_v2.af").read_text())
    del file["groups"][0]["description"]
    file["groups"][0]["manager_config"]["manager_agent_id"] = "agent-9"
    file["agents"][0]["messages"][1]["role"] = "robot"
    del file["agents"][0]["messages"][2]["content"]
    file["agents"][1]["in_context_message_ids"].append("message-99")
    file["agents"][1]["block_ids"].append("block-9")
    del file["blocks"][0]["label"]
    del file["sources"]
    problems = letta_shape_problems(file)
    assert problems == ["sources: a list is required"]  # the top level first, alone
    file["sources"] = []
    problems = letta_shape_problems(file)
    assert len(problems) == 7, problems
