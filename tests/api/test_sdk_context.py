"""The context window through letta-client on a real node whose agent talks to a scripted
OpenAI-format provider: the overview (`GET /v1/agents/{id}/context`, which the SDK has no
method for, so through the client's own `get`) and `agents.messages.compact`.

The numbers are checked against what the provider really received: the request after
the overview is the overview's messages plus the new user message, so each section is
counted here from that wire request with the context window's counter rule (four
characters a token, four more a message)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import letta_client
import orjson
import pytest
import trio
from letta_client import AsyncLetta

from kelpie_trio.api.app import create_app
from kelpie_trio.config import ServerConfig
from kelpie_trio.nursery.node import run_node
from kelpie_trio.storage import MemoryStore
from tests.llm.fake_providers import FakeProvider, openai_completion, serving

UNKNOWN_AGENT = "agent-00000000-0000-4000-8000-000000000000"
SYSTEM = "You are Ada's helper. Be brief."


def tokens(text: str) -> int:
    return len(text) // 4


def message_tokens(messages: list[dict[str, Any]]) -> int:
    """The counter on wire messages of plain text (what these tests' turns are)."""
    return sum(len(m.get("content") or "") for m in messages) // 4 + 4 * len(messages)


def tool_tokens(tools: list[dict[str, Any]]) -> int:
    chars = sum(
        len(t["function"]["name"]) + len(t["function"].get("description") or "")
        + len(orjson.dumps(t["function"]["parameters"]))
        for t in tools
    )  # fmt: skip
    return chars // 4


@pytest.fixture
async def node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncLetta, FakeProvider]]:
    with trio.fail_after(60):
        async with serving() as fake, trio.open_nursery() as nursery:
            monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
            monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
            stop = trio.Event()
            config = ServerConfig(port=0, db=tmp_path / "k.db", graceful_timeout=1)
            dispatcher = await nursery.start(
                functools.partial(run_node, config, shutdown=stop, handle_signals=False)
            )
            letta = AsyncLetta(base_url=dispatcher.address, max_retries=0)
            yield letta, fake
            await letta.close()
            stop.set()


async def new_agent(letta: AsyncLetta) -> str:
    agent = await letta.agents.create(
        model="openai/gpt-4o-mini", system=SYSTEM,
        memory_blocks=[{"label": "human", "value": "Name: Ada. Likes tea."}],
        tool_rules=[{"type": "max_count_per_step", "tool_name": "memory_insert",
                     "max_count_limit": 2}],
    )  # fmt: skip
    return agent.id


async def talk(letta: AsyncLetta, fake: FakeProvider, agent: str, *texts: str) -> None:
    for text in texts:
        fake.script(openai_completion(f"Noted: {text}."))
        await letta.agents.messages.create(agent, input=text)


async def overview(letta: AsyncLetta, agent: str) -> dict[str, Any]:
    return await letta.get(f"/v1/agents/{agent}/context", cast_to=object)  # type: ignore[arg-type]


async def test_the_overview_counts_what_the_next_step_sends(
    node: tuple[AsyncLetta, FakeProvider],
) -> None:
    letta, fake = node
    agent = await new_agent(letta)
    await talk(letta, fake, agent, "hello", "I like green tea", "and biscuits")
    seen = await overview(letta, agent)
    await talk(letta, fake, agent, "what do I like?")
    sent = fake.received[-1].json  # the step after the overview: its messages + one
    system = sent["messages"][0]["content"]
    history = sent["messages"][1:-1]

    assert seen["messages"][0]["content"][0]["text"] == system
    prompt, _, rest = system.partition("\n\n<memory_blocks>")
    assert seen["system_prompt"] == prompt == SYSTEM
    assert seen["num_tokens_system"] == tokens(prompt)
    core = "<memory_blocks>" + rest[: rest.rindex("</memory_blocks>")] + "</memory_blocks>"
    assert seen["core_memory"] == core and "Likes tea." in core
    assert seen["num_tokens_core_memory"] == tokens(core)
    rules = system[system.index("<tool_usage_rules>") :]  # the agent's rule, in words
    assert seen["tool_usage_rules"] == rules and rules.endswith("</tool_usage_rules>")
    assert seen["num_tokens_tool_usage_rules"] == tokens(rules) > 0
    assert [m["content"][0]["text"] for m in seen["messages"][1:]] == [
        m["content"] for m in history
    ]
    assert seen["num_messages"] == len(sent["messages"]) - 1 == 7
    assert seen["num_tokens_messages"] == message_tokens(history)
    assert seen["functions_definitions"] == sent["tools"]
    assert seen["num_tokens_functions_definitions"] == tool_tokens(sent["tools"])
    assert seen["context_window_size_current"] == (
        message_tokens(sent["messages"][:-1]) + tool_tokens(sent["tools"])
    )  # the system prompt, memory, history and tools: what eviction counts
    assert seen["context_window_size_max"] == 128_000  # gpt-4o-mini's, from the catalog
    assert seen["num_recall_memory"] == 6 and seen["num_archival_memory"] == 0
    assert seen["summary_memory"] is None and seen["num_tokens_summary_memory"] == 0
    assert seen["external_memory_summary"] == "" and seen["num_tokens_external_memory_summary"] == 0


