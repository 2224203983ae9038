"""OpenAiCompatibleClient against a fake OpenAI-format server on 127.0.0.1; and client_for."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import pytest
import trio

from kelpie_trio.llm.catalog import SIM_CHAT_HANDLE, CatalogConfig, LocalServer, ModelCatalog
from kelpie_trio.llm.openai_compat import OpenAiCompatibleClient
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
    openai_completion,
    openai_error,
    openai_stream,
    serving,
)

SEND_MESSAGE = ToolSchema(
    "send_message",
    "Say something to the user",
    {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
)


def request(*messages: ChatMessage, **kw) -> LlmRequest:
    return LlmRequest(
        model="gpt-test",
        messages=(ChatMessage("system", "be kind"), *(messages or (ChatMessage("user", "hi"),))),
        **kw,
    )


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    async with serving() as provider:
        yield provider


@pytest.fixture
async def llm(provider: FakeProvider) -> AsyncIterator[OpenAiCompatibleClient]:
    async with OpenAiCompatibleClient(provider.url + "/v1", "sk-test", timeout=10) as client:
        yield client


async def collect(events: AsyncIterator[LlmStreamEvent]) -> list[LlmStreamEvent]:
    return [event async for event in events]


# -- requests on the wire -------------------------------------------------------------------


async def test_request_carries_messages_tools_and_settings(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(openai_completion("ok"))
    call = ToolCall("call_1", "send_message", '{"message": "hello"}')
    await llm.complete(
        request(
            ChatMessage("user", "say hello"),
            ChatMessage("assistant", "thinking", tool_calls=(call,)),
            ChatMessage("tool", '{"status": "OK"}', tool_call_id="call_1"),
            tools=(SEND_MESSAGE,),
            tool_choice="required",
            max_tokens=256,
            temperature=0.2,
        )
    )
    (sent,) = provider.received
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.json == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be kind"},
            {"role": "user", "content": "say hello"},
            {
                "role": "assistant",
                "content": "thinking",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "send_message", "arguments": '{"message": "hello"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "OK"}'},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "send_message",
                    "description": "Say something to the user",
                    "parameters": dict(SEND_MESSAGE.parameters),
                },
            }
        ],
        "tool_choice": "required",
        "max_tokens": 256,
        "temperature": 0.2,
    }


async def test_no_tools_means_no_tool_choice_and_no_optional_settings(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(openai_completion("ok"))
    await llm.complete(request())
    assert set(provider.received[0].json) == {"model", "messages"}


async def test_max_tokens_field_is_configurable_for_openai_reasoning_models(
    provider: FakeProvider,
) -> None:
    provider.script(openai_completion("ok"))
    url = provider.url + "/v1"
    async with OpenAiCompatibleClient(url, max_tokens_field="max_completion_tokens") as llm:
        await llm.complete(request(max_tokens=100))
    assert provider.received[0].json["max_completion_tokens"] == 100
    assert "max_tokens" not in provider.received[0].json


async def test_without_a_key_no_authorization_is_sent(provider: FakeProvider) -> None:
    provider.script(openai_completion("ok"))
    async with OpenAiCompatibleClient(provider.url + "/v1/") as llm:
        await llm.complete(request())
    assert provider.received[0].path == "/v1/chat/completions"
    assert "authorization" not in provider.received[0].headers


def test_the_key_stays_out_of_the_repr() -> None:
    assert "sk-secret" not in repr(OpenAiCompatibleClient("http://127.0.0.1:1/v1", "sk-secret"))


# -- replies --------------------------------------------------------------------------------


async def test_complete_returns_text_usage_and_model(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(openai_completion("Hello there", usage=(21, 3), model="gpt-test-0613"))
    response = await llm.complete(request())
    assert response.message == ChatMessage("assistant", "Hello there")
    assert response.finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (21, 3)
    assert response.model == "gpt-test-0613"


async def test_complete_returns_tool_calls(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(
        openai_completion(
            tool_calls=[
                ("call_a", "send_message", {"message": "hi"}),
                ("call_b", "core_memory_append", {"label": "human", "content": "x"}),
            ]
        )
    )
    response = await llm.complete(request(tools=(SEND_MESSAGE,)))
    assert response.finish_reason == "tool_calls"
    assert response.message.content is None
    assert [(c.id, c.name) for c in response.message.tool_calls] == [
        ("call_a", "send_message"),
        ("call_b", "core_memory_append"),
    ]
    assert json.loads(response.message.tool_calls[0].arguments) == {"message": "hi"}


async def test_complete_reports_a_reply_cut_by_max_tokens_as_length(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(openai_completion("Once upon a", finish_reason="length"))
    assert (await llm.complete(request())).finish_reason == "length"


async def test_tool_calls_count_even_when_a_local_server_says_stop(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(openai_completion(tool_calls=[("c", "f", {})], finish_reason="stop"))
    assert (await llm.complete(request())).finish_reason == "tool_calls"


# -- streaming ------------------------------------------------------------------------------


async def test_stream_yields_text_deltas_then_the_whole_reply(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(openai_stream(["Hel", "lo", " there"], usage=(9, 4)))
    events = await collect(llm.stream(request()))
    assert events[:-1] == [ContentDelta("Hel"), ContentDelta("lo"), ContentDelta(" there")]
    assert isinstance(events[-1], Completed)
    response = events[-1].response
    assert response.message == ChatMessage("assistant", "Hello there")
    assert response.finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (9, 4)
    sent = provider.received[0].json
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_stream_yields_tool_call_deltas_and_assembles_the_calls(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(
        openai_stream(
            ["Let me say it."],
            tool_calls=[
                ("call_1", "send_message", ['{"mess', 'age": "hi"}']),
                ("call_2", "archival_memory_insert", ['{"content": "x"}']),
            ],
        )
    )
    events = await collect(llm.stream(request(tools=(SEND_MESSAGE,))))
    assert events[:-1] == [
        ContentDelta("Let me say it."),
        ToolCallDelta(0, "call_1", "send_message", ""),
        ToolCallDelta(0, None, None, '{"mess'),
        ToolCallDelta(0, None, None, 'age": "hi"}'),
        ToolCallDelta(1, "call_2", "archival_memory_insert", ""),
        ToolCallDelta(1, None, None, '{"content": "x"}'),
    ]
    response = events[-1].response
    assert response.finish_reason == "tool_calls"
    assert response.message.content == "Let me say it."
    assert response.message.tool_calls == (
        ToolCall("call_1", "send_message", '{"message": "hi"}'),
        ToolCall("call_2", "archival_memory_insert", '{"content": "x"}'),
    )


async def test_stream_without_done_but_with_a_finish_reason_completes(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(openai_stream(["ok"], usage=None, done=False))
    events = await collect(llm.stream(request()))
    assert events[-1].response.message.content == "ok"


async def test_stream_cut_midway_is_a_failure_without_status(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    reply = openai_stream(["a", "b", "c"])
    provider.script(Reply(events=reply.events, cut_after=2))
    seen: list[LlmStreamEvent] = []
    with pytest.raises(LlmFailure) as failure:
        async for event in llm.stream(request()):
            seen.append(event)
    assert failure.value.status is None
    assert seen == [ContentDelta("a")]


async def test_an_error_chunk_mid_stream_is_a_failure(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    error = json.dumps({"error": {"message": "model crashed", "type": "server_error"}})
    provider.script(Reply(events=((None, error),)))
    with pytest.raises(LlmFailure, match="model crashed"):
        await collect(llm.stream(request()))


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((("retry-after", "7"),), 7.0),
        ((("retry-after", "1.5"),), 1.5),
        ((("retry-after-ms", "250"), ("retry-after", "1")), 0.25),
        ((), None),
    ],
)
async def test_429_is_rate_limited_with_retry_after(
    provider: FakeProvider,
    llm: OpenAiCompatibleClient,
    headers: tuple[tuple[str, str], ...],
    expected: float | None,
) -> None:
    provider.script(Reply(status=429, json={"error": {"message": "slow down"}}, headers=headers))
    with pytest.raises(LlmRateLimited, match="slow down") as limited:
        await llm.complete(request())
    assert limited.value.retry_after == expected


async def test_429_retry_after_as_an_http_date_counts_from_the_servers_date(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    # Hypercorn sends its own Date header; a fixed one of ours would be a second Date.
    provider.script(openai_error(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))
    with pytest.raises(LlmRateLimited) as limited:
        await llm.complete(request())
    assert limited.value.retry_after == 0.0  # a date already past: retry at once


async def test_a_streamed_request_refused_with_429_is_rate_limited(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(openai_error(429, retry_after="3"))
    with pytest.raises(LlmRateLimited) as limited:
        await collect(llm.stream(request()))
    assert limited.value.retry_after == 3.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_a_failure_with_its_status(
    provider: FakeProvider, llm: OpenAiCompatibleClient, status: int
) -> None:
    provider.script(openai_error(status, "upstream exploded"), openai_error(status))
    with pytest.raises(LlmFailure, match="upstream exploded") as failure:
        await llm.complete(request())
    assert failure.value.status == status
    with pytest.raises(LlmFailure) as failure:
        await collect(llm.stream(request()))
    assert failure.value.status == status


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_other_4xx_is_a_failure_with_the_providers_message(
    provider: FakeProvider, llm: OpenAiCompatibleClient, status: int
) -> None:
    provider.script(openai_error(status, "Invalid 'messages[1].content'"))
    with pytest.raises(LlmFailure, match=r"Invalid 'messages\[1\].content'") as failure:
        await llm.complete(request())
    assert failure.value.status == status
    assert not isinstance(failure.value, LlmRateLimited)


async def test_an_ollama_style_error_body_gives_its_message(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(Reply(status=404, json={"error": 'model "llama9" not found'}))
    with pytest.raises(LlmFailure, match='model "llama9" not found'):
        await llm.complete(request())


async def test_a_slow_reply_times_out(
    autojump_clock: trio.testing.MockClock, provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(openai_completion("too late").slow(3600))
    start = trio.current_time()
    with pytest.raises(LlmTimeout):
        await llm.complete(request())
    assert trio.current_time() - start == pytest.approx(10, abs=0.5)  # the client's timeout


async def test_a_stream_that_stalls_times_out(
    autojump_clock: trio.testing.MockClock, provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    reply = openai_stream(["a", "b"])
    provider.script(Reply(events=reply.events, stall_after=2))
    seen: list[LlmStreamEvent] = []
    with pytest.raises(LlmTimeout):
        async for event in llm.stream(request()):
            seen.append(event)
    assert seen == [ContentDelta("a")]


async def test_a_refused_connection_is_a_failure_without_status() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with OpenAiCompatibleClient(f"http://127.0.0.1:{port}/v1") as llm:
        with pytest.raises(LlmFailure) as failure:
            await llm.complete(request())
    assert failure.value.status is None


async def test_a_200_without_a_completion_is_a_failure_without_status(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    provider.script(Reply(json={"object": "list", "data": []}))
    with pytest.raises(LlmFailure, match="usable choice") as failure:
        await llm.complete(request())
    assert failure.value.status is None


# -- client_for -----------------------------------------------------------------------------

OPENAI_ONLY = CatalogConfig(openai_api_key="sk-test")
LOCAL = LocalServer("http://127.0.0.1:8000", kind="vllm", models=("qwen",), api_key="local-key")


async def test_client_for_an_openai_handle_talks_to_openai_with_its_key() -> None:
    config = ModelCatalog.from_config(OPENAI_ONLY).llm_config_for("openai/gpt-4o-mini")
    llm = client_for(config, OPENAI_ONLY)
    assert isinstance(llm, OpenAiCompatibleClient)
    assert llm.base_url == "https://api.openai.com/v1"
    assert llm.max_tokens_field == "max_completion_tokens"
    await llm.aclose()


async def test_client_for_an_openai_handle_follows_openai_base_url(
    provider: FakeProvider,
) -> None:
    catalog_config = CatalogConfig(openai_api_key="sk-test", openai_base_url=provider.url + "/v1")
    llm_config = ModelCatalog.from_config(OPENAI_ONLY).llm_config_for("openai/gpt-4o-mini")
    provider.script(openai_completion("through the proxy"))
    async with client_for(llm_config, catalog_config) as llm:
        response = await llm.complete(request(max_tokens=50))
    assert response.message.content == "through the proxy"
    assert provider.received[0].headers["authorization"] == "Bearer sk-test"
    assert provider.received[0].json["max_tokens"] == 50  # proxies and mocks know max_tokens


async def test_client_for_a_local_handle_uses_the_local_server_and_its_key() -> None:
    config = CatalogConfig(openai_api_key="sk-openai", local=LOCAL)
    llm = client_for(ModelCatalog.from_config(config).llm_config_for("vllm/qwen"), config)
    assert isinstance(llm, OpenAiCompatibleClient)
    assert llm.base_url == "http://127.0.0.1:8000/v1"
    assert llm.max_tokens_field == "max_tokens"
    await llm.aclose()


def test_client_for_refuses_a_sim_handle() -> None:
    config = ModelCatalog.from_config(CatalogConfig()).llm_config_for(SIM_CHAT_HANDLE)
    with pytest.raises(ProviderUnavailable, match="simulated model"):
        client_for(config, CatalogConfig())


def test_client_for_never_sends_the_openai_key_to_another_endpoint() -> None:
    config = ModelCatalog.from_config(OPENAI_ONLY).llm_config_for("openai/gpt-4o-mini")
    config["model_endpoint"] = "https://collector.example/v1"  # say, from an imported agent file
    with pytest.raises(ProviderUnavailable, match="not one this server is configured for"):
        client_for(config, OPENAI_ONLY)


def test_client_for_refuses_openai_when_no_openai_provider_is_configured() -> None:
    config = ModelCatalog.from_config(OPENAI_ONLY).llm_config_for("openai/gpt-4o-mini")
    with pytest.raises(ProviderUnavailable, match=r"configured: none"):
        client_for(config, CatalogConfig())


def test_client_for_refuses_an_unknown_endpoint_type() -> None:
    config = {"model_endpoint_type": "google_ai", "model_endpoint": "https://x", "model": "g"}
    with pytest.raises(ProviderUnavailable, match="'google_ai' is not supported"):
        client_for(config, OPENAI_ONLY)


# -- a window's history, encoded once --------------------------------------------------------


async def test_a_history_sent_again_is_sent_as_built_afresh_and_encoded_once(
    provider: FakeProvider, llm: OpenAiCompatibleClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window's log step after step: each request's body is what building it from the
    message objects gives, and only the messages added since the last step are encoded."""
    import kelpie_trio.llm.openai_compat as openai_compat
    from kelpie_trio.llm.chat_log import ChatLog, Prompt

    built: list[ChatMessage] = []
    build = openai_compat._openai_message

    def counted(message: ChatMessage) -> dict:
        built.append(message)
        return build(message)

    monkeypatch.setattr(openai_compat, "_openai_message", counted)
    call = ToolCall("call_1", "send_message", '{"message": "hello \u00e9"}')
    log = ChatLog([
        ChatMessage("user", "say hello"),
        ChatMessage("assistant", None, tool_calls=(call,)),
        ChatMessage("tool", '{"status": "OK"}', tool_call_id="call_1"),
    ])  # fmt: skip
    tools = (ToolSchema("send_message", "Say it.", {"type": "object", "properties": {}}),)
    steps = []
    for text, start in (("one", 0), ("two", 0), ("three", 3), ("four", 4)):
        system = ChatMessage("system", f"prompt {text}")  # made anew each step
        prompt = Prompt((system,), log.run(start))
        steps.append(LlmRequest(model="gpt-test", messages=prompt, tools=tools, max_tokens=7))
        provider.script(openai_completion(text))
        first = len(built)
        await llm.complete(steps[-1])
        new = [m for m in steps[-1].messages if m is system or m is log.items[-1]]
        if text != "one":  # the first step encodes the log; the next ones their new message
            assert built[first:] == new
        log.items.append(ChatMessage("user", f"after {text}"))
    for sent, step in zip(provider.received, steps, strict=True):
        assert sent.json == openai_compat._request_body(
            step, stream=False, max_tokens_field="max_tokens"
        )
    assert [m["content"] for m in provider.received[-1].json["messages"]] == [
        "prompt four", "after two", "after three"
    ]  # fmt: skip


async def test_a_run_that_ends_before_what_was_encoded_sends_only_its_own_messages(
    provider: FakeProvider, llm: OpenAiCompatibleClient
) -> None:
    """A snapshot taken before the log grew, sent after a longer run was encoded; and an
    empty run."""
    from kelpie_trio.llm.chat_log import ChatLog, Prompt

    log = ChatLog([ChatMessage("user", "a"), ChatMessage("assistant", "b")])
    early = log.run()
    log.items.append(ChatMessage("user", "c"))
    provider.script(openai_completion("1"), openai_completion("2"), openai_completion("3"))
    system = ChatMessage("system", "s")
    for run in (log.run(), early, log.run(3)):
        await llm.complete(LlmRequest(model="gpt-test", messages=Prompt((system,), run)))
    assert [[m["content"] for m in r.json["messages"]] for r in provider.received] == [
        ["s", "a", "b", "c"], ["s", "a", "b"], ["s"]
    ]  # fmt: skip
