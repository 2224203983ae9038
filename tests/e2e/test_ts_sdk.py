"""Letta's TypeScript SDK (@letta-ai/letta-client from npm, pinned in tests/e2e/js) drives a
real kelpie-trio server whose model is the scripted fake provider: the core flow a
TypeScript application runs (js/core_flow.mjs), each step's result asserted here."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.e2e.harness import MODEL, Server, run_node
from tests.e2e.scripted_provider import Say, ScriptedProvider


async def test_the_typescript_sdk_runs_the_core_flow(
    js_clients: Path, provider: ScriptedProvider, tmp_path: Path
) -> None:
    provider.say("Hello, Ada!", "Streaming works fine")
    server = Server(tmp_path, provider.url)
    with trio.fail_after(60):
        await server.start()
        try:
            out = await run_node(
                "core_flow.mjs", {"LETTA_BASE_URL": server.url, "E2E_MODEL": MODEL}
            )
        finally:
            await server.stop()
    assert "failed_at" not in out, out
    assert out["agent"]["name"] == "ts-sdk-e2e"
    assert ["human", "Ada"] in out["agent"]["blocks"]
    assert out["sent"] == {
        "types": ["user_message", "assistant_message"],
        "reply": ["Hello, Ada!"],
        "stop": "end_turn",
    }
    streamed = out["streamed"]
    assert streamed["pieces"] == ["Streaming ", "works ", "fine"]  # token by token
    assert streamed["ids"] == 1  # the pieces of one message
    assert streamed["stop"] == "end_turn"
    assert streamed["types"][-2:] == ["stop_reason", "usage_statistics"]
    assert out["listed"] == [
        ["user_message", "Hello there"],
        ["assistant_message", "Hello, Ada!"],
        ["user_message", "Now stream it"],
        ["assistant_message", "Streaming works fine"],
    ]
    assert out["block"] == {"updated": "Ada Lovelace", "retrieved": "Ada Lovelace"}
    assert out["after_delete"] == 404
    asked = [r.json for r in provider.received if r.path.endswith("/chat/completions")]
    assert [bool(r.get("stream")) for r in asked] == [
        False,
        True,
    ]  # the stream asked the model to stream
    assert asked[1]["messages"][-1]["content"].endswith("Now stream it")


async def test_a_client_side_tool_streamed_token_by_token_reaches_the_client_whole(
    js_clients: Path, provider: ScriptedProvider, tmp_path: Path
) -> None:
    """What Letta's CLI does with its tools: the call's deltas are put together by id."""
    provider.say(
        Say(tool_calls=[("call_w1", "get_weather", {"city": "Oslo"})]), "It is sunny in Oslo."
    )
    server = Server(tmp_path, provider.url)
    with trio.fail_after(60):
        await server.start()
        try:
            out = await run_node(
                "client_tool_stream.mjs", {"LETTA_BASE_URL": server.url, "E2E_MODEL": MODEL}
            )
        finally:
            await server.stop()
    assert "failed_at" not in out, out
    assert out["asked"] == {
        "calls": {"call_w1": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        "stop": "requires_approval",
    }, out
    assert out["answered"] == {
        "returned": ["Sunny in Oslo"],
        "reply": "It is sunny in Oslo.",
        "stop": "end_turn",
    }
    tool_turn = [m for m in provider.received[-1].json["messages"] if m["role"] == "tool"]
    assert tool_turn[-1]["content"] == "Sunny in Oslo"
