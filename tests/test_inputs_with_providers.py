"""What a send may carry beyond text, through letta-client, against the strict scripted
providers: image parts reach the model in each API's own shape and come back in the
user_message as sent; a model that takes no images, an image type no provider takes, or an
image over the send's budget is refused before anything is stored."""

from __future__ import annotations

import base64
from typing import Any

import letta_client
import pytest
from letta_client import AsyncLetta

from kelpie_trio.service.limits import MAX_SEND_BYTES
from tests.llm.fake_providers import (
    FakeProvider,
    Reply,
    anthropic_message,
    anthropic_stream,
    openai_completion,
    openai_stream,
)
from tests.test_tool_rules_with_providers import ANTHROPIC, OPENAI, node

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake pixels").decode()
URL = "https://example.com/cat.png"


def image_message(*parts: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def b64_image(data: str = PNG, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def url_image(url: str = URL) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "url", "url": url}}


def last_user(fake: FakeProvider, i: int = 0) -> dict[str, Any]:
    return [m for m in fake.received[i].json["messages"] if m["role"] == "user"][-1]


async def test_images_reach_openai_as_image_url_parts_in_order(tmp_path, monkeypatch) -> None:
    async with node(tmp_path, monkeypatch, openai_completion("A cat.")) as (fake, letta):
        agent = await letta.agents.create(model=OPENAI)
        sent = image_message(text("What is this?"), b64_image(), url_image())
        reply = await letta.agents.messages.create(agent.id, messages=sent)
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    assert fake.refused == []
    assert last_user(fake)["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": URL}},
    ]
    assert reply.messages[-1].content == "A cat."
    (user,) = [m for m in history if m.message_type == "user_message"]
    shown = [p.model_dump() for p in user.content]
    assert [p["type"] for p in shown] == ["text", "image", "image"]
    assert shown[0]["text"] == "What is this?"
    assert shown[1]["source"]["data"] == PNG and shown[1]["source"]["media_type"] == "image/png"
    assert shown[2]["source"] == {"type": "url", "url": URL}


async def test_a_data_url_image_is_sent_as_base64(tmp_path, monkeypatch) -> None:
    async with node(tmp_path, monkeypatch, anthropic_message("A cat.")) as (fake, letta):
        agent = await letta.agents.create(model=ANTHROPIC)
        sent = image_message(url_image(f"data:image/webp;base64,{PNG}"), text("and this?"))
        await letta.agents.messages.create(agent.id, messages=sent)
    (image, words) = last_user(fake)["content"]
    source = {"type": "base64", "media_type": "image/webp", "data": PNG}
    assert image == {"type": "image", "source": source}
    assert words == {"type": "text", "text": "and this?"}


async def test_images_reach_anthropic_as_image_blocks(tmp_path, monkeypatch) -> None:
    async with node(tmp_path, monkeypatch, anthropic_message("Two cats.")) as (fake, letta):
        agent = await letta.agents.create(model=ANTHROPIC)
        sent = image_message(b64_image(media_type="image/jpeg"), url_image(), text("Compare."))
        reply = await letta.agents.messages.create(agent.id, messages=sent)
    assert fake.refused == []
    assert last_user(fake)["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": URL}},
        {"type": "text", "text": "Compare."},
    ]
    assert reply.messages[-1].content == "Two cats."


async def test_a_model_without_images_is_refused_before_anything_is_stored(
    tmp_path, monkeypatch
) -> None:
    async with node(tmp_path, monkeypatch, openai=("gpt-3.5-turbo",)) as (fake, letta):
        agent = await letta.agents.create(model="openai/gpt-3.5-turbo")
        with pytest.raises(letta_client.UnprocessableEntityError) as error:
            await letta.agents.messages.create(agent.id, messages=image_message(b64_image()))
        with pytest.raises(letta_client.UnprocessableEntityError) as streamed:
            await letta.agents.messages.create_async(agent.id, messages=image_message(b64_image()))
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
        runs = [r async for r in letta.runs.list(agent_ids=[agent.id])]
    (detail,) = error.value.body["detail"]
    assert detail["loc"] == ["body", "messages", 0, "content"]
    assert "does not take images" in detail["msg"] and "gpt-3.5-turbo" in detail["msg"]
    assert streamed.value.body["detail"][0]["loc"] == ["body", "messages", 0, "content"]
    assert history == [] and runs == [] and fake.received == []


