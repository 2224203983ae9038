"""AnthropicClient against a fake Messages API on 127.0.0.1; and client_for's Anthropic side."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import trio

from kelpie_trio.llm.anthropic import AnthropicClient
from kelpie_trio.llm.catalog import CatalogConfig, ModelCatalog
from kelpie_trio.llm.providers import ProviderUnavailable, client_for
from kelpie_trio.llm.types import (
    ChatMessage,
    Completed,
    ContentDelta,
    LlmFailure,
    LlmRateLimited,
    LlmRequest,
    LlmStreamEvent,
    LlmTimeout,
    ToolCall,
    ToolCallDelta,
    ToolSchema,
)
from tests.llm.fake_providers import (
    FakeProvider,
    Reply,
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    serving,
)

SEND_MESSAGE = ToolSchema(
    "send_message",
    "Say something to the user",
    {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
)


def request(*messages: ChatMessage, **kw) -> LlmRequest:
    return LlmRequest(
        model="claude-test",
        messages=(ChatMessage("system", "be kind"), *(messages or (ChatMessage("user", "hi"),))),
        **kw,
    )


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    async with serving() as provider:
        yield provider


@pytest.fixture
async def llm(provider: FakeProvider) -> AsyncIterator[AnthropicClient]:
    async with AnthropicClient("sk-ant-test", base_url=provider.url + "/v1", timeout=10) as client:
        yield client


async def collect(events: AsyncIterator[LlmStreamEvent]) -> list[LlmStreamEvent]:
    return [event async for event in events]


# -- requests on the wire -------------------------------------------------------------------


async def test_request_puts_the_system_prompt_apart_and_tools_in_content_blocks(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    provider.script(anthropic_message("ok"))
    calls = (
        ToolCall("toolu_1", "send_message", '{"message": "hello"}'),
        ToolCall("toolu_2", "core_memory_append", '{"label": "human", "content": "x"}'),
    )
    await llm.complete(
        request(
            ChatMessage("user", "say hello"),
            ChatMessage("assistant", "thinking", tool_calls=calls),
            ChatMessage("tool", '{"status": "OK"}', tool_call_id="toolu_1"),
            ChatMessage("tool", '{"status": "OK"}', tool_call_id="toolu_2"),
            ChatMessage("user", "thanks"),
            tools=(SEND_MESSAGE,),
            temperature=0.5,
        )
    )
    (sent,) = provider.received
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.json == {
        "model": "claude-test",
        "max_tokens": 4096,  # required by Anthropic; the request named none
        "system": "be kind",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "say hello"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "thinking"},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "send_message",
                        "input": {"message": "hello"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_2",
                        "name": "core_memory_append",
                        "input": {"label": "human", "content": "x"},
                    },
                ],
            },
            {  # both results, then the user's words: one user turn
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": '{"status": "OK"}',
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": '{"status": "OK"}',
                    },
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
        "tools": [
            {
                "name": "send_message",
                "description": "Say something to the user",
                "input_schema": dict(SEND_MESSAGE.parameters),
            }
        ],
        "tool_choice": {"type": "auto"},
        "temperature": 0.5,
    }


@pytest.mark.parametrize(
    ("choice", "wire"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
async def test_tool_choice_maps_to_anthropics_names(
    provider: FakeProvider, llm: AnthropicClient, choice: str, wire: dict[str, str]
) -> None:
    provider.script(anthropic_message("ok"))
    await llm.complete(request(tools=(SEND_MESSAGE,), tool_choice=choice))
    assert provider.received[0].json["tool_choice"] == wire


async def test_the_requests_max_tokens_wins_over_the_default(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    provider.script(anthropic_message("ok"))
    await llm.complete(request(max_tokens=300))
    assert provider.received[0].json["max_tokens"] == 300


async def test_malformed_tool_arguments_are_replayed_as_an_empty_input(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    provider.script(anthropic_message("ok"))
    call = ToolCall("toolu_1", "send_message", '{"message": ')
    await llm.complete(
        request(
            ChatMessage("user", "hi"),
            ChatMessage("assistant", None, tool_calls=(call,)),
            ChatMessage("tool", "error: arguments were not JSON", tool_call_id="toolu_1"),
        )
    )
    assistant = provider.received[0].json["messages"][1]
    assert assistant["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "send_message", "input": {}}
    ]


async def test_a_history_opening_with_the_assistant_still_opens_with_a_user_turn(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    """Anthropic wants the user first; an imported history may open with the assistant."""
    provider.script(anthropic_message("ok"))
    reply = await llm.complete(
        request(ChatMessage("assistant", "Hello, I am Sam."), ChatMessage("user", "hi Sam"))
    )
    assert reply.message.content == "ok" and provider.refused == []
    turns = provider.received[0].json["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [{"type": "text", "text": "Hello, I am Sam."}]


def test_the_key_stays_out_of_the_repr() -> None:
    assert "sk-ant-secret" not in repr(AnthropicClient("sk-ant-secret"))


# -- replies --------------------------------------------------------------------------------


async def test_complete_returns_text_usage_and_model(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    provider.script(anthropic_message("Hello there", usage=(30, 4), model="claude-test-1"))
    response = await llm.complete(request())
    assert response.message == ChatMessage("assistant", "Hello there")
    assert response.finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (30, 4)
    assert response.model == "claude-test-1"


async def test_complete_returns_tool_uses_as_tool_calls(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    provider.script(
        anthropic_message(
            "I'll say it.", tool_uses=[("toolu_9", "send_message", {"message": "hi"})]
        )
    )
    response = await llm.complete(request(tools=(SEND_MESSAGE,)))
    assert response.finish_reason == "tool_calls"
    assert response.message.content == "I'll say it."
    (call,) = response.message.tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == (
        "toolu_9",
        "send_message",
        {"message": "hi"},
    )


async def test_max_tokens_stop_is_length(provider: FakeProvider, llm: AnthropicClient) -> None:
    provider.script(anthropic_message("Once upon a", stop_reason="max_tokens"))
    assert (await llm.complete(request())).finish_reason == "length"


# -- streaming ------------------------------------------------------------------------------


async def test_stream_yields_text_deltas_then_the_whole_reply(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    provider.script(anthropic_stream(["Hel", "lo"], usage=(25, 6)))
    events = await collect(llm.stream(request()))
    assert events[:-1] == [ContentDelta("Hel"), ContentDelta("lo")]
    assert isinstance(events[-1], Completed)
    response = events[-1].response
    assert response.message == ChatMessage("assistant", "Hello")
    assert response.finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (25, 6)
    assert provider.received[0].json["stream"] is True


async def test_stream_yields_tool_use_deltas_and_assembles_the_calls(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    provider.script(
        anthropic_stream(
            ["Saying it."],
            tool_uses=[
                ("toolu_1", "send_message", ['{"mess', 'age": "hi"}']),
                ("toolu_2", "archival_memory_insert", ['{"content": "x"}']),
            ],
        )
    )
    events = await collect(llm.stream(request(tools=(SEND_MESSAGE,))))
    # Tool deltas are numbered among the tool calls, not among all content blocks.
    assert events[:-1] == [
        ContentDelta("Saying it."),
        ToolCallDelta(0, "toolu_1", "send_message", ""),
        ToolCallDelta(0, None, None, '{"mess'),
        ToolCallDelta(0, None, None, 'age": "hi"}'),
        ToolCallDelta(1, "toolu_2", "archival_memory_insert", ""),
        ToolCallDelta(1, None, None, '{"content": "x"}'),
    ]
    response = events[-1].response
    assert response.finish_reason == "tool_calls"
    assert response.message.tool_calls == (
        ToolCall("toolu_1", "send_message", '{"message": "hi"}'),
        ToolCall("toolu_2", "archival_memory_insert", '{"content": "x"}'),
    )


async def test_a_streamed_tool_use_without_input_has_empty_arguments(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    provider.script(anthropic_stream(tool_uses=[("toolu_1", "list_tools", [])]))
    events = await collect(llm.stream(request()))
    assert events[-1].response.message.tool_calls == (ToolCall("toolu_1", "list_tools", "{}"),)


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [
        ("overloaded_error", LlmFailure, 529),
        ("api_error", LlmFailure, 500),
        ("invalid_request_error", LlmFailure, 400),
        ("rate_limit_error", LlmRateLimited, None),
    ],
)
async def test_an_error_event_mid_stream_is_judged_like_its_status(
    provider: FakeProvider,
    llm: AnthropicClient,
    kind: str,
    error: type[Exception],
    status: int | None,
) -> None:
    provider.script(anthropic_stream(["partial"], error=(kind, "Overloaded")))
    seen: list[LlmStreamEvent] = []
    with pytest.raises(error, match="Overloaded") as raised:
        async for event in llm.stream(request()):
            seen.append(event)
    assert seen == [ContentDelta("partial")]
    assert getattr(raised.value, "status", None) == status


async def test_a_stream_ending_before_message_stop_is_a_failure(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    reply = anthropic_stream(["a", "b"])
    provider.script(Reply(events=reply.events[:-2]))  # no message_delta, no message_stop
    with pytest.raises(LlmFailure, match="message_stop") as failure:
        await collect(llm.stream(request()))
    assert failure.value.status is None


async def test_a_stream_cut_midway_is_a_failure_without_status(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    reply = anthropic_stream(["a", "b"])
    provider.script(Reply(events=reply.events, cut_after=4))
    with pytest.raises(LlmFailure) as failure:
        await collect(llm.stream(request()))
    assert failure.value.status is None


# -- errors ---------------------------------------------------------------------------------


async def test_429_is_rate_limited_with_retry_after(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    limit = anthropic_error(429, "Number of requests", kind="rate_limit_error", retry_after="12")
    provider.script(limit)
    with pytest.raises(LlmRateLimited, match="Number of requests") as limited:
        await llm.complete(request())
    assert limited.value.retry_after == 12.0


@pytest.mark.parametrize("status", [500, 529])
async def test_5xx_and_overloaded_are_failures_with_their_status(
    provider: FakeProvider, llm: AnthropicClient, status: int
) -> None:
    provider.script(anthropic_error(status, "Overloaded", kind="overloaded_error"))
    with pytest.raises(LlmFailure, match="Overloaded") as failure:
        await collect(llm.stream(request()))
    assert failure.value.status == status


async def test_401_is_a_failure_with_the_providers_message(
    provider: FakeProvider, llm: AnthropicClient
) -> None:
    provider.script(anthropic_error(401, "invalid x-api-key", kind="authentication_error"))
    with pytest.raises(LlmFailure, match="invalid x-api-key") as failure:
        await llm.complete(request())
    assert failure.value.status == 401


async def test_a_slow_reply_times_out(
    autojump_clock: trio.testing.MockClock, provider: FakeProvider, llm: AnthropicClient
) -> None:
    provider.script(anthropic_message("too late").slow(3600))
    with pytest.raises(LlmTimeout):
        await llm.complete(request())


# -- client_for -----------------------------------------------------------------------------

ANTHROPIC = CatalogConfig(anthropic_api_key="sk-ant-test")
CLAUDE = "anthropic/claude-sonnet-4-5-20250929"


async def test_client_for_an_anthropic_handle_is_an_anthropic_client() -> None:
    llm = client_for(ModelCatalog.from_config(ANTHROPIC).llm_config_for(CLAUDE), ANTHROPIC)
    assert isinstance(llm, AnthropicClient)
    assert llm.base_url == "https://api.anthropic.com/v1"
    await llm.aclose()


def test_client_for_refuses_anthropic_without_a_key() -> None:
    config = ModelCatalog.from_config(ANTHROPIC).llm_config_for(CLAUDE)
    with pytest.raises(ProviderUnavailable, match="ANTHROPIC_API_KEY"):
        client_for(config, CatalogConfig(openai_api_key="sk-test"))


def test_client_for_never_sends_the_anthropic_key_to_another_endpoint() -> None:
    config = ModelCatalog.from_config(ANTHROPIC).llm_config_for(CLAUDE)
    config["model_endpoint"] = "https://collector.example/v1"
    with pytest.raises(ProviderUnavailable, match="not the one configured"):
        client_for(config, ANTHROPIC)
