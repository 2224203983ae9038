"""Agent files carry what an agent knows: its history and window, its archival passages,
its archives (through letta-client against a real server on the simulated model), and a
file exported by Letta 0.16.8 brings its messages here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from letta_client import Letta

LETTA_FILE = Path(__file__).parents[1] / "data" / "letta_agent_files"


def _import(letta: Letta, text: str, **options: Any) -> str:
    made = letta.agents.import_file(file=("a.af", text.encode(), "application/json"), **options)
    (new_id,) = made.agent_ids
    return new_id


def _history(letta: Letta, agent_id: str) -> list[tuple[str, str]]:
    shown = letta.agents.messages.list(agent_id, limit=1000, order="asc")
    found = []
    for m in shown:
        said = getattr(m, "content", None) or getattr(m, "reasoning", None)
        said = said or getattr(m, "tool_return", None) or getattr(m, "tool_call", None)
        found.append((m.message_type, str(said)))
    return found


def _without_times(exported: dict[str, Any]) -> dict[str, Any]:
    exported.pop("created_at")
    for agent in exported["agents"]:
        agent["messages"][0].pop("created_at")  # the system prompt, compiled at export
    return exported


def test_sdk_round_trip_carries_messages_passages_and_archives(letta: Letta) -> None:
    ada = letta.agents.create(
        name="ada-history", memory_blocks=[{"label": "human", "value": "Ada"}]
    )
    for text in ("hello there", "what do you remember?", "tell me about kelp"):
        letta.agents.messages.create(ada.id, messages=[{"role": "user", "content": text}])
    mine = letta.agents.passages.create(ada.id, text="Ada keeps bees", tags=["hobby"])
    archive = letta.archives.create(name="shared facts", description="for the team")
    letta.archives.passages.create(archive.id, text="The kelp farm opens at dawn")
    letta.agents.archives.attach(archive.id, agent_id=ada.id)
    before = _history(letta, ada.id)
    assert len(before) >= 6  # three turns, each a user message and what the agent said

    exported = json.loads(letta.agents.export_file(ada.id))
    entry = exported["agents"][0]
    assert entry["messages"][0]["role"] == "system"
    assert entry["in_context_message_ids"][0] == "message-0"
    assert [p["text"] for p in entry["passages"]] == ["Ada keeps bees"]
    assert entry["archive_ids"] == ["archive-0"]
    assert [p["text"] for p in exported["archives"][0]["passages"]] == [
        "The kelp farm opens at dawn"
    ]

    copy = _import(letta, json.dumps(exported))
    assert _history(letta, copy) == before
    [passage] = letta.agents.passages.list(copy)[:1]
    assert (passage.text, passage.tags) == ("Ada keeps bees", ["hobby"])
    assert passage.id != mine[0].id
    # The archive came as a new archive, attached to the copy, its passage searchable.
    [copied] = list(letta.archives.list(agent_id=copy))
    assert copied.id != archive.id and copied.name == "shared facts"
    found = letta.passages.search(agent_id=copy, query="kelp dawn")
    assert [r.passage.text for r in found] == ["The kelp farm opens at dawn"]
    found = letta.agents.passages.search(copy, query="bees")
    assert [r.content for r in found.results] == ["Ada keeps bees"]
    # The copy's history is searchable too (conversation_search's index).
    # And the copy writes the same file: history, window, passages, archives.
    again = json.loads(letta.agents.export_file(copy))
    assert _without_times(again) == _without_times(exported)
    # The copy goes on talking from where the original was.
    letta.agents.messages.create(copy, messages=[{"role": "user", "content": "still there?"}])
    assert _history(letta, copy)[: len(before)] == before


def test_sdk_a_file_exported_by_letta_brings_its_messages(letta: Letta) -> None:
    text = (LETTA_FILE / "basic_agent_with_messages_v2.af").read_text()
    given = json.loads(text)["agents"][0]
    new_id = _import(letta, text, model="sim/agent", embedding="sim/embedding")
    shown = _history(letta, new_id)
    # Letta's seven messages, less the system prompt heading the window (compiled here).
    kinds = [kind for kind, _ in shown]
    assert kinds.count("user_message") == 2
    assert ("user_message", "Test message for export") in shown
    said = [s for kind, s in shown if kind == "assistant_message"]
    assert "Test message received successfully. Ready for further instructions or queries." in said
    returns = [s for kind, s in shown if kind == "tool_return_message"]
    assert len(returns) == 2
    exported = json.loads(letta.agents.export_file(new_id))["agents"][0]
    # Back out: the window is the system prompt and the six messages, as Letta had it.
    assert len(exported["in_context_message_ids"]) == len(given["in_context_message_ids"])
    assert [m["role"] for m in exported["messages"]] == [m["role"] for m in given["messages"]]
