"""The fake providers are as strict as the real APIs: each rule, refused with the provider's own
status and error body, and without consuming the test's scripted reply."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.llm.fake_providers import (
    FakeProvider,
    anthropic_message,
    openai_completion,
    openai_stream,
    serving,
)

ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with serving() as provider:
        provider.script(openai_completion("ok"), anthropic_message("ok"))
        yield provider


async def post(fake: FakeProvider, path: str, body: Any, headers: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        return await http.post(path, json=body, headers=headers or {})


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": list(messages), **fields}


USER = {"role": "user", "content": "hi"}


# -- OpenAI ---------------------------------------------------------------------------------


async def test_openai_refuses_a_model_it_does_not_serve_such_as_a_handle(
    fake: FakeProvider,
) -> None:
    refused = await post(fake, "/v1/chat/completions", chat(USER, model="openai/gpt-4o-mini"))
    assert refused.status_code == 404
    assert refused.json() == {
        "error": {
            "message": "The model `openai/gpt-4o-mini` does not exist or you do not have "
            "access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    }
    assert len(fake.replies) == 2  # the scripted reply is still there
    ok = await post(fake, "/v1/chat/completions", chat(USER, model="gpt-4o-mini"))
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"messages": [USER]}, None, "you must provide a model parameter"),
        (chat(), "messages", "too short"),
        (chat(USER, tool_choice="auto"), "tool_choice", "only allowed when 'tools'"),
        (
            chat(USER, stream_options={"include_usage": True}),
            "stream_options",
            "only allowed when 'stream' is enabled",
        ),
        (
            chat(USER, {"role": "tool", "tool_call_id": "call_1", "content": "x"}),
            "messages.[1].role",
            "must be a response to a preceeding message with 'tool_calls'",
        ),
        (
            chat(USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}, USER),
            "messages.[1].role",
            "did not have response messages: call_1",
        ),
    ],
    ids=[
        "no-model",
        "no-messages",
        "tool-choice-without-tools",
        "stream-options-without-stream",
        "tool-message-without-call",
        "call-without-tool-message",
    ],
)
async def test_openai_refuses_what_its_api_refuses(
    fake: FakeProvider, body: dict[str, Any], param: str | None, words: str
) -> None:
    refused = await post(fake, "/v1/chat/completions", body)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words in error["message"]
    assert len(fake.replies) == 2


async def test_openai_accepts_a_call_answered_by_its_tool_message(fake: FakeProvider) -> None:
    answered = chat(
        USER,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
        tools=[TOOL],
        tool_choice="auto",
    )
    assert (await post(fake, "/v1/chat/completions", answered)).status_code == 200


async def test_openai_lists_its_models(fake: FakeProvider) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        listed = (await http.get("/v1/models")).json()
    assert listed["object"] == "list"
    assert {"gpt-4o-mini", "gpt-test"} <= {m["id"] for m in listed["data"]}
    assert all(m["object"] == "model" for m in listed["data"])


def sse_data(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("include_usage", [True, False])
async def test_an_openai_stream_carries_usage_in_its_last_chunk_only_when_asked(
    include_usage: bool,
) -> None:
    async with serving() as fake:
        fake.script(openai_stream(["a", "b"]))
        body = chat(USER, stream=True)
        if include_usage:
            body["stream_options"] = {"include_usage": True}
        data = sse_data(await post(fake, "/v1/chat/completions", body))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    with_usage = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert with_usage == [chunks[-1]] and chunks[-1]["choices"] == []
        assert all(c["usage"] is None for c in chunks[:-1])  # present, and null
    else:
        assert with_usage == []


# -- Anthropic ------------------------------------------------------------------------------


def messages(*turns: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "claude-test", "max_tokens": 100, "messages": list(turns), **fields}


USE = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"}


async def test_anthropic_refuses_a_model_it_does_not_serve_such_as_a_handle(
    fake: FakeProvider,
) -> None:
    body = messages(USER, model="anthropic/claude-sonnet-4-5-20250929")
    refused = await post(fake, "/v1/messages", body, ANTHROPIC_HEADERS)
    assert refused.status_code == 404
    assert refused.json() == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "model: anthropic/claude-sonnet-4-5-20250929",
        },
    }
    body["model"] = "claude-sonnet-4-5-20250929"
    fake.replies.pop(0)
    assert (await post(fake, "/v1/messages", body, ANTHROPIC_HEADERS)).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status", "kind"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
        ({"x-api-key": "sk-ant-test"}, 400, "invalid_request_error"),
    ],
    ids=["no-key", "no-version"],
)
async def test_anthropic_wants_its_key_and_version_headers(
    fake: FakeProvider, headers: dict[str, str], status: int, kind: str
) -> None:
    refused = await post(fake, "/v1/messages", messages(USER), headers)
    assert refused.status_code == status and refused.json()["error"]["type"] == kind


def assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


TEXT = {"type": "text", "text": "hello"}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "claude-test", "messages": [USER]}, "max_tokens: Field required"),
        (messages(), "at least one message"),
        (messages(assistant(TEXT), USER), 'first message must use the "user" role'),
        (messages(USER, USER), 'multiple "user" roles in a row'),
        (messages(USER, assistant(TEXT), assistant(TEXT), USER), 'multiple "assistant" roles'),
        (messages({"role": "system", "content": "be kind"}, USER), "top-level `system`"),
        (messages(user(), assistant(TEXT), USER), "non-empty content"),
        (messages(user({"type": "text", "text": ""})), "text content blocks must be non-empty"),
        (messages(USER, assistant(USE), USER), "`tool_use` ids were found without"),
        (messages(USER, assistant(TEXT), user(RESULT)), "unexpected `tool_use_id`"),
        (messages(USER, tool_choice={"type": "auto"}), "tool_choice may only be specified"),
    ],
    ids=[
        "no-max-tokens",
        "no-messages",
        "assistant-first",
        "user-twice",
        "assistant-twice",
        "system-role",
        "empty-content",
        "empty-text",
        "tool-use-unanswered",
        "tool-result-without-use",
        "tool-choice-without-tools",
    ],
)
async def test_anthropic_refuses_what_its_api_refuses(
    fake: FakeProvider, body: dict[str, Any], words: str
) -> None:
    refused = await post(fake, "/v1/messages", body, ANTHROPIC_HEADERS)
    assert refused.status_code == 400
    assert refused.json()["type"] == "error"
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and words in error["message"]
    assert len(fake.replies) == 2


async def test_anthropic_accepts_a_tool_use_answered_in_the_next_user_turn(
    fake: FakeProvider,
) -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    body = messages(USER, assistant(TEXT, USE), user(RESULT, TEXT), tools=tools)
    fake.replies.pop(0)
    assert (await post(fake, "/v1/messages", body, ANTHROPIC_HEADERS)).status_code == 200


async def test_anthropic_lists_its_models_page_by_page(fake: FakeProvider) -> None:
    async with httpx.AsyncClient(base_url=fake.url, headers=ANTHROPIC_HEADERS) as http:
        first = (await http.get("/v1/models", params={"limit": 2})).json()
        rest = (await http.get("/v1/models", params={"after_id": first["last_id"]})).json()
        no_key = await http.get("/v1/models", headers={"x-api-key": ""})
    assert first["has_more"] is True and len(first["data"]) == 2
    assert rest["has_more"] is False
    ids = [m["id"] for m in first["data"] + rest["data"]]
    assert "claude-sonnet-4-5-20250929" in ids and len(set(ids)) == len(ids)
    assert all(m["type"] == "model" for m in first["data"])
    assert no_key.status_code == 401


async def test_an_embedding_model_it_does_not_serve_is_refused(fake: FakeProvider) -> None:
    refused = await post(fake, "/v1/embeddings", {"model": "openai/text-embedding-3-small",
                                                  "input": ["x"]})  # fmt: skip
    assert refused.status_code == 404 and "does not exist" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "text-embedding-3-small", "input": ""}, "input"),
        ({"model": "text-embedding-3-small", "input": []}, "input"),
        ({"model": "text-embedding-3-small", "input": ["a", ""]}, "input"),
        ({"model": "text-embedding-3-small", "input": [1, 2]}, "input"),
        ({"model": "text-embedding-3-small", "input": ["a"] * 2049}, "input"),
        ({"model": "text-embedding-3-small"}, "input"),
        (
            {"model": "text-embedding-3-small", "input": "a", "encoding_format": "int8"},
            "encoding_format",
        ),
        ({"model": "text-embedding-3-small", "input": "a", "dimensions": 0}, "dimensions"),
    ],
)
async def test_embeddings_input_openai_refuses_is_refused(
    fake: FakeProvider, body: dict[str, Any], param: str
) -> None:
    fake.embed = lambda model, text: [1.0, 0.0]
    refused = await post(fake, "/v1/embeddings", body)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == param


async def test_embeddings_are_answered_in_openais_shape_when_asked_to(fake: FakeProvider) -> None:
    fake.embed = lambda model, text: [float(len(text)), 1.0]
    answer = await post(fake, "/v1/embeddings", {"model": "text-embedding-3-small",
                                                 "input": ["ab", "abc"]})  # fmt: skip
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "list" and body["model"] == "text-embedding-3-small"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert [d["embedding"] for d in body["data"]] == [[2.0, 1.0], [3.0, 1.0]]
