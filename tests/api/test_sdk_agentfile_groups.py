"""Agent files carry everything (letta-client against a real server, simulated model):

- an agent that manages a sleeptime group is exported with its companion and the group, in
  Letta 0.16.8's shapes, and imports as a paired agent and companion sharing their blocks;
- the agent's other conversations come back with their histories and summaries;
- the file validates against what Letta's reader requires (letta_agent_file_shape.py), so
  Letta imports it; and a file written by hand to Letta's schema, with a sleeptime group,
  messages with tool calls and returns, tools and blocks, imports here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import letta_client
import pytest
from letta_client import Letta

from tests.api.letta_agent_file_shape import letta_shape_problems

LETTA_FILES = Path(__file__).parents[1] / "data" / "letta_agent_files"


def _import(letta: Letta, text: str, **options: Any) -> list[str]:
    made = letta.agents.import_file(file=("a.af", text.encode(), "application/json"), **options)
    return list(made.agent_ids)


def _send(letta: Letta, conversation_id: str, text: str) -> None:
    """A send to a conversation as the SDK makes it: its reply is a stream, read whole."""
    message = {"role": "user", "content": text}
    events = list(letta.conversations.messages.create(conversation_id, messages=[message]))
    assert not [e for e in events if getattr(e, "message_type", None) == "error_message"]


def _texts(messages: Any) -> list[str]:
    return [m.content for m in messages if m.message_type in ("user_message", "assistant_message")]


def test_sdk_round_trip_carries_the_sleeptime_group_and_the_other_conversations(
    letta: Letta,
) -> None:
    ada = letta.agents.create(name="ada-af", enable_sleeptime=True,
                              memory_blocks=[{"label": "human", "value": "Ada"}])  # fmt: skip
    letta.agents.messages.create(ada.id, messages=[{"role": "user", "content": "default?"}])
    tea = letta.conversations.create(agent_id=ada.id, summary="about tea")
    _send(letta, tea.id, "tea?")
    companion = ada.multi_agent_group.agent_ids[0]

    exported = json.loads(letta.agents.export_file(ada.id))
    assert letta_shape_problems(exported) == []
    primary, second = exported["agents"]
    assert (primary["id"], second["id"]) == ("agent-0", "agent-1")
    assert second["agent_type"] == "sleeptime_agent" and second["name"] == "ada-af-sleeptime"
    assert primary["group_ids"] == ["group-0"] and primary["enable_sleeptime"] is False
    [group] = exported["groups"]
    assert group["agent_ids"] == ["agent-1"]
    assert group["manager_config"] == {"manager_type": "sleeptime", "manager_agent_id": "agent-0",
                                       "sleeptime_agent_frequency": 5}  # fmt: skip
    shared = set(primary["block_ids"]) & set(second["block_ids"])
    assert {b["label"] for b in exported["blocks"] if b["id"] in shared} >= {"human"}
    every = [m["id"] for a in exported["agents"] for m in a["messages"]]
    every += [m["id"] for c in primary["conversations"] for m in c["messages"]]
    assert len(every) == len(set(every))  # numbered across the file, as Letta numbers them
    [carried] = primary["conversations"]
    assert carried["summary"] == "about tea"
    assert [m["content"][0]["text"] for m in carried["messages"] if m["role"] == "user"] == ["tea?"]

    copy, copied_companion = _import(letta, json.dumps(exported))
    made = letta.agents.retrieve(copy)
    group_here = made.multi_agent_group
    assert group_here is not None and group_here.manager_agent_id == copy
    assert group_here.agent_ids == [copied_companion] and copied_companion != companion
    assert group_here.sleeptime_agent_frequency == 5 and made.enable_sleeptime is True
    other = letta.agents.retrieve(copied_companion)
    assert other.agent_type == "sleeptime_agent"
    human = next(b for b in made.memory.blocks if b.label == "human")
    assert human.id in {b.id for b in other.memory.blocks}  # one block, held by both
    assert _texts(letta.agents.messages.list(copy, order="asc"))[:1] == ["default?"]
    [conversation] = list(letta.conversations.list(agent_id=copy))
    assert conversation.id != tea.id and conversation.summary == "about tea"
    assert _texts(letta.conversations.messages.list(conversation.id, order="asc"))[:1] == ["tea?"]
    # The copy exports as the original did.
    again = json.loads(letta.agents.export_file(copy))
    assert [a["agent_type"] for a in again["agents"]] == [
        a["agent_type"] for a in exported["agents"]
    ]
    assert again["groups"][0]["manager_config"] == group["manager_config"]
    assert [c["summary"] for c in again["agents"][0]["conversations"]] == ["about tea"]


def test_sdk_a_letta_file_with_a_sleeptime_group_imports(letta: Letta) -> None:
    text = (LETTA_FILES / "sleeptime_group_v2.af").read_text()
    assert letta_shape_problems(json.loads(text)) == []
    primary, companion = _import(letta, text, model="sim/agent", embedding="sim/embedding")
    made = letta.agents.retrieve(primary)
    assert made.name == "kelp" and made.multi_agent_group.agent_ids == [companion]
    assert made.multi_agent_group.sleeptime_agent_frequency == 3
    other = letta.agents.retrieve(companion)
    assert other.agent_type == "sleeptime_agent"
    assert {b.label for b in other.memory.blocks} == {"human", "persona", "memory_persona"}
    assert {t.name for t in made.tools} == {"conversation_search", "water_schedule"}
    assert {t.name for t in other.tools} >= {"memory_finish_edits", "memory_insert"}
    shown = list(letta.agents.messages.list(primary, order="asc"))
    kinds = [m.message_type for m in shown]
    assert kinds == ["user_message", "reasoning_message", "tool_call_message",
                     "tool_return_message", "assistant_message"]  # fmt: skip
    assert shown[2].tool_call.name == "water_schedule"
    assert "every 3 days" in shown[3].tool_return
    # Exported again, it is still a file Letta reads.
    assert letta_shape_problems(json.loads(letta.agents.export_file(primary))) == []


def test_sdk_export_options_one_conversation_or_no_messages_and_import_stripped(
    letta: Letta,
) -> None:
    """Letta's options: `conversation_id` exports that conversation as the agent's messages
    (and no other), `scrub_messages` exports none, `strip_messages` imports none."""
    ada = letta.agents.create(name="ada-options")
    letta.agents.messages.create(ada.id, messages=[{"role": "user", "content": "default?"}])
    tea = letta.conversations.create(agent_id=ada.id, summary="about tea")
    _send(letta, tea.id, "tea?")

    def said(entry: dict[str, Any]) -> list[str]:
        return [m["content"][0]["text"] for m in entry["messages"] if m["role"] == "user"]

    one = json.loads(letta.agents.export_file(ada.id, conversation_id=tea.id))
    assert said(one["agents"][0]) == ["tea?"] and one["agents"][0]["conversations"] == []
    assert letta_shape_problems(one) == []
    scrubbed = json.loads(letta.agents.export_file(ada.id, scrub_messages=True))
    entry = scrubbed["agents"][0]
    assert entry["messages"] == [] and entry["in_context_message_ids"] == []
    assert [(c["summary"], c["messages"]) for c in entry["conversations"]] == [("about tea", [])]
    other = letta.agents.create(name="someone-else")
    with pytest.raises(letta_client.NotFoundError):
        letta.agents.export_file(other.id, conversation_id=tea.id)

    full = letta.agents.export_file(ada.id)
    (copy,) = _import(letta, full, strip_messages=True)
    assert _texts(letta.agents.messages.list(copy)) == []
    [conversation] = list(letta.conversations.list(agent_id=copy))
    assert conversation.summary == "about tea"
    assert _texts(letta.conversations.messages.list(conversation.id)) == []