async def test_the_overview_of_an_unknown_agent_is_a_404(
    node: tuple[AsyncLetta, FakeProvider],
) -> None:
    letta, _ = node
    with pytest.raises(letta_client.NotFoundError):
        await overview(letta, UNKNOWN_AGENT)
    agent = await new_agent(letta)
    with pytest.raises(letta_client.NotFoundError):  # no conversation but the default here
        await letta.get(f"/v1/agents/{agent}/context?conversation_id=conv-1", cast_to=object)
    fresh = await overview(letta, agent)
    assert fresh["num_messages"] == 1 and fresh["messages"][0]["role"] == "system"


async def test_compact_summarizes_the_oldest_messages_into_the_next_prompt(
    node: tuple[AsyncLetta, FakeProvider],
) -> None:
    letta, fake = node
    agent = await new_agent(letta)
    await talk(letta, fake, agent, "first topic", "second topic", "third topic", "fourth topic")
    fake.script(openai_completion("Ada covered the first topics."))
    compacted = await letta.agents.messages.compact(agent)

    asked = fake.received[-1].json  # the summary request
    assert "You maintain the memory" in asked["messages"][0]["content"]
    transcript = asked["messages"][1]["content"]
    # 8 in-context messages: the oldest 30 % (3, rounded up) are folded into the summary.
    assert "first topic" in transcript and "Noted: first topic" in transcript
    assert "second topic" in transcript and "Noted: second topic" not in transcript
    assert compacted.summary == "Ada covered the first topics."
    assert (compacted.num_messages_before, compacted.num_messages_after) == (9, 7)

    seen = await overview(letta, agent)
    await talk(letta, fake, agent, "fifth topic")
    sent = fake.received[-1].json
    note = sent["messages"][1]["content"]
    assert "Ada covered the first topics." in note
    assert seen["summary_memory"] == note
    assert seen["num_tokens_summary_memory"] == tokens(note)
    assert seen["num_messages"] == len(sent["messages"]) - 1 == compacted.num_messages_after
    assert sent["messages"][2]["content"] == "Noted: second topic."  # the context starts here
    assert seen["num_recall_memory"] == 8  # the stored history keeps everything


async def test_compact_refuses_what_it_cannot_honour_and_changes_nothing(
    node: tuple[AsyncLetta, FakeProvider],
) -> None:
    letta, fake = node
    agent = await new_agent(letta)
    with pytest.raises(letta_client.NotFoundError):
        await letta.agents.messages.compact(UNKNOWN_AGENT)
    empty = await letta.agents.messages.compact(agent)  # nothing in context: nothing to do
    assert (empty.summary, empty.num_messages_before, empty.num_messages_after) == ("", 1, 1)
    await talk(letta, fake, agent, "hello", "again")
    before = await overview(letta, agent)
    asked = len(fake.received)
    for settings, named in [
        ({"model": "openai/gpt-4.1"}, "model"),
        ({"prompt": "Summarize!"}, "prompt"),
        ({"mode": "self_compact_all"}, "mode"),
        ({"sliding_window_percentage": 1.5}, "sliding_window_percentage"),
    ]:
        with pytest.raises(letta_client.UnprocessableEntityError) as refused:
            await letta.agents.messages.compact(agent, compaction_settings=settings)
        detail = refused.value.body["detail"]  # type: ignore[index]
        assert detail[0]["loc"] == ["body", "compaction_settings", named]
    assert len(fake.received) == asked and await overview(letta, agent) == before
    fake.script(openai_completion("All of it."))
    everything = await letta.agents.messages.compact(
        agent, compaction_settings={"mode": "all", "clip_chars": 3}
    )
    # "all" folds everything but the newest message; the summary is clipped as asked.
    assert (everything.summary, everything.num_messages_after) == ("All", 3)
    with pytest.raises(letta_client.BadRequestError):  # the newest message always stays
        await letta.agents.messages.compact(agent)


async def test_the_overview_is_a_read_that_needs_no_agent_runtime(nursery: trio.Nursery) -> None:
    """On an app without a dispatcher (no actor can run), the overview answers from the
    store alone, and the store is as it was."""
    store = MemoryStore()
    await nursery.start(store.run)
    async with create_app(store).test_app() as app:
        client = app.test_client()
        created = await client.post("/v1/agents/", json={"name": "idle", "system": SYSTEM})
        agent = (await created.get_json())["id"]
        before = store.engine.snapshot()
        response = await client.get(f"/v1/agents/{agent}/context")
        assert response.status_code == 200
        seen = await response.get_json()
        assert seen["system_prompt"] == SYSTEM and seen["num_messages"] == 1
        assert store.engine.snapshot() == before
        refused = await client.post(f"/v1/agents/{agent}/summarize", json={})
        assert refused.status_code == 503  # compaction needs the agent's actor