async def test_an_image_type_no_provider_takes_is_refused_by_field(tmp_path, monkeypatch) -> None:
    async with node(tmp_path, monkeypatch) as (fake, letta):
        agent = await letta.agents.create(model=OPENAI)
        refused = {}
        for name, part in [
            ("tiff", b64_image(media_type="image/tiff")),
            ("not base64", b64_image(data="not base64!")),
            ("file url", url_image("file:///etc/passwd")),
            ("letta", {"type": "image", "source": {"type": "letta", "file_id": "file-1"}}),
            ("audio", {"type": "audio", "data": "x"}),
        ]:
            with pytest.raises(letta_client.UnprocessableEntityError) as error:
                await letta.agents.messages.create(agent.id, messages=image_message(part))
            refused[name] = error.value.body["detail"][0]["loc"][4:]
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    assert refused == {
        "tiff": [0, "source", "media_type"],
        "not base64": [0, "source", "data"],
        "file url": [0, "source", "url"],
        "letta": [0, "source", "type"],
        "audio": [0, "type"],
    }
    assert history == [] and fake.received == []


async def test_an_image_over_the_send_budget_is_a_413_naming_it(tmp_path, monkeypatch) -> None:
    big = base64.b64encode(b"\0" * (MAX_SEND_BYTES // 4 * 3 + 3)).decode()
    async with node(tmp_path, monkeypatch) as (fake, letta):
        agent = await letta.agents.create(model=OPENAI)
        with pytest.raises(letta_client.APIStatusError) as error:
            await letta.agents.messages.create(
                agent.id, messages=image_message(text("look"), b64_image(big))
            )
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    assert error.value.status_code == 413
    assert error.value.body["detail"].startswith("body.messages.0.content.1.source.data:")
    assert history == [] and fake.received == []


async def test_a_large_image_under_the_budget_is_stored_once_and_sent(
    tmp_path, monkeypatch
) -> None:
    # Several times a store value's limit (100 kB): the message and the run are chunked.
    data = base64.b64encode(bytes(range(256)) * 1_200).decode()
    script = [openai_completion("Big."), openai_completion("Again.")]
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(model=OPENAI)
        await letta.agents.messages.create(agent.id, messages=image_message(b64_image(data)))
        await letta.agents.messages.create(agent.id, input="and now?")
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    users = [m for m in history if m.message_type == "user_message"]
    assert users[0].content[0].source.data == data
    # The second step's request carries the image from the stored history.
    sent = [m for m in fake.received[1].json["messages"] if m["role"] == "user"]
    assert sent[0]["content"][0]["image_url"]["url"] == f"data:image/png;base64,{data}"


# -- system-role input messages ------------------------------------------------------------


SYSTEM_THEN_USER = [
    {"role": "system", "content": "The user is on a phone."},
    {"role": "user", "content": "hi"},
]


async def test_a_system_message_is_stored_and_sent_where_it_was_sent(tmp_path, monkeypatch) -> None:
    script = [openai_completion("Hello."), openai_completion("Again.")]
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(model=OPENAI)
        reply = await letta.agents.messages.create(agent.id, messages=SYSTEM_THEN_USER)
        await letta.agents.messages.create(agent.id, input="still there?")
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    sent = fake.received[0].json["messages"]
    assert [m["role"] for m in sent] == ["system", "system", "user"]
    assert sent[1]["content"] == "The user is on a phone." and sent[2]["content"] == "hi"
    assert "The user is on a phone." not in sent[0]["content"]  # not folded into the prompt
    # It stays in the history the next turn sees.
    assert [m["role"] for m in fake.received[1].json["messages"]] == [
        "system", "system", "user", "assistant", "user"]  # fmt: skip
    assert reply.messages[-1].content == "Hello."
    shown = [(m.message_type, getattr(m, "content", None)) for m in history]
    assert shown[:2] == [("system_message", "The user is on a phone."), ("user_message", "hi")]


async def test_anthropic_gets_a_system_message_as_an_alert_in_the_user_turn(
    tmp_path, monkeypatch
) -> None:
    async with node(tmp_path, monkeypatch, anthropic_message("Hello.")) as (fake, letta):
        agent = await letta.agents.create(model=ANTHROPIC, system="You are kind.")
        await letta.agents.messages.create(agent.id, messages=SYSTEM_THEN_USER)
    body = fake.received[0].json
    assert fake.refused == []
    assert body["system"].startswith("You are kind.") and "phone" not in body["system"]
    (turn,) = body["messages"]
    assert turn["content"] == [
        {"type": "text", "text": "<event>SYSTEM ALERT: The user is on a phone.</event>"},
        {"type": "text", "text": "hi"},
    ]


async def test_other_roles_and_images_in_system_messages_are_refused(tmp_path, monkeypatch) -> None:
    async with node(tmp_path, monkeypatch) as (fake, letta):
        agent = await letta.agents.create(model=OPENAI)
        refused = []
        for message in [
            {"role": "system", "content": [text("see"), url_image()]},
            {"role": "assistant", "content": "I said so."},
        ]:
            with pytest.raises(letta_client.UnprocessableEntityError) as error:
                await letta.agents.messages.create(agent.id, messages=[message])
            refused.append(error.value.body["detail"][0]["loc"])
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    assert refused == [["body", "messages", 0, "content"], ["body", "messages", 0, "role"]]
    assert history == [] and fake.received == []


# -- override_model --------------------------------------------------------------------------


async def test_override_model_runs_one_send_on_another_model(tmp_path, monkeypatch) -> None:
    script = [anthropic_message("From Claude."), openai_completion("From GPT.")]
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(model=OPENAI)
        once = await letta.agents.messages.create(agent.id, input="hi", override_model=ANTHROPIC)
        again = await letta.agents.messages.create(agent.id, input="hi again")
        after = await letta.agents.retrieve(agent.id)
    assert [r.path for r in fake.received] == ["/v1/messages", "/v1/chat/completions"]
    assert fake.received[0].json["model"] == "claude-sonnet-4-5-20250929"
    assert fake.received[1].json["model"] == "gpt-4o-mini"
    assert (once.messages[-1].content, again.messages[-1].content) == ("From Claude.", "From GPT.")
    assert after.model == OPENAI  # the agent's own model is unchanged


async def test_an_unknown_override_model_is_refused_as_agent_create_refuses_it(
    tmp_path, monkeypatch
) -> None:
    async with node(tmp_path, monkeypatch) as (fake, letta):
        agent = await letta.agents.create(model=OPENAI)
        with pytest.raises(letta_client.UnprocessableEntityError) as refused:
            await letta.agents.messages.create(agent.id, input="hi", override_model="openai/nope")
        with pytest.raises(letta_client.UnprocessableEntityError) as created:
            await letta.agents.create(model="openai/nope")
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    (detail,) = refused.value.body["detail"]
    assert detail["loc"] == ["body", "override_model"]
    assert detail["msg"] == created.value.body["detail"][0]["msg"]
    assert history == [] and fake.received == []


async def test_images_are_judged_by_the_override_model(tmp_path, monkeypatch) -> None:
    async with node(tmp_path, monkeypatch, openai=("gpt-3.5-turbo",)) as (fake, letta):
        agent = await letta.agents.create(model=OPENAI)
        with pytest.raises(letta_client.UnprocessableEntityError) as refused:
            await letta.agents.messages.create(
                agent.id, messages=image_message(b64_image()),
                override_model="openai/gpt-3.5-turbo",
            )  # fmt: skip
    assert "gpt-3.5-turbo" in refused.value.body["detail"][0]["msg"]
    assert fake.received == []


# -- reasoning ---------------------------------------------------------------------------------


async def test_an_openai_reasoning_model_shows_its_reasoning_as_hidden(
    tmp_path, monkeypatch
) -> None:
    script = [openai_completion("Thought about it."), openai_completion("Plain.")]
    async with node(tmp_path, monkeypatch, *script, openai=("o3",)) as (_, letta):
        agent = await letta.agents.create(model="openai/o3")
        reply = await letta.agents.messages.create(agent.id, input="think")
        plain = await letta.agents.create(model=OPENAI)
        other = await letta.agents.messages.create(plain.id, input="think")
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
        with pytest.raises(letta_client.UnprocessableEntityError) as refused:
            await letta.agents.messages.create(
                agent.id, input="x", extra_body={"enable_thinking": "false"}
            )
    _, hidden, said = reply.messages
    assert (hidden.message_type, hidden.state, hidden.hidden_reasoning) == (
        "hidden_reasoning_message", "omitted", None)  # fmt: skip
    assert said.message_type == "assistant_message" and hidden.id == said.id
    assert [m.message_type for m in other.messages] == ["user_message", "assistant_message"]
    assert [m.message_type for m in history] == [
        "user_message", "hidden_reasoning_message", "assistant_message"]  # fmt: skip
    assert "model_settings" in refused.value.body["detail"][0]["msg"]


async def test_a_token_stream_shows_the_hidden_reasoning_first_and_once(
    tmp_path, monkeypatch
) -> None:
    script = [openai_stream(["Thought ", "about it."], model="o3")]
    async with node(tmp_path, monkeypatch, *script, openai=("o3",)) as (_, letta):
        agent = await letta.agents.create(model="openai/o3")
        events = [e async for e in await letta.agents.messages.create(
            agent.id, input="think", streaming=True, stream_tokens=True)]  # fmt: skip
    kinds = [e.message_type for e in events if e.message_type != "ping"]
    assert kinds == ["user_message", "hidden_reasoning_message", "assistant_message",
                     "assistant_message", "stop_reason", "usage_statistics"]  # fmt: skip


# -- compaction messages ---------------------------------------------------------------------


async def compacting_turns(letta: AsyncLetta, **options: Any) -> list[list[Any]]:
    """Long messages to an agent with a small window, until its history is compacted."""
    agent = await letta.agents.create(model=OPENAI, context_window_limit=6_000)
    turns = []
    for i in range(4):
        reply = await letta.agents.messages.create(
            agent.id, input=f"topic {i}: " + "words " * 1_000, **options
        )
        turns.append(reply.messages)
    return turns


async def test_a_compaction_shows_as_event_and_summary_messages_when_asked(
    tmp_path, monkeypatch
) -> None:
    script = [openai_completion("Noted.")] * 6
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        turns = await compacting_turns(letta, include_compaction_messages=True)
    summaries = [r for r in fake.received if "You maintain the memory" in str(r.json)]
    assert len(summaries) == 1  # one compaction in these turns
    (compacted,) = [t for t in turns if any(m.message_type == "summary_message" for m in t)]
    assert [m.message_type for m in compacted] == [
        "user_message", "event_message", "summary_message", "assistant_message"]  # fmt: skip
    _, event, summary, _ = compacted
    assert event.event_type == "compaction"
    assert event.event_data["trigger"] == "context_window_exceeded"
    assert event.event_data["context_window"] == 6_000
    assert summary.summary == "Noted."
    stats = summary.compaction_stats
    assert stats.context_tokens_after < stats.context_tokens_before
    assert stats.messages_count_after < stats.messages_count_before


async def test_a_compaction_is_not_shown_unless_asked(tmp_path, monkeypatch) -> None:
    script = [openai_completion("Noted.")] * 6
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        turns = await compacting_turns(letta)
    assert any("You maintain the memory" in str(r.json) for r in fake.received)
    shown = {m.message_type for t in turns for m in t}
    assert shown == {"user_message", "assistant_message"}


# -- Anthropic extended thinking -------------------------------------------------------------


def thinking_reply(thought: str, signature: str, **fields: Any) -> Reply:
    reply = anthropic_message(**fields)
    block = {"type": "thinking", "thinking": thought, "signature": signature}
    reply.json["content"].insert(0, block)
    return reply


async def test_an_anthropic_reasoner_thinks_and_gets_its_signed_thinking_back(
    tmp_path, monkeypatch
) -> None:
    script = [
        thinking_reply("Ada likes tea; note it.", "sig-1",
                       tool_uses=[("t1", "memory_insert", {"label": "human",
                                                           "new_string": "Likes tea."})]),
        thinking_reply("Saved.", "sig-2", text="Noted."),
    ]  # fmt: skip
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=ANTHROPIC, memory_blocks=[{"label": "human", "value": "Ada"}]
        )
        reply = await letta.agents.messages.create(agent.id, input="I like tea")
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    assert fake.refused == []
    first, second = (r.json for r in fake.received)
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert "temperature" not in first and first["tool_choice"] == {"type": "auto"}
    (assistant,) = [m for m in second["messages"] if m["role"] == "assistant"]
    thought = {"type": "thinking", "thinking": "Ada likes tea; note it.", "signature": "sig-1"}
    assert assistant["content"][0] == thought
    assert second["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    thoughts = [m for m in reply.messages if m.message_type == "reasoning_message"]
    assert [(t.reasoning, t.source, t.signature) for t in thoughts] == [
        ("Ada likes tea; note it.", "reasoner_model", "sig-1"),
        ("Saved.", "reasoner_model", "sig-2"),
    ]
    assert [m.message_type for m in history if m.message_type == "reasoning_message"] == [
        "reasoning_message", "reasoning_message"]  # fmt: skip


async def test_a_forced_tool_turns_thinking_off_for_its_loop(tmp_path, monkeypatch) -> None:
    script = [
        anthropic_message(tool_uses=[("t1", "conversation_search", {"query": "x"})]),
        anthropic_message("Found nothing."),
        thinking_reply("A new question.", "sig-3", text="Hello."),
    ]
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(
            model=ANTHROPIC, tool_rules=[{"type": "run_first", "tool_name": "conversation_search"}]
        )
        await letta.agents.messages.create(agent.id, input="hi")
        await letta.agents.update(agent.id, tool_rules=[])
        await letta.agents.messages.create(agent.id, input="and now?")
    assert fake.refused == []
    forced, loop, later = (r.json for r in fake.received)
    assert forced["tool_choice"]["type"] == "tool" and "thinking" not in forced
    assert "thinking" not in loop  # its loop began without thinking: the API would refuse
    assert later["thinking"] == {"type": "enabled", "budget_tokens": 1024}


async def test_an_agent_without_reasoning_does_not_think(tmp_path, monkeypatch) -> None:
    async with node(tmp_path, monkeypatch, anthropic_message("Hi.")) as (fake, letta):
        agent = await letta.agents.create(model=ANTHROPIC, reasoning=False)
        await letta.agents.messages.create(agent.id, input="hi")
    assert "thinking" not in fake.received[0].json


async def test_a_token_stream_shows_thinking_as_reasoning_deltas(tmp_path, monkeypatch) -> None:
    script = [anthropic_stream(["Hel", "lo."], thinking=(["Greet ", "them."], "sig-s"))]
    async with node(tmp_path, monkeypatch, *script) as (fake, letta):
        agent = await letta.agents.create(model=ANTHROPIC)
        events = [e async for e in await letta.agents.messages.create(
            agent.id, input="hi", streaming=True, stream_tokens=True)]  # fmt: skip
        history = [m async for m in letta.agents.messages.list(agent.id, order="asc")]
    assert fake.refused == [] and fake.received[0].json["thinking"]["type"] == "enabled"
    said = ("reasoning_message", "assistant_message")
    shown = [(e.message_type, getattr(e, "reasoning", None) or getattr(e, "content", None))
             for e in events if e.message_type in said]  # fmt: skip
    assert shown == [("reasoning_message", "Greet "), ("reasoning_message", "them."),
                     ("assistant_message", "Hel"), ("assistant_message", "lo.")]  # fmt: skip
    (stored,) = [m for m in history if m.message_type == "reasoning_message"]
    assert (stored.reasoning, stored.signature) == ("Greet them.", "sig-s")
